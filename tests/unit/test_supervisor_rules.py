"""The supervisor's pure parts (backoff, exit reasons, durations), the job registry's choice of checkpoint,
and the restart loop itself on stand-in programs (`sleep`), without the stack."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from stack import jobs, paths, registry, supervisor
from stack.proc import Program


def test_backoff_doubles_from_one_second_to_a_thirty_second_cap():
    assert [supervisor.backoff_delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert supervisor.backoff_delay(10_000) == 30


@pytest.mark.parametrize(("code", "reason"), [
    (-9, "killed by SIGKILL"), (-15, "killed by SIGTERM"), (-11, "killed by SIGSEGV"), (1, "exit 1"),
    (0, "exit 0"), (143, "exit 143 (SIGTERM)"), (137, "exit 137 (SIGKILL)"), (255, "exit 255"),
])
def test_exit_reason(code, reason):
    assert supervisor.exit_reason(code) == reason


def test_format_duration():
    assert [supervisor.format_duration(s) for s in (None, 0, 59.9, 60, 3599, 3600, 7322)] == [
        "-", "0s", "59s", "1m00s", "59m59s", "1h00m", "2h02m"]


def make_checkpoint(root, job_id, n, complete=True):
    folder = root / job_id / f"chk-{n}"
    folder.mkdir(parents=True)
    if complete:
        (folder / "_metadata").write_bytes(b"x")
    return folder


def test_newest_checkpoint_is_the_highest_complete_number(tmp_path):
    job = "a" * 32
    assert registry.newest_checkpoint(tmp_path / job) is None
    make_checkpoint(tmp_path, job, 9)
    expected = make_checkpoint(tmp_path, job, 10)  # numeric, not lexical: 10 > 9
    make_checkpoint(tmp_path, job, 11, complete=False)  # being written when the process died
    (tmp_path / job / "shared").mkdir()
    assert registry.newest_checkpoint(tmp_path / job) == expected


def test_restore_point_uses_the_newest_job_else_where_it_started(tmp_path):
    old, new = "a" * 32, "b" * 32
    make_checkpoint(tmp_path, old, 5)
    make_checkpoint(tmp_path, old, 7)
    entry = {"job_ids": [old], "restore_path": None}
    assert registry.restore_point(entry, tmp_path) == str(tmp_path / old / "chk-7")
    # Resubmitted from chk-7 as `new`, which died before its first checkpoint: chk-7 again, not older.
    entry = {"job_ids": [old, new], "restore_path": str(tmp_path / old / "chk-7")}
    assert registry.restore_point(entry, tmp_path) == str(tmp_path / old / "chk-7")
    make_checkpoint(tmp_path, new, 8)
    assert registry.restore_point(entry, tmp_path) == str(tmp_path / new / "chk-8")
    assert registry.restore_point({"job_ids": [], "restore_path": None}, tmp_path) is None


def test_registry_records_and_a_cancel_ends_only_the_newest_job(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "STACK_DIR", tmp_path)
    registry.record("counter", "sql", "sql/x.sql", "1" * 32, variables={"table": "t"})
    registry.record("counter", "sql", "sql/x.sql", "2" * 32, restore_path="/chk-3")
    entry = registry.load()["counter"]
    assert entry["job_ids"] == ["1" * 32, "2" * 32] and entry["restore_path"] == "/chk-3"
    assert registry.mark("1" * 32, registry.CANCELLED) is None  # an older job's end says nothing
    assert [e["name"] for e in registry.active()] == ["counter"]
    assert registry.mark("2" * 32, registry.CANCELLED) == "counter"
    assert registry.active() == []
    with registry.submission_lock() as got, registry.submission_lock() as again:  # re-entrant in-process
        assert got and again


def sleeper(name: str, log) -> Program:
    return Program(name=name, title=name, argv=[sys.executable, "-c", "import time; time.sleep(60)"],
                   log_file=log)


def test_the_loop_restarts_only_the_program_that_died_with_backoff(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "STACK_DIR", tmp_path)
    supervisor.home().mkdir()
    sup = supervisor.Supervisor(settings=None, programs=[sleeper("kafka", tmp_path / "k.log"),
                                                          sleeper("taskmanager", tmp_path / "t.log")])
    sup.follow_jobs = lambda: False  # no Flink here
    try:
        sup.tick()
        sup.write_state()
        kafka_pid, tm_pid = supervisor.program_pid("kafka"), supervisor.program_pid("taskmanager")
        assert kafka_pid and tm_pid
        os.kill(tm_pid, signal.SIGKILL)
        killed = time.monotonic()
        deadline = killed + 10
        while supervisor.program_pid("taskmanager") in (None, tm_pid) and time.monotonic() < deadline:
            sup.tick()
            sup.write_state()
            time.sleep(0.05)
        restarted_after = time.monotonic() - killed
        state = supervisor.read_state()["programs"]
        assert state["taskmanager"]["restarts"] == 1
        assert state["taskmanager"]["last_exit"] == "killed by SIGKILL"
        assert 1.0 <= restarted_after < 2.0  # the first backoff step is 1 s
        assert state["kafka"]["pid"] == kafka_pid and state["kafka"]["restarts"] == 0
        # A second quick death waits 2 s.
        os.kill(state["taskmanager"]["pid"], signal.SIGKILL)
        time.sleep(0.1)
        sup.tick()
        sup.write_state()
        waiting = supervisor.read_state()["programs"]["taskmanager"]
        assert waiting["state"] == "backoff" and 1.7 < waiting["next_start_at"] - time.time() <= 2.0
        log = supervisor.log_file().read_text()
        assert "taskmanager: exited after 0s: killed by SIGKILL; restarting in 1s" in log
        assert "restarting in 2s" in log
    finally:
        sup.stop_all()
    sup.write_state()
    assert supervisor.children_pids() == {}
    assert "kafka: stopped (killed by SIGTERM)" in supervisor.log_file().read_text()


def test_lost_jobs_are_those_the_cluster_does_not_know_and_ends_are_deliberate():
    a, b, c, d = ("a" * 32, "b" * 32, "c" * 32, "d" * 32)
    entries = [{"name": "ds", "job_ids": [a, b]}, {"name": "sql", "job_ids": [c]},
               {"name": "failed", "job_ids": [d]}, {"name": "never-seen", "job_ids": []}]
    # After a JobManager restart the cluster knows none of them: all lost (an older id says nothing).
    old_only = [{"jid": a, "name": "ds", "state": "CANCELED"}]
    assert [e["name"] for e in jobs.lost_entries(entries, old_only)] == ["ds", "sql", "failed", "never-seen"]
    cluster = [{"jid": b, "name": "ds", "state": "RUNNING"},
               {"jid": "e" * 32, "name": "sql", "state": "RUNNING"},
               {"jid": d, "name": "failed", "state": "FAILED"}]
    # Running (under its id or, resubmitted by hand, another one) or known as FAILED: not lost.
    assert [e["name"] for e in jobs.lost_entries(entries, cluster)] == ["never-seen"]
    ended = [{"jid": b, "name": "ds", "state": "CANCELED"}, {"jid": c, "name": "sql", "state": "FINISHED"},
             {"jid": d, "name": "failed", "state": "FAILED"}]
    assert jobs.ended_entries(entries, ended) == {b: registry.CANCELLED, c: registry.FINISHED}


def test_a_redeploy_keeps_the_options_it_is_not_given():
    from stack.redeploy import merge_job_args

    running = ["--group-id", "g1", "--parallelism", "2", "--python-bundle-ms=50"]
    assert merge_job_args(running, []) == running[:4] + ["--python-bundle-ms", "50"]
    assert merge_job_args(running, ["--parallelism", "1"]) == [
        "--group-id", "g1", "--python-bundle-ms", "50", "--parallelism", "1"]
    assert merge_job_args([], ["--parallelism", "4"]) == ["--parallelism", "4"]
