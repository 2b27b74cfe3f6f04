"""The shared job queue: concurrency limit, FIFO places, pause / step / stop, live knobs, limits,
failures with a reason, one folder per job, interrupted runs after a restart, prior and computation jobs.

These drive the real worker code (`vqdemo.jobs.worker`) through the in-process thread backend, so a test can
monkeypatch the training loop; tests/test_jobs_process.py runs the same jobs in real worker processes.
Every job is tiny (200 sklearn digits, hidden 16, K 8, one torch thread) so each trains in about a second.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from thread_backend import ThreadBackend

import vqdemo.fit
from helpers import wait_for
from vqdemo import files, jobs, run_store, runs
from vqdemo.data import DataConfig
from vqdemo.jobs import JobError, JobQueue
from vqdemo.models import VQVAE, ModelConfig
from vqdemo.quantize import QuantizerConfig, ResidualConfig
from vqdemo.trainer import TrainConfig

DATA = DataConfig(name="digits", max_images=200)
TIMEOUT_S = 60.0


def tiny(kind: str = "vq", k: int = 8) -> ModelConfig:
    rq = ResidualConfig(depth=2, codebook_sizes=[k, k])
    return ModelConfig(kind=kind, hidden=16, res_blocks=1, res_hidden=8, vq=QuantizerConfig(k=k, dim=4), rq=rq)


def budget(steps: int = 20, **kw) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=16, val_every=10, log_every=1, snapshot_every=5, **kw)


def queue(tmp_path: Path, max_running: int = 1, **kw) -> JobQueue:
    return JobQueue(max_running, tmp_path / "runs", threads=1, backend=ThreadBackend(), **kw)


def wait_finished(*js) -> None:
    for j in js:
        wait_for(lambda j=j: j.state in jobs.FINISHED, f"job {j.title} to finish")


@pytest.fixture
def gate(monkeypatch):
    """fit() wrapped so each job waits at a gate after it starts; counts how many are inside at once."""

    class Gate:
        def __init__(self):
            self.open = threading.Event()
            self.lock = threading.Lock()
            self.inside = 0
            self.peak = 0

    g = Gate()
    real_fit = vqdemo.fit.fit

    def fit(*args, **kwargs):
        with g.lock:
            g.inside += 1
            g.peak = max(g.peak, g.inside)
        try:
            g.open.wait(TIMEOUT_S)
            return real_fit(*args, **kwargs)
        finally:
            with g.lock:
                g.inside -= 1

    monkeypatch.setattr(vqdemo.fit, "fit", fit)
    return g


@pytest.mark.integration
@pytest.mark.parametrize("max_running", [1, 2])
def test_never_more_than_max_running_and_fifo_places(tmp_path, gate, max_running):
    q = queue(tmp_path, max_running)
    js = [q.submit(f"s{i}", f"job {i}", tiny(), DATA, budget()) for i in range(3)]
    wait_for(lambda: gate.inside == max_running, f"{max_running} jobs to start")
    time.sleep(0.2)  # give a wrongly started extra job the chance to show up
    assert gate.inside == max_running
    queued = [j.view() for j in js[max_running:]]
    assert [v.state for v in queued] == ["queued"] * len(queued)
    assert [v.place for v in queued] == list(range(1, len(queued) + 1))
    assert all(v.wait_s is not None and v.wait_s > 0 for v in queued)
    assert q.counts() == {"running": max_running, "queued": 3 - max_running, "max_running": max_running}
    gate.open.set()
    wait_finished(*js)
    assert gate.peak == max_running
    assert [j.state for j in js] == ["done"] * 3
    assert all(j.view().place is None for j in js)


class ClusterBackend(ThreadBackend):
    """A backend that knows a cluster's CPUs and says when they change, as the Ray backend does."""

    def __init__(self, cpus: int):
        super().__init__()
        self.cpus, self._changed = cpus, lambda: None

    def capacity(self) -> int:
        return self.cpus

    def on_capacity(self, callback) -> None:
        self._changed = callback

    def resize(self, cpus: int) -> None:
        self.cpus = cpus
        self._changed()


