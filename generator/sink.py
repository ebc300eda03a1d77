"""Where the messages go: a file (or stdout) or Kafka, behind one small interface.

File format (--output FILE or -): one message per line, three tab-separated fields, UTF-8:
    <topic> TAB <key> TAB <value> LF
Keys are tickers and values are JSON (or, for bad records, broken JSON made from JSON text), so neither
ever contains a tab or a newline. These are exactly the key and value bytes the Kafka sink would send.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable


class SinkError(RuntimeError):
    """A failure to report in one line (broker unreachable, unwritable file...)."""


class Sink:
    errors = 0  # messages that could not be delivered
    first_error: str | None = None

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class FileSink(Sink):
    def __init__(self, target: str):
        self.target = target
        if target == "-":
            self._file, self._owned = sys.stdout.buffer, False
        else:
            try:
                self._file, self._owned = open(target, "wb", buffering=1 << 20), True  # noqa: SIM115
            except OSError as err:
                raise SinkError(f"cannot write {target}: {err.strerror}") from None
        self._write = self._file.write

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self._write(b"%s\t%s\t%s\n" % (topic.encode(), key, value))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        try:
            self._file.flush()
        finally:
            if self._owned:
                self._file.close()


class MemorySink(Sink):
    """Keeps (topic, key, value) tuples: for tests and the benchmark's generator-only figure."""

    def __init__(self):
        self.messages: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.messages.append((topic, key, value))


class KafkaSink(Sink):
    """kafka-python producer with pre-serialized bytes; key = symbol, so the default (murmur2) partitioner
    keeps a symbol in one partition."""

    def __init__(self, bootstrap_servers: str, *, acks: str = "all", linger_ms: int = 20,
                 batch_size: int = 256 * 1024, compression: str = "none", wait_s: float = 60.0,
                 max_block_ms: int = 60_000, log: Callable[[str], None] | None = None, **extra):
        # kafka-python logs every refused connection; our own messages say what matters.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.bootstrap_servers = bootstrap_servers
        self.errors = 0
        self.first_error = None
        self.sent = 0
        log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        acks_value = -1 if acks == "all" else int(acks)
        config = dict(
            bootstrap_servers=bootstrap_servers.split(","),
            acks=acks_value,
            # Idempotence needs acks=all; it also keeps per-partition order on retries.
            enable_idempotence=acks_value == -1,
            linger_ms=linger_ms,
            batch_size=batch_size,
            compression_type=None if compression == "none" else compression,
            max_block_ms=max_block_ms,
            **extra,
        )
        deadline = time.monotonic() + wait_s
        attempt = 0
        while True:
            attempt += 1
            try:
                timeout_ms = int(1000 * min(5.0, max(1.0, deadline - time.monotonic())))
                self._producer = KafkaProducer(bootstrap_timeout_ms=timeout_ms, **config)
                break
            except KafkaError as err:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SinkError(
                        f"Kafka broker not reachable at {bootstrap_servers} after {wait_s:.0f}s "
                        f"({type(err).__name__}); is the stack up (make up)? "
                        f"Set MARKETPULSE_KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers to change it."
                    ) from None
                log(f"generator: waiting for Kafka at {bootstrap_servers} (attempt {attempt}, "
                    f"giving up in {left:.0f}s)")
                time.sleep(min(2.0, max(left, 0.0)))
            except (ValueError, RuntimeError) as err:  # bad config, e.g. a codec without its library
                raise SinkError(f"cannot configure the Kafka producer: {err}") from None
        self._kafka_error = KafkaError
        self._send = self._producer.send

    def _on_error(self, err) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(err).__name__}: {err}"

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        try:
            self._send(topic, value=value, key=key).add_errback(self._on_error)
        except self._kafka_error as err:
            # Typically: metadata for the topic never arrived (topic missing and auto-creation off).
            raise SinkError(f"cannot send to topic {topic!r} on {self.bootstrap_servers} ({err}); does the "
                            f"topic exist? (the stack creates its topics; the broker may not auto-create "
                            f"them)") from None
        self.sent += 1

    def partitions(self, topic: str) -> list[int]:
        """The topic's partitions, as the broker has them."""
        found = self._producer.partitions_for(topic)
        if not found:
            raise SinkError(f"topic {topic!r} has no partitions on {self.bootstrap_servers}; does it exist?")
        return sorted(found)

    def send_to_partition(self, topic: str, partition: int, value: bytes) -> None:
        """A record without a key to one partition (a heartbeat)."""
        try:
            self._send(topic, value=value, partition=partition).add_errback(self._on_error)
        except self._kafka_error as err:
            raise SinkError(f"cannot send to topic {topic!r} on {self.bootstrap_servers} ({err})") from None

    def flush(self, timeout: float | None = 120.0) -> None:
        try:
            self._producer.flush(timeout)
        except self._kafka_error as err:
            self._on_error(err)

    def close(self) -> None:
        self.flush()
        self._producer.close(timeout=10)
