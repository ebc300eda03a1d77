"""Consumer lag arithmetic (marketpulse.kafka_lag), without Kafka: per partition log-end minus committed, a
partition without a commit counting from its oldest retained offset, only the watched topics. The health
view's table of it: tests/unit/test_dashboard_views.py."""

from __future__ import annotations

from marketpulse.kafka_lag import PartitionLag, group_lags, partition_lags


def test_lag_is_log_end_minus_committed_per_partition():
    lags = partition_lags(ends={0: 100, 1: 50, 2: 7}, starts={0: 0, 1: 20, 2: 0}, committed={0: 90, 2: 7})
    assert lags == (PartitionLag(0, 100, 90, 10),
                    PartitionLag(1, 50, None, 30),  # no commit: everything retained (20..50) is unread
                    PartitionLag(2, 7, 7, 0))


def test_a_commit_beyond_the_end_is_no_lag_not_a_negative_one():
    # The topic was deleted and re-created under the same name: the group's old commit is past the new end.
    assert partition_lags({0: 5}, {0: 0}, {0: 900}) == (PartitionLag(0, 5, 900, 0),)


def test_groups_on_watched_topics_only_sorted_by_topic_then_group():
    ends = {"trades": {0: 10, 1: 20}, "anomalies": {0: 3}}
    starts = {"trades": {0: 0, 1: 0}, "anomalies": {0: 0}}
    commits = {
        "marketpulse-sql-pipeline.trades": {("trades", 0): 10},  # partition 1 not committed yet
        "marketpulse-datastream": {("trades", 0): 8, ("trades", 1): 20},
        "marketpulse-alerts": {("anomalies", 0): 1},
        "bench_1": {("bench.topic", 0): 5},  # another topic: not listed
        "broken": {("trades", 0): -1},  # Kafka's "no offset" marker counts as no commit
    }
    found = group_lags(ends, starts, commits)
    assert [(g.topic, g.group, g.total) for g in found] == [
        ("anomalies", "marketpulse-alerts", 2), ("trades", "broken", 30),
        ("trades", "marketpulse-datastream", 2), ("trades", "marketpulse-sql-pipeline.trades", 20)]
    assert found[3].as_dict() == {
        "group": "marketpulse-sql-pipeline.trades", "topic": "trades", "total": 20,
        "partitions": [{"partition": 0, "end_offset": 10, "committed": 10, "lag": 0},
                       {"partition": 1, "end_offset": 20, "committed": None, "lag": 20}]}