@pytest.mark.integration
def test_the_queue_runs_as_many_jobs_as_the_cluster_has_cpus_and_follows_it(tmp_path, gate, monkeypatch):
    monkeypatch.delenv("VQDEMO_MAX_JOBS", raising=False)
    backend = ClusterBackend(cpus=1)
    q = JobQueue(None, tmp_path / "runs", threads=1, backend=backend)
    js = [q.submit(f"s{i}", f"job {i}", tiny(), DATA, budget()) for i in range(4)]
    wait_for(lambda: gate.inside == 1, "one job on a one-CPU cluster")
    backend.resize(3)   # two worker machines join: waiting jobs start without anything else happening
    wait_for(lambda: gate.inside == 3, "three jobs on a three-CPU cluster")
    assert q.counts() == {"running": 3, "queued": 1, "max_running": 3}
    backend.resize(1)   # they leave again: nothing is stopped, nothing new starts until one CPU's worth is free
    assert q.counts()["max_running"] == 1
    monkeypatch.setenv("VQDEMO_MAX_JOBS", "2")   # the teacher's setting wins over the cluster's size
    assert q.counts()["max_running"] == 2
    gate.open.set()
    wait_finished(*js)
    assert gate.peak == 3 and [j.state for j in js] == ["done"] * 4


@pytest.mark.integration
def test_stop_on_a_queued_job_leaves_the_queue(tmp_path, gate):
    q = queue(tmp_path)
    first, second, third = (q.submit("s", f"job {i}", tiny(), DATA, budget()) for i in range(3))
    wait_for(lambda: gate.inside == 1, "the first job to start")
    assert second.view().place == 1 and third.view().place == 2
    second.stop()
    assert second.state == "stopped" and "queue" in second.view().reason
    assert not second.run_dir.exists()
    assert third.view().place == 1
    gate.open.set()
    wait_finished(first, third)
    assert second.view().step == 0 and third.state == "done"


@pytest.mark.integration
def test_pause_holds_the_step_and_single_step_advances_exactly_one(tmp_path):
    q = queue(tmp_path, max_seconds=60)
    job = q.submit("s", "pause me", tiny(), DATA, budget(steps=100_000))
    wait_for(lambda: job.step_count >= 3, "a few steps")
    job.pause()
    assert job.state == "paused"
    held = wait_for(lambda: job.view().paused_at, "the loop to hold")
    time.sleep(0.3)
    assert job.step_count == held
    job.step(1)
    wait_for(lambda: job.view().paused_at == held + 1, "one more step")
    time.sleep(0.3)
    view = job.view()
    assert view.step == held + 1 and view.state == "paused"
    job.resume()
    wait_for(lambda: job.step_count > held + 3, "training to go on after play")
    job.stop()
    wait_finished(job)
    assert job.state == "stopped"
    assert runs.read_json(job.run_dir / "status.json")["state"] == "stopped"
    assert (job.run_dir / runs.WEIGHTS).is_file()


@pytest.mark.integration
def test_live_beta_lr_and_k_take_effect(tmp_path):
    q = queue(tmp_path, max_seconds=60)
    job = q.submit("s", "knobs", tiny(k=8), DATA, budget(steps=100_000))
    wait_for(lambda: job.step_count >= 2, "a few steps")
    job.pause()
    held = wait_for(lambda: job.view().paused_at, "the loop to hold")
    job.set(beta=1.5, lr=5e-4, k=16)
    assert job.view().pending == {"beta": 1.5, "lr": 5e-4, "k": 16}
    job.step(1)
    wait_for(lambda: job.view().paused_at == held + 1, "the step that applies the changes")
    view = job.view()
    meta = runs.read_json(job.run_dir / "config.json")  # owner and title survive the loop's rewrites mid-run
    assert meta["owner"] == "s" and meta["title"] in ("knobs", "knobs (K=16)")   # retitled from the next write on
    assert view.title == "knobs (K=16)"
    assert view.knobs == {"beta": 1.5, "lr": 5e-4, "k": 16} and view.pending == {}
    assert view.changes[-1] == {"step": held, "beta": 1.5, "lr": 5e-4, "k": 16}
    assert (view.latest["beta"], view.latest["lr"], view.latest["k"]) == (1.5, 5e-4, 16.0)
    job.set(k=4)
    job.resume()
    wait_for(lambda: job.view().knobs["k"] == 4, "K to shrink")
    job.stop()
    wait_finished(job)
    model, _ = runs.load_model(job.run_dir, runs.LAST)
    assert isinstance(model, VQVAE) and model.codebook_sizes == [4]
    assert runs.read_json(job.run_dir / "config.json")["title"] == job.view().title == "knobs (K=4)"  # its final K


