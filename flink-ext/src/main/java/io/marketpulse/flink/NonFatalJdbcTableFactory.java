package io.marketpulse.flink;

import org.apache.flink.api.common.ExecutionConfig;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RuntimeContext;
import org.apache.flink.api.common.functions.util.FunctionUtils;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.java.typeutils.InputTypeConfigurable;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.connector.jdbc.core.table.JdbcDynamicTableFactory;
import org.apache.flink.runtime.state.FunctionInitializationContext;
import org.apache.flink.runtime.state.FunctionSnapshotContext;
import org.apache.flink.streaming.api.checkpoint.CheckpointedFunction;
import org.apache.flink.streaming.api.functions.sink.legacy.RichSinkFunction;
import org.apache.flink.streaming.api.functions.sink.legacy.SinkFunction;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.sink.DynamicTableSink;
import org.apache.flink.table.connector.sink.legacy.SinkFunctionProvider;
import org.apache.flink.table.factories.DynamicTableSinkFactory;
import org.apache.flink.util.ExceptionUtils;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.Set;

/**
 * 'connector' = 'marketpulse-jdbc': Flink's JDBC sink (same options, same upserts) that cannot take the
 * TaskManager down: its close() never throws and its open() never fails on an unreachable database.
 *
 * <p>Why: JdbcOutputFormat.close() (flink-connector-jdbc 4.0.0-2.0, line 214-217) flushes the rows it still
 * buffers and rethrows a failure. After a failed write (database down, row rejected) the buffer is never
 * empty, so close() always throws. Flink 2.2 calls close() from the task's failure/cancel cleanup
 * (Task.doRun, Task.java:794 postFailureCleanUpRegistry.close() -> StreamTask.cleanUp -> closeAllOperators),
 * and treats any exception there as "FATAL - exception in exception handler of task": the TaskManager
 * process exits and every job on it stops. One failed JDBC write thus killed the whole TaskManager.
 *
 * <p>Swallowing (and logging) a failure in close() loses nothing: the sink flushes in snapshotState, so every
 * row of a completed checkpoint is in the database, and the rows still buffered at close() come after the
 * last checkpoint and are replayed from it when the job restarts. On a normal end of input finish() flushes
 * first and still fails the job if that write fails.
 *
 * <p>The same cleanup path has a second trap: when a sink fails in open() (the database is still down while
 * the job restarts), Flink closes the operators of the chain that were never opened, and PyFlink's Python
 * operator then fails in close() (BeamPythonFunctionRunner.close -> DefaultJobBundleFactory
 * "Reference count must not be negative"), again a fatal TaskManager error. So the connection is opened when
 * the first row arrives: a database that is down fails the running task, whose operators were
 * all opened, and the job restarts. (The same exception also comes from a race between PyFlink's bundle
 * flush thread and the close of a cancelled task, whatever the sink does: see
 * io.marketpulse.flink.agent.PythonCloseGuardAgent, which keeps it from ending the TaskManager.)
 */
public class NonFatalJdbcTableFactory implements DynamicTableSinkFactory {

    public static final String IDENTIFIER = "marketpulse-jdbc";

    private final JdbcDynamicTableFactory jdbc = new JdbcDynamicTableFactory();

    @Override
    public String factoryIdentifier() {
        return IDENTIFIER;
    }

    @Override
    public Set<ConfigOption<?>> requiredOptions() {
        return jdbc.requiredOptions();
    }

    @Override
    public Set<ConfigOption<?>> optionalOptions() {
        return jdbc.optionalOptions();
    }

    @Override
    public DynamicTableSink createDynamicTableSink(Context context) {
        return new Sink(jdbc.createDynamicTableSink(context));
    }

    /** The JDBC table sink with its SinkFunction wrapped in {@link CloseQuietly}. */
    static final class Sink implements DynamicTableSink {
        private final DynamicTableSink jdbc;

        Sink(DynamicTableSink jdbc) {
            this.jdbc = jdbc;
        }

        @Override
        public ChangelogMode getChangelogMode(ChangelogMode requestedMode) {
            return jdbc.getChangelogMode(requestedMode);
        }

        @Override
        public SinkRuntimeProvider getSinkRuntimeProvider(Context context) {
            SinkRuntimeProvider provider = jdbc.getSinkRuntimeProvider(context);
            if (!(provider instanceof SinkFunctionProvider)) {
                throw new IllegalStateException(
                        IDENTIFIER + " expects the JDBC connector's SinkFunctionProvider, got " + provider);
            }
            SinkFunctionProvider functions = (SinkFunctionProvider) provider;
            return SinkFunctionProvider.of(
                    new CloseQuietly<>(functions.createSinkFunction()),
                    functions.getParallelism().orElse(null));
        }

        @Override
        public DynamicTableSink copy() {
            return new Sink(jdbc.copy());
        }

        @Override
        public String asSummaryString() {
            return jdbc.asSummaryString() + " (close never fails the TaskManager)";
        }
    }

    /**
     * Forwards everything to the JDBC sink function; opens it with the first row, and close()
     * logs a failure instead of throwing it.
     */
    static final class CloseQuietly<T> extends RichSinkFunction<T>
            implements CheckpointedFunction, InputTypeConfigurable {
        private static final long serialVersionUID = 1L;
        private static final Logger LOG = LoggerFactory.getLogger(CloseQuietly.class);

        private final SinkFunction<T> inner;
        private transient OpenContext openContext;
        private transient boolean opened;

        CloseQuietly(SinkFunction<T> inner) {
            this.inner = inner;
        }

        @Override
        public void setRuntimeContext(RuntimeContext context) {
            super.setRuntimeContext(context);
            FunctionUtils.setFunctionRuntimeContext(inner, context);
        }

        @Override
        public void setInputType(TypeInformation<?> type, ExecutionConfig config) {
            if (inner instanceof InputTypeConfigurable) {
                ((InputTypeConfigurable) inner).setInputType(type, config);
            }
        }

        @Override
        public void open(OpenContext context) {
            openContext = context;
        }

        private void ensureOpen() throws Exception {
            if (!opened) {
                FunctionUtils.openFunction(inner, openContext);
                opened = true;
            }
        }

        @Override
        public void invoke(T value, Context context) throws Exception {
            ensureOpen();
            inner.invoke(value, context);
        }

        @Override
        public void initializeState(FunctionInitializationContext context) throws Exception {
            if (inner instanceof CheckpointedFunction) {
                ((CheckpointedFunction) inner).initializeState(context);
            }
        }

        @Override
        public void snapshotState(FunctionSnapshotContext context) throws Exception {
            if (opened && inner instanceof CheckpointedFunction) { // not opened: no row buffered
                ((CheckpointedFunction) inner).snapshotState(context);
            }
        }

        /** End of input: write what is buffered now, so a failure still fails the job. */
        @Override
        public void finish() throws Exception {
            inner.finish();
            snapshotState(new EndOfInput());
        }

        @Override
        public void close() {
            try {
                FunctionUtils.closeFunction(inner);
            } catch (Throwable failure) {
                ExceptionUtils.rethrowIfFatalError(failure);
                LOG.warn("JDBC sink could not write its buffered rows while closing; they come after the last "
                        + "completed checkpoint and are written again when the job restarts from it", failure);
            }
        }
    }

    /** The snapshot context of the flush in finish() (the JDBC sink function does not read it). */
    private static final class EndOfInput implements FunctionSnapshotContext {
        @Override
        public long getCheckpointId() {
            return -1L;
        }

        @Override
        public long getCheckpointTimestamp() {
            return System.currentTimeMillis();
        }
    }
}
