"""Every job is bounded: Play / Pause cannot hold a worker past a wall-clock cap (a worker that ignores the stop
is killed), and computations such as UMAP wait their turn and count toward the class queue's limit."""

from __future__ import annotations

import threading

import pytest

from tests import test_jobs
from tests.test_jobs import DATA, budget, queue, tiny, wait_finished, wait_for
from vqdemo.jobs import JobError, limits, worker

gate = test_jobs.gate   # the fixture that holds each run at a gate until the test opens it


def test_play_pause_cannot_hold_the_only_worker_past_the_wall_clock_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "START_MARGIN_S", 1.0)
    q = queue(tmp_path, pause_limit_s=1.0)   # a pause shorter than the limit never trips the pause reaper
    a = q.submit("a", "play pause", tiny(), DATA, budget(steps=10**6, seconds=5.0))
    b = q.submit("b", "waiting", tiny(), DATA, budget(steps=5))
    wait_for(lambda: a.step_count >= 1, "the first run to train")
    done = threading.Event()

    def play_pause() -> None:   # mostly paused: its 5 training seconds alone would take minutes of wall clock
        while not done.is_set() and a.state in ("running", "paused"):
            a.pause()
            done.wait(0.5)
            a.resume()
            done.wait(0.02)

    clicker = threading.Thread(target=play_pause, daemon=True)
    clicker.start()
    try:
        wait_finished(a, b)
    finally:
        done.set()
        clicker.join(10)
    # stopped by the wall-clock cap ("pauses included"), not by its training budget (that would end it "done")
    assert a.state == "stopped" and "pauses included" in a.view().reason, a.view().reason
    assert b.state == "done"


def test_a_job_that_ignores_the_stop_is_killed_after_a_grace_period(tmp_path, monkeypatch):
    release = threading.Event()
    monkeypatch.setitem(worker.CALLS, "stuck", lambda: release.wait(120))
    monkeypatch.setitem(worker.CALLS, "double", lambda x: 2 * x)
    monkeypatch.setattr(limits, "START_MARGIN_S", 0.5)
    monkeypatch.setattr(limits, "STOP_GRACE_S", 0.5)
    monkeypatch.setattr(limits, "CALL_SECONDS", 0.5)
    q = queue(tmp_path, pause_limit_s=0.5)
    try:
        stuck = q.compute("stuck", "stuck")
        after = q.compute("after", "double", 21)
        wait_finished(stuck, after)
        assert stuck.state == "stopped" and "pauses included" in stuck.view().reason
        assert "checkpoints" not in stuck.view().reason   # a computation has none
        assert after.state == "done" and after.result == 42
    finally:
        release.set()


def test_computations_wait_their_turn_and_count_toward_the_class_limit(tmp_path, gate, monkeypatch):
    monkeypatch.setitem(worker.CALLS, "double", lambda x: 2 * x)
    q = queue(tmp_path, max_queued=3)
    running = q.submit("a", "running", tiny(), DATA, budget(steps=5))
    wait_for(lambda: gate.inside == 1, "the first run to hold the worker")
    student = q.submit("b", "waiting student", tiny(), DATA, budget(steps=5))
    maps = [q.compute(("umap", i), "double", i) for i in range(2)]
    assert student.view().place == 1 and [m.view().place for m in maps] == [2, 3]   # no jumping the queue
    assert q.compute(("umap", 0), "double", 0) is maps[0]   # the same map asked again is not queued twice
    with pytest.raises(JobError, match="class queue is full"):
        q.compute(("umap", 2), "double", 2)
    with pytest.raises(JobError, match="class queue is full"):
        q.submit("c", "one too many", tiny(), DATA, budget(steps=5))
    assert q.counts()["queued"] == 3
    gate.open.set()
    wait_finished(running, student, *maps)
    assert student.state == "done" and [m.result for m in maps] == [0, 2]
