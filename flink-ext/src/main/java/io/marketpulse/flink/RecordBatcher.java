package io.marketpulse.flink;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

import java.io.ByteArrayOutputStream;
import java.util.Arrays;

/**
 * Kafka records of one partition -> batches of them, so that the DataStream job's Python operators cross the
 * Java/Python boundary once per batch instead of once per trade.
 *
 * <p>Why: PyFlink's per-element work (Beam framing, PyFlink Row objects, the keyed state backend's key switch,
 * the output wrapping) costs 60-90 us per element, against ~8 us for parsing and scoring a trade in Python
 * (bench/README.md, "The DataStream job's batches"). With one element per trade the job drained ~10k trades/s
 * on two cores, its keyed Python worker the bottleneck.
 *
 * <p>In: Row(value BYTES or null, partition INT, offset BIGINT), as the job's Kafka table source gives them.
 * Out: Row(values BYTES, partition INT, offsets BIGINT[]): every value as a 4-byte big-endian length (-1 for a
 * tombstone) followed by its bytes, in arrival order, and the offsets in the same order. A batch holds the
 * records of one partition only.
 *
 * <p>A batch goes out when it holds {@code maxRecords}, before a record would take its values past
 * {@code maxBytes} (a batch of hostile megabyte records stays one record; memory stays bounded), {@code
 * maxDelayMs} after its first record
 * (processing time: the latency it may add), before any watermark is forwarded (none comes from the table
 * source, but the order of records and watermarks is kept anyway), before a checkpoint barrier
 * (prepareSnapshotPreBarrier: the source's offsets in a checkpoint never cover a record still held here, so
 * the operator has no state), and in finish() at the end of the input. Nothing is reordered. It runs chained to the
 * source (marketpulse/flink/compat.py, batch_records): no network hop of its own.
 */
public class RecordBatcher extends AbstractStreamOperator<Row> implements OneInputStreamOperator<Row, Row> {

    private static final long serialVersionUID = 1L;

    /** The output's type: Row(values, partition, offsets). */
    public static TypeInformation<Row> outputType() {
        return Types.ROW(Types.PRIMITIVE_ARRAY(Types.BYTE), Types.INT, Types.PRIMITIVE_ARRAY(Types.LONG));
    }

    private final int maxRecords;
    private final int maxBytes;
    private final long maxDelayMs;

    private transient ByteArrayOutputStream values;
    private transient long[] offsets;
    private transient int count;
    private transient int partition;
    private transient boolean timerPending;

    public RecordBatcher(int maxRecords, int maxBytes, long maxDelayMs) {
        if (maxRecords < 1 || maxBytes < 1 || maxDelayMs < 0) {
            throw new IllegalArgumentException("RecordBatcher: maxRecords >= 1, maxBytes >= 1 and maxDelayMs >= 0,"
                    + " got " + maxRecords + ", " + maxBytes + ", " + maxDelayMs);
        }
        this.maxRecords = maxRecords;
        this.maxBytes = maxBytes;
        this.maxDelayMs = maxDelayMs;
    }

    @Override
    public void open() throws Exception {
        super.open();
        values = new ByteArrayOutputStream(64 * Math.min(maxRecords, 4096));
        offsets = new long[Math.min(maxRecords, 4096)];
        count = 0;
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        Row record = element.getValue();
        byte[] value = (byte[]) record.getField(0);
        int recordPartition = (Integer) record.getField(1);
        long offset = (Long) record.getField(2);
        int size = 4 + (value == null ? 0 : value.length);
        if (count > 0 && (recordPartition != partition || values.size() + size > maxBytes)) {
            // One partition per batch (a subtask reads one partition; this keeps it true anyway), and a
            // bounded size.
            flush();
        }
        partition = recordPartition;
        if (value == null) {
            writeLength(-1);
        } else {
            writeLength(value.length);
            values.write(value, 0, value.length);
        }
        if (count == offsets.length) {
            offsets = Arrays.copyOf(offsets, Math.min(maxRecords, offsets.length * 2));
        }
        offsets[count++] = offset;
        if (count >= maxRecords || maxDelayMs == 0) {
            flush();
        } else if (!timerPending) {
            timerPending = true;
            long now = getProcessingTimeService().getCurrentProcessingTime();
            getProcessingTimeService().registerTimer(now + maxDelayMs, time -> {
                timerPending = false;
                flush();
            });
        }
    }

    private void writeLength(int length) {
        values.write(length >>> 24);
        values.write(length >>> 16);
        values.write(length >>> 8);
        values.write(length);
    }

    private void flush() {
        if (count == 0) {
            return;
        }
        Row batch = Row.of(values.toByteArray(), partition, Arrays.copyOf(offsets, count));
        values.reset();
        count = 0;
        output.collect(new StreamRecord<>(batch));
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        flush();
        super.processWatermark(mark);
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        flush();
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    @Override
    public void finish() throws Exception {
        flush();
        super.finish();
    }
}
