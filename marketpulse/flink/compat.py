"""Every use of PyFlink internals (`_j_data_stream`, `_j_watermark_strategy`, the Py4J gateway) in one place.

The DataStream job (jobs/market_metrics.py) reaches past PyFlink's public Python API where that API would add
a Python operator on the hot path, cannot give a Java operator a uid, or cannot set the parallelism of the
operators the Table API inserts. Each function below says what the public call would do instead and why it
is not used. They were written for, and tested on, apache-flink 2.2.x: `check_pyflink_version()` says so on
stderr when another version is installed, because these attributes are not a stable interface.

    assign_event_time(stream, strategy, p)      assign_timestamps_and_watermarks with a Python assigner adds
                                                a Python operator and cannot name/uid the Java ones
    key_by_first_field(stream, type_info)       key_by(lambda row: row[0]) adds a Python key extractor
    batch_records(stream, ...)                  Java's RecordBatcher (flink-ext/) on a stream of Kafka
                                                records; PyFlink has no way to apply a Java operator
    set_source_parallelism(stream, p, uid, ...) the Table API's conversion operators get the default
                                                parallelism and no stable uid otherwise
    reset_planner_node_ids(t_env)               the planner numbers its nodes with a JVM-wide counter that
                                                goes into the uids it generates

The first two have a public-API twin, chosen at submit time by MARKETPULSE_PYFLINK_PUBLIC_API (a comma list
of event_time, key_by, or "all"), so that `bench/datastream_drain.py --public-api ...` measures what each
shortcut saves in the same run. The third is needed for correctness (one Kafka partition per watermark
generator, a stable source uid for savepoints), not speed, and has no twin. A shortcut stays only where it
saves at least 5 %.

Measured (`bench/datastream_drain.py --compare-public-api --count 300000 --repeat 2`, 2-core machine, medians,
public twin's rate / all shortcuts' rate): event_time 0.582, key_by 0.739, all 0.517: both save far more than
5 %. A third shortcut, side outputs taken from the Java stream without get_side_output()'s Python identity
map, was removed in November 2026: over five alternating 300k-trade drains each, the shortcut's median was
4,558 trades/s and the public API's 4,539 (ratio 0.996), so it saved nothing measurable. The job now uses
DataStream.get_side_output().
"""

from __future__ import annotations

import os
import sys

from pyflink.common import Types, WatermarkStrategy
from pyflink.common.typeinfo import TypeInformation
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import DataStream, KeyedStream
from pyflink.java_gateway import get_gateway

WRITTEN_FOR = "2.2."
SHORTCUTS = ("event_time", "key_by")
PUBLIC_API_ENV = "MARKETPULSE_PYFLINK_PUBLIC_API"


def public_api(shortcut: str) -> bool:
    """True when the job is built with PyFlink's public API instead of this shortcut (benchmarks only)."""
    chosen = {name.strip() for name in os.environ.get(PUBLIC_API_ENV, "").split(",") if name.strip()}
    unknown = chosen - {*SHORTCUTS, "all"}
    if unknown:
        raise ValueError(f"{PUBLIC_API_ENV}: unknown shortcut(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(SHORTCUTS)}, all")
    return shortcut in chosen or "all" in chosen


class _SecondField(TimestampAssigner):
    """The public twin's timestamp assigner: Tuple2(value, event_time) -> event_time."""

    def extract_timestamp(self, value, record_timestamp: int) -> int:
        return value[1]


def check_pyflink_version(stream=sys.stderr) -> bool:
    """True on the PyFlink line this module was written for; otherwise a warning on `stream`."""
    from pyflink.version import __version__

    if __version__.startswith(WRITTEN_FOR):
        return True
    print(f"marketpulse.flink.compat: written for apache-flink {WRITTEN_FOR}x, found {__version__}: the "
          "PyFlink internals it uses (_j_data_stream, Java eventtime helpers) may have changed; run "
          "tests/local/test_market_metrics_pipeline.py before trusting the job", file=stream)
    return False