@pytest.mark.integration
def test_bad_live_changes_are_refused_with_a_reason(tmp_path, gate):
    q = queue(tmp_path, max_running=3)
    vq, rq, vae = (q.submit("s", kind, tiny(kind), DATA, budget()) for kind in ("vq", "rq", "vae"))
    for bad in ({"lr": 0.0}, {"lr": float("nan")}, {"beta": -1.0}, {"k": 1}, {"hidden": 32}):
        with pytest.raises(JobError):
            vq.set(**bad)
    with pytest.raises(JobError, match="VQ models"):
        rq.set(k=32)
    with pytest.raises(JobError, match="VAE"):
        vae.set(beta=1.0)
    rq.set(beta=0.5)
    vae.set(lr=3e-4)
    gate.open.set()
    wait_finished(vq, rq, vae)
    assert (vq.state, rq.state, vae.state) == ("done", "done", "done")
    assert rq.view().knobs["beta"] == 0.5 and vae.view().knobs["lr"] == 3e-4
    with pytest.raises(JobError, match="ended"):
        vq.set(lr=1e-3)


@pytest.mark.integration
def test_per_owner_limit_and_queue_cap(tmp_path, gate):
    q = queue(tmp_path, per_owner=2, max_queued=2)
    a1, a2 = (q.submit("alice", title, tiny(), DATA, budget()) for title in ("a1", "a2"))
    with pytest.raises(JobError, match="limit is 2 per student"):
        q.submit("alice", "a3", tiny(), DATA, budget())
    b1 = q.submit("bob", "b1", tiny(), DATA, budget())
    wait_for(lambda: gate.inside == 1, "the first job to start")
    with pytest.raises(JobError, match="queue is full"):
        q.submit("carol", "c1", tiny(), DATA, budget())
    assert [j.title for j in q.list_jobs("alice")] == ["a1", "a2"]
    assert len(q.list_jobs()) == 3 and q.get(b1.id) is b1
    for j in (a2, b1):
        j.stop()
    gate.open.set()
    wait_finished(a1, a2, b1)
    a3 = q.submit("alice", "a3", tiny(), DATA, budget())  # finished runs no longer count
    wait_finished(a3)


def test_bad_configs_are_refused_before_queueing(tmp_path):
    q = queue(tmp_path)
    bad_model = tiny()
    bad_model.vq.k = 1
    with pytest.raises(ValueError, match="codebook size"):
        q.submit("s", "bad", bad_model, DATA, budget())
    with pytest.raises(ValueError, match="batch size"):
        q.submit("s", "bad", tiny(), DATA, TrainConfig(steps=5, batch_size=0))
    with pytest.raises(ValueError, match="seconds"):
        q.submit("s", "bad", tiny(), DATA, TrainConfig(seconds=-1.0))
    assert q.list_jobs() == [] and runs.list_runs(tmp_path / "runs") == []


@pytest.mark.integration
def test_a_diverging_loss_ends_failed_with_a_reason(tmp_path, monkeypatch):
    real = VQVAE.training_loss
    calls = {"n": 0}

    def training_loss(self, batch):
        loss, stats = real(self, batch)
        calls["n"] += len(batch[0]) == 16   # the training steps, not the smaller probes that estimate the first one
        return (loss * float("nan"), stats) if calls["n"] > 12 else (loss, stats)

    monkeypatch.setattr(VQVAE, "training_loss", training_loss)
    q = queue(tmp_path)
    job = q.submit("s", "diverge", tiny(), DATA, TrainConfig(steps=50, batch_size=16, val_every=10))
    wait_finished(job)
    view = job.view()
    assert view.state == "failed"
    assert "diverged" in view.reason and "learning rate" in view.reason
    assert view.step == 12
    status = runs.read_json(job.run_dir / "status.json")
    assert status["state"] == "failed" and "diverged" in status["reason"]
    runs.load_model(job.run_dir)  # the step-10 checkpoint was kept and loads


