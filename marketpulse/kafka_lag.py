"""Kafka consumer lag per partition, read from Kafka itself: the partition's log-end offset minus the offset
the consumer group has committed there.

    reader = LagReader("127.0.0.1:9092", topics=["trades", "anomalies"])
    for group in reader.read():        # every group with committed offsets on those topics
        group.group, group.topic, group.total, [(p.partition, p.end_offset, p.committed, p.lag) ...]

What a Flink job's lag means: its Kafka source commits its position when a checkpoint completes, not as it
reads ('commit.offsets.on.checkpoint'), so the committed offset is what the job has read *and checkpointed*.
A job that keeps up shows a lag of about one checkpoint interval of records at most, and 0 once the topic is
quiet and a checkpoint has completed. A stopped job's lag grows by exactly what is produced meanwhile. The
alert service's consumer commits as it goes. A partition the group has not committed yet (a Flink source
commits only partitions it has read from) counts from the oldest retained offset: all of it is unread.

Kafka's group state cannot tell a running Flink job from a stopped one (the Kafka source assigns partitions
itself and never joins its group, so its group is always "Empty"): every group with commits on a watched
topic is listed, a stopped job's too, which is what an operator wants to see (its backlog)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


class LagUnavailable(RuntimeError):
    """Kafka did not answer the admin requests."""


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    end_offset: int
    committed: int | None  # None: the group has no commit on this partition
    lag: int


@dataclass(frozen=True)
class GroupLag:
    group: str
    topic: str
    partitions: tuple[PartitionLag, ...] = field(default_factory=tuple)

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    def as_dict(self) -> dict:
        return {"group": self.group, "topic": self.topic, "total": self.total,
                "partitions": [{"partition": p.partition, "end_offset": p.end_offset,
                                "committed": p.committed, "lag": p.lag} for p in self.partitions]}


def partition_lags(ends: Mapping[int, int], starts: Mapping[int, int],
                   committed: Mapping[int, int]) -> tuple[PartitionLag, ...]:
    """Per partition of the topic (`ends`: log-end offsets; `starts`: oldest retained offsets), the records
    past the group's committed offset. Without a commit, everything retained counts. A commit beyond the end
    (the topic was re-created) counts as 0, never negative. Pure."""
    rows = []
    for partition in sorted(ends):
        end = ends[partition]
        done = committed.get(partition)
        read_from = starts.get(partition, 0) if done is None else done
        rows.append(PartitionLag(partition=partition, end_offset=end, committed=done,
                                 lag=max(0, end - read_from)))
    return tuple(rows)


def group_lags(topic_ends: Mapping[str, Mapping[int, int]], topic_starts: Mapping[str, Mapping[int, int]],
               commits: Mapping[str, Mapping[tuple[str, int], int]]) -> list[GroupLag]:
    """One GroupLag per (group, watched topic) the group has committed on, sorted by topic then group.
    `commits`: group -> {(topic, partition): committed offset}, of any topics (unwatched ignored). Pure."""
    found = []
    for group, offsets in commits.items():
        for topic in sorted({topic for topic, _ in offsets if topic in topic_ends}):
            committed = {partition: offset for (t, partition), offset in offsets.items()
                         if t == topic and offset is not None and offset >= 0}
            found.append(GroupLag(group=group, topic=topic,
                                  partitions=partition_lags(topic_ends[topic], topic_starts.get(topic, {}),
                                                            committed)))
    return sorted(found, key=lambda g: (g.topic, g.group))


class LagReader:
    """Reads the lag of every consumer group on `topics` with Kafka's admin API: ListGroups, one OffsetFetch
    for all groups (brokers 3.0+), ListOffsets for the ends and starts. About four requests per read; the
    admin client is kept between reads and re-created after an error."""

    def __init__(self, bootstrap_servers: str, topics: Iterable[str], timeout_seconds: float = 3.0):
        self.bootstrap_servers = bootstrap_servers
        self.topics = list(dict.fromkeys(topics))
        self.timeout_ms = int(timeout_seconds * 1000)
        self._admin = None

    def read(self) -> list[GroupLag]:
        from kafka.errors import KafkaError

        try:
            return self._read(self._client())
        except (KafkaError, OSError, ValueError) as err:
            self.close()
            detail = str(err) if str(err).startswith(type(err).__name__) else f"{type(err).__name__}: {err}"
            raise LagUnavailable(f"Kafka {self.bootstrap_servers}: {detail}") from None

    def close(self) -> None:
        if self._admin is not None:
            try:
                self._admin.close()
            except Exception:  # noqa: BLE001 (closing a broken client must not hide the first error)
                pass
            self._admin = None

    def _client(self):
        from kafka import KafkaAdminClient

        if self._admin is None:
            self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers.split(","),
                                           client_id="marketpulse-lag", request_timeout_ms=self.timeout_ms,
                                           bootstrap_timeout_ms=self.timeout_ms)
        return self._admin

    def _read(self, admin) -> list[GroupLag]:
        from kafka import TopicPartition
        from kafka.admin import OffsetSpec

        described = admin.describe_topics(self.topics)
        partitions = [TopicPartition(topic["name"], p["partition_index"]) for topic in described
                      if not topic.get("error_code") for p in topic.get("partitions", [])]
        if not partitions:
            return []
        ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions})
        starts = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in partitions})
        topic_ends: dict[str, dict[int, int]] = {}
        topic_starts: dict[str, dict[int, int]] = {}
        for tp in partitions:
            topic_ends.setdefault(tp.topic, {})[tp.partition] = ends[tp].offset
            topic_starts.setdefault(tp.topic, {})[tp.partition] = starts[tp].offset
        groups = [group["group_id"] for group in admin.list_groups()]
        fetched = admin.list_group_offsets(groups) if groups else {}
        commits = {group: {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
                   for group, offsets in fetched.items()}
        return group_lags(topic_ends, topic_starts, commits)