def assign_event_time(stream: DataStream, strategy: WatermarkStrategy, *, value_type: TypeInformation,
                      parallelism: int | None, uids: tuple[str, str], names: tuple[str, str]) -> DataStream:
    """Tuple2(value, event_time) -> value with that record timestamp and the strategy's watermarks.

    What DataStream.assign_timestamps_and_watermarks does for a Python TimestampAssigner, minus its extra
    Python operator (the upstream Python function already emits the timestamp) and with a uid and name on
    each Java operator: (assigner, unwrap)."""
    if public_api("event_time"):
        stamped = stream.assign_timestamps_and_watermarks(strategy.with_timestamp_assigner(_SecondField()))
        stamped.name(names[0]).uid(uids[0])
        unwrapped = stamped.map(lambda value: value[0], output_type=value_type).name(names[1]).uid(uids[1])
        if parallelism:
            stamped.set_parallelism(parallelism)
            unwrapped.set_parallelism(parallelism)
        return unwrapped
    eventtime = get_gateway().jvm.org.apache.flink.streaming.api.functions.python.eventtime
    j_strategy = strategy._j_watermark_strategy.withTimestampAssigner(eventtime.CustomTimestampAssigner())
    stamped = DataStream(stream._j_data_stream.assignTimestampsAndWatermarks(j_strategy))
    stamped.name(names[0]).uid(uids[0])
    unwrapped = DataStream(stamped._j_data_stream.map(eventtime.RemoveTimestampMapFunction(),
                                                      value_type.get_java_type_info()))
    unwrapped.name(names[1]).uid(uids[1])
    if parallelism:
        stamped.set_parallelism(parallelism)
        unwrapped.set_parallelism(parallelism)
    return unwrapped


def key_by_first_field(stream: DataStream, value_type: TypeInformation, value_key) -> KeyedStream:
    """Row(key, value) keyed on field 0 (a STRING) by a Java key selector: the keyed Python operator receives
    the value and the key, and no Python key-extractor operator runs on the hot path. (value_key: the key of
    a value, for the public twin, which keys the values by a Python function.)"""
    if public_api("key_by"):
        values = stream.map(lambda row: row[1], output_type=value_type)
        return values.key_by(value_key, key_type=Types.STRING())
    key_selector = get_gateway().jvm.org.apache.flink.streaming.api.functions.python.KeyByKeySelector()
    j_keyed = stream._j_data_stream.keyBy(key_selector, Types.ROW([Types.STRING()]).get_java_type_info())
    return KeyedStream(j_keyed, value_type, stream)


def batch_records(stream: DataStream, *, max_records: int, max_bytes: int, max_delay_ms: int,
                  parallelism: int | None, uid: str, name: str) -> DataStream:
    """rows.KAFKA_RECORD -> rows.KAFKA_RECORD_BATCH through io.marketpulse.flink.RecordBatcher (flink-ext/),
    chained to the source: batches of at most max_records records of one partition and max_bytes of values
    (or one larger record), none held longer than max_delay_ms, flushed before every checkpoint barrier.
    The class is on the cluster's classpath (the flink-ext jar in Flink's lib/); a local environment needs
    the jar added (tests/local). No public twin: PyFlink applies no Java operator, and one element per
    record is what this replaces (bench/README.md)."""
    jvm = get_gateway().jvm
    batcher = jvm.io.marketpulse.flink.RecordBatcher(max_records, max_bytes, max_delay_ms)
    j_stream = stream._j_data_stream.transform(name, jvm.io.marketpulse.flink.RecordBatcher.outputType(),
                                               batcher)
    j_stream.getTransformation().setChainingStrategy(
        jvm.org.apache.flink.streaming.api.operators.ChainingStrategy.ALWAYS)
    batches = DataStream(j_stream)
    batches.uid(uid)
    if parallelism:
        batches.set_parallelism(parallelism)
    return batches


def set_source_parallelism(stream: DataStream, parallelism: int, *, source_uid: str,
                           source_name: str) -> None:
    """Walks from a Table-to-DataStream conversion back to its source: the same parallelism on every
    operator on the way (so the chain stays forward-connected), and the source's uid and name fixed."""
    pending = [stream._j_data_stream.getTransformation()]
    while pending:
        transformation = pending.pop()
        transformation.setParallelism(parallelism)
        inputs = list(transformation.getInputs())
        if not inputs:
            transformation.setUid(source_uid)
            transformation.setName(source_name)
        pending.extend(inputs)


def reset_planner_node_ids(t_env) -> None:
    """Restarts the Table planner's node numbering, before the job's first table operation.

    With table.exec.uid.generation = ALWAYS the uids of the operators the planner adds (the Kafka table
    source's conversions, the sinks) contain the planner's node ids ("*anonymous_datastream_source$5*[15]"),
    which come from a static counter: the same in every `flink run -py` client, a fresh JVM each time, but
    ever growing in a JobManager that runs one submission after another (stack/jarrun.py). A job planned
    there would not match the uids of its own savepoint. Public API: none (ExecNodeContext.resetIdCounter is
    the planner's test hook); the planner lives in its own class loader, hence the reflection."""
    gateway = get_gateway()
    loader = t_env._j_tenv.getPlanner().getClass().getClassLoader()
    context = loader.loadClass("org.apache.flink.table.planner.plan.nodes.exec.ExecNodeContext")
    context.getMethod("resetIdCounter", gateway.new_array(gateway.jvm.Class, 0)).invoke(
        None, gateway.new_array(gateway.jvm.Object, 0))