@pytest.mark.integration
def test_a_data_error_in_the_worker_ends_failed_with_its_message(tmp_path):
    q = queue(tmp_path)
    job = q.submit("s", "no data", tiny(), DataConfig(name="folder", path=str(tmp_path / "missing.zip")), budget())
    wait_finished(job)
    assert job.state == "failed" and "does not exist" in job.view().reason
    assert runs.read_json(job.run_dir / "status.json")["state"] == "failed"
    nxt = q.submit("s", "next", tiny(), DATA, budget(steps=5))  # the trainer is free again
    wait_finished(nxt)
    assert nxt.state == "done"


@pytest.mark.integration
def test_each_job_has_its_own_folder_with_owner_and_title(tmp_path):
    q = queue(tmp_path, max_running=2)
    js = [q.submit(f"owner{i}", f"title {i}", tiny(), DATA, budget(steps=10)) for i in range(3)]
    wait_finished(*js)
    assert len({j.run_dir for j in js}) == 3 and len({j.id for j in js}) == 3
    for i, j in enumerate(js):
        meta = runs.read_json(j.run_dir / "config.json")
        assert (meta["owner"], meta["title"], meta["job"], meta["kind"]) == (f"owner{i}", f"title {i}", j.id, "vq")
        assert runs.read_metrics(j.run_dir) and j.view().best_psnr is not None
    listed = {info.id: info for info in runs.list_runs(tmp_path / "runs")}
    assert set(listed) == {j.id for j in js} and all(info.has_weights for info in listed.values())


@pytest.mark.integration
def test_views_are_copies(tmp_path):
    q = queue(tmp_path)
    job = q.submit("s", "copies", tiny(), DATA, budget(steps=10))
    wait_finished(job)
    view = job.view()
    view.train.clear()
    view.val[0]["psnr"] = -1.0
    view.knobs["lr"] = 1.0
    view.model_cfg.vq.k = 99
    again = job.view()
    assert len(again.train) == 10 and again.val[0]["psnr"] != -1.0
    assert again.knobs["lr"] == TrainConfig().lr and again.model_cfg.vq.k == 8


@pytest.mark.integration
def test_interrupted_runs_are_listed_after_a_restart(tmp_path):
    q = queue(tmp_path)
    job = q.submit("alice", "crashed mid-run", tiny(), DATA, budget(steps=10))
    wait_finished(job)
    status = runs.read_json(job.run_dir / "status.json")
    files.write_json(job.run_dir / "status.json", dict(status, state="running", step=7))  # killed while training
    waiting = runs.new_run_dir(tmp_path / "runs")
    files.write_json(waiting / "config.json", {"kind": "vq", "title": "never started", "owner": "bob"})
    files.write_json(waiting / "status.json", {"state": "queued", "step": 0})

    restarted = queue(tmp_path)
    found = {r.id: r for r in restarted.interrupted()}
    assert set(found) == {job.id, waiting.name}
    crashed = found[job.id]
    assert (crashed.title, crashed.owner, crashed.was, crashed.step, crashed.has_weights) == (
        "crashed mid-run", "alice", "running", 7, True)
    assert found[waiting.name].was == "queued" and not found[waiting.name].has_weights
    assert [r.id for r in restarted.interrupted("bob")] == [waiting.name]
    assert runs.read_json(job.run_dir / "status.json")["state"] == "interrupted"
    model, _ = runs.load_model(job.run_dir)
    assert model.codebook_sizes == [8]

    again = queue(tmp_path)  # a second restart still lists them, and remembers what they were doing
    assert {r.id: r.was for r in again.interrupted()} == {job.id: "running", waiting.name: "queued"}
    assert restarted.list_jobs() == []


