"""Apache Kafka 4.x in KRaft combined mode (broker + controller, one node), run from the Maven Central jars
in .deps/kafka with conf/kafka/server.properties. Storage is formatted on first start; topics are created
with the partition counts and the replication factor of conf/pipeline.toml."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

from marketpulse.config import Settings
from stack import paths
from stack.errors import StackError
from stack.log import say
from stack.proc import Program, port_open, read_pid, require_java, stop_pid

NAME = "kafka"
PROGRAMS = ("kafka",)
READY_TIMEOUT_S = 90.0
HOME = paths.STACK_DIR / "kafka"
DATA_DIR = HOME / "data"
LOG_DIR = HOME / "logs"
PID_FILE = HOME / "kafka.pid"
LOG_FILE = LOG_DIR / "server.log"
STDOUT_LOG = LOG_DIR / "stdout.log"


def broker_port(settings: Settings) -> int:
    return int(settings.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])


def _host(settings: Settings) -> str:
    return settings.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[0]


def _render_properties(settings: Settings) -> Path:
    """conf/kafka/server.properties with the listeners and log.dirs of this machine."""
    host, port, controller = _host(settings), broker_port(settings), settings.kafka.controller_port
    overrides = {
        "log.dirs": str(DATA_DIR),
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.quorum.voters": f"1@{host}:{controller}",
    }
    lines = []
    for line in (paths.CONF_DIR / "kafka" / "server.properties").read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        lines.append(f"{key}={overrides.pop(key)}" if key in overrides else line)
    lines += [f"{key}={value}" for key, value in overrides.items()]
    rendered = HOME / "server.properties"
    rendered.write_text("\n".join(lines) + "\n")
    return rendered


def _java(main_class: str, *args: str, max_heap: str = "256m", min_heap: str = "64m") -> list[str]:
    return [require_java(), f"-Xmx{max_heap}", f"-Xms{min_heap}",
            "-cp", f"{paths.KAFKA_JARS}/*",
            f"-Dkafka.logs.dir={LOG_DIR}",
            f"-Dlog4j2.configurationFile={paths.CONF_DIR / 'kafka' / 'log4j2.yaml'}",
            main_class, *args]


def pids() -> list[int]:
    """The live broker pid (none or one)."""
    found = read_pid(PID_FILE)
    return [] if found is None else [found]


def program_pids() -> dict[str, list[int]]:
    return {"kafka": pids()}


def running() -> bool:
    """Our broker process is alive (whether or not it answers yet)."""
    return bool(pids())


def log_hint() -> Path:
    return LOG_FILE


def prepare(settings: Settings) -> None:
    """Before the supervisor's first start: server.properties for this machine, storage formatted once."""
    if not any(paths.KAFKA_JARS.glob("kafka_*.jar")):
        raise StackError("Kafka jars missing in .deps/kafka: run `make setup`")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    properties = _render_properties(settings)
    if not (DATA_DIR / "meta.properties").exists():
        say("Kafka: formatting KRaft storage (first start)")
        cluster_id = uuid.uuid4().hex[:22]
        result = subprocess.run(
            _java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)),
            capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"Kafka storage format failed: {(result.stdout + result.stderr).strip()[-400:]}")


def programs(settings: Settings) -> list[Program]:
    """The broker's JVM in the foreground, the supervisor its parent."""
    return [Program(name="kafka", title="Kafka broker",
                   argv=_java("kafka.Kafka", str(HOME / "server.properties"), max_heap="1g", min_heap="1g"),
                   log_file=STDOUT_LOG, log_hint=LOG_FILE, pid_file=PID_FILE, stop_timeout=30.0)]


def ports(settings: Settings) -> list[tuple[int, str]]:
    return [(broker_port(settings), "Kafka broker"), (settings.kafka.controller_port, "Kafka controller")]



def ready(settings: Settings) -> bool:
    return metadata_ready(settings)


def _admin(settings: Settings):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers,
                            client_id="marketpulse-stack", request_timeout_ms=5000)


def metadata_ready(settings: Settings) -> bool:
    if not port_open(broker_port(settings), _host(settings)):
        return False
    try:
        admin = _admin(settings)
        try:
            admin.list_topics()
            return True
        finally:
            admin.close()
    except Exception:  # the broker answers TCP before it serves metadata: keep polling
        return False


def wanted_topics(settings: Settings) -> dict[str, int]:
    k = settings.kafka
    return {
        k.trades_topic: k.trades_partitions,
        k.anomalies_topic: k.anomalies_partitions,
        k.injected_topic: k.injected_partitions,
        k.reference_topic: 1,
    }


def checked_replication_factor(factor: int, brokers: int, servers: str) -> int:
    """kafka.replication_factor, if the cluster has that many brokers (Kafka's own refusal names neither)."""
    if not 1 <= factor <= brokers:
        raise StackError(f"kafka.replication_factor = {factor}, but the Kafka cluster at {servers} has "
                         f"{brokers} broker{'s' if brokers != 1 else ''}: set it between 1 and {brokers}")
    return factor


def ensure_topics(settings: Settings) -> None:
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = _admin(settings)
    try:
        existing = set(admin.list_topics())
        missing = {name: n for name, n in wanted_topics(settings).items() if name not in existing}
        if missing:
            factor = checked_replication_factor(int(settings.kafka.replication_factor),
                                                len(admin.describe_cluster()["brokers"]),
                                                settings.kafka.bootstrap_servers)
        for name, partitions in missing.items():
            # symbols is a table of the latest row per key: compact it.
            configs = {"cleanup.policy": "compact"} if name == settings.kafka.reference_topic else {}
            try:
                admin.create_topics([NewTopic(name, partitions, factor, topic_configs=configs)])
            except TopicAlreadyExistsError:
                pass
        if missing:
            say(f"Kafka: created topics (replication factor {factor}) "
                + ", ".join(f"{n}({p})" for n, p in missing.items()))
        deadline = time.monotonic() + 30
        while set(wanted_topics(settings)) - set(admin.list_topics()):
            if time.monotonic() > deadline:
                raise StackError(f"Kafka topics were not created in time; see {LOG_FILE}")
            time.sleep(0.2)
    finally:
        admin.close()


def stop(settings: Settings) -> bool:
    alive = pids()
    for pid in alive:
        stop_pid(pid, timeout=30)
    PID_FILE.unlink(missing_ok=True)
    return bool(alive)


def healthy(settings: Settings) -> bool:
    return bool(pids()) and port_open(broker_port(settings), _host(settings))