def test_default_max_running_reads_the_environment(monkeypatch):
    monkeypatch.setenv("VQDEMO_MAX_JOBS", "3")
    assert jobs.default_max_running() == 3
    monkeypatch.setenv("VQDEMO_MAX_JOBS", "lots")
    assert jobs.default_max_running() == max(1, jobs.cpu_count() // 2)
    monkeypatch.delenv("VQDEMO_MAX_JOBS")
    assert JobQueue(runs_dir="unused", backend=ThreadBackend()).max_running == max(1, jobs.cpu_count() // 2)


@pytest.mark.integration
def test_a_prior_needs_trained_weights_and_a_broken_model_fails_with_a_reason(tmp_path):
    q = queue(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(JobError, match="no trained weights"):
        q.submit_prior("s", empty, empty / "prior")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / runs.WEIGHTS).write_bytes(b"not safetensors")
    job = q.submit_prior("s", broken, broken / "prior", seconds=5)
    wait_finished(job)
    assert job.state == "failed" and "safetensors" in job.view().reason


@pytest.mark.integration
def test_made_up_students_from_one_address_are_bounded(tmp_path, gate):
    """Hardening round 3, item 5: 45 sessions with made-up ids queued 41 runs; one address now has a bound."""
    q = queue(tmp_path, per_owner=2, per_address=3)
    for i in range(3):
        q.submit(f"made-up-{i}", "a", tiny(), DATA, budget(), address="10.0.0.9")
    with pytest.raises(JobError, match="from your network address"):
        q.submit("made-up-4", "b", tiny(), DATA, budget(), address="10.0.0.9")
    other = q.submit("a-real-student", "c", tiny(), DATA, budget(), address="10.0.0.7")
    local = [q.submit(f"on-this-machine-{i}", "d", tiny(), DATA, budget(), address=None) for i in range(4)]
    gate.open.set()
    for j in q.list_jobs():
        j.stop()
    wait_finished(*q.list_jobs())
    assert other.state in jobs.FINISHED and all(j.state in jobs.FINISHED for j in local)


@pytest.mark.integration
def test_the_teachers_runs_never_wait_behind_students(tmp_path, gate):
    q = queue(tmp_path, per_owner=20, max_running=1)
    students = [q.submit(f"s{i}", "s", tiny(), DATA, budget(), address=None) for i in range(5)]
    first, second = (q.submit("teacher", "t", tiny(), DATA, budget(), teacher=True) for _ in range(2))
    wait_for(lambda: first.step_count >= 1 or first.state != "queued", "the teacher's first run to start", 120)
    wait_for(lambda: second.state != "queued", "the teacher's second run to start", 120)
    assert [s.state for s in students[1:]] == ["queued"] * 4   # the students' one worker is still taken
    with pytest.raises(JobError, match="not yours"):
        first.check_control("s1")
    first.check_control("s1", teacher=True)
    gate.open.set()
    for j in q.list_jobs():
        j.stop()
    wait_finished(*q.list_jobs())


def test_a_second_server_on_the_same_runs_folder_is_refused(tmp_path):
    first = JobQueue(1, tmp_path / "runs", backend=ThreadBackend(), lock=True)
    with pytest.raises(run_store.RunsDirBusy, match="another vqdemo server"):
        JobQueue(1, tmp_path / "runs", backend=ThreadBackend(), lock=True)
    assert first.counts()["running"] == 0


def test_a_small_model_trains_on_one_thread_and_a_large_one_on_every_core(tmp_path):
    mnist = vqdemo.fit.model_config("vq", 1, 28)
    colour = vqdemo.fit.model_config("vq", 3, 32)
    assert vqdemo.fit.train_threads(mnist, 32, 2) == 1        # MNIST's default step: one thread is faster
    assert vqdemo.fit.train_threads(mnist, 128, 2) == 2
    assert vqdemo.fit.train_threads(colour, 32, 4) == 4
    auto = JobQueue(1, tmp_path / "auto", threads=None, backend=ThreadBackend())
    fixed = JobQueue(1, tmp_path / "fixed", threads=2, backend=ThreadBackend())
    try:
        for queue, want in ((auto, 1), (fixed, 2)):
            job = queue.submit("s", "t", mnist, DataConfig(name="digits"), TrainConfig(steps=100_000))
            assert job.view().train_cfg.threads == want
            job.stop()
    finally:
        auto.close()
        fixed.close()
