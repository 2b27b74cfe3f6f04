"""Jobs in real worker processes (the app's default backend): a run trains, its controls reach the process,
its files are written by the app side and load; a worker killed mid-run fails the job with a reason and keeps
the last checkpoint; a prior trains as a job; a named computation returns its result.
"""

from __future__ import annotations

import os
import signal

import pytest
from thread_backend import ThreadBackend

from tests.test_jobs import DATA, budget, tiny, wait_finished, wait_for
from vqdemo import jobs, runs
from vqdemo.jobs import JobQueue, worker
from vqdemo.jobs.local import LocalBackend
from vqdemo.models import VQVAE
from vqdemo.prior import PRIOR_DIR

pytestmark = pytest.mark.integration


@pytest.fixture
def local_queue(tmp_path):
    q = JobQueue(1, tmp_path / "runs", threads=1, backend=LocalBackend())
    yield q
    q.close()


def test_a_run_trains_in_a_worker_process_and_obeys_its_controls(local_queue):
    job = local_queue.submit("s", "in a process K=8", tiny(k=8), DATA, budget(steps=100_000))
    wait_for(lambda: job.view().val, "the first validation (at step 1)")
    handle = job._handle
    assert handle is not None and handle.proc.pid != os.getpid() and handle.alive()
    job.pause()
    held = wait_for(lambda: job.view().paused_at, "the loop to hold")
    job.set(k=16)
    job.step(1)
    wait_for(lambda: job.view().paused_at == held + 1, "one more step")
    view = job.view()
    assert view.knobs["k"] == 16 and view.title == "in a process K=16"
    job.stop()
    assert job.state == "stopping"
    wait_finished(job)
    assert job.state == "stopped" and not handle.alive()
    model, meta = runs.load_model(job.run_dir, runs.LAST)
    assert isinstance(model, VQVAE) and model.codebook_sizes == [16]
    assert runs.read_json(job.run_dir / "config.json")["title"] == "in a process K=16"
    assert runs.read_json(job.run_dir / "status.json")["state"] == "stopped"
    assert [r["step"] for r in runs.read_metrics(job.run_dir) if r["type"] == "val"][0] == 1


def test_a_killed_worker_fails_the_job_and_keeps_the_last_checkpoint(local_queue):
    job = local_queue.submit("s", "killed", tiny(), DATA, budget(steps=100_000))
    wait_for(lambda: job.step_count >= 12 and (job.run_dir / runs.LAST).is_file(), "a checkpoint")
    os.kill(job._handle.proc.pid, signal.SIGKILL)
    wait_finished(job)
    view = job.view()
    assert view.state == "failed" and "killed" in view.reason and "kept" in view.reason
    status = runs.read_json(job.run_dir / "status.json")
    assert status["state"] == "failed" and status["step"] >= 10
    runs.load_model(job.run_dir)
    nxt = local_queue.submit("s", "next", tiny(), DATA, budget(steps=5))   # the queue goes on
    wait_finished(nxt)
    assert nxt.state == "done"


def test_a_prior_trains_as_a_job_into_its_own_folder(tmp_path, local_queue):
    ae = local_queue.submit("s", "autoencoder", tiny(), DATA, budget(steps=20))
    wait_finished(ae)
    out = tmp_path / "priors" / ae.id
    job = local_queue.submit_prior("s", ae.run_dir, out, seconds=3, seed=0)
    assert local_queue.submit_prior("s", ae.run_dir, out, seconds=3) is job   # the same prior is not queued twice
    wait_finished(job)
    view = job.view()
    assert view.state == "done", view.reason
    assert view.val and "bits_per_code" in view.val[-1]
    assert (out / runs.WEIGHTS).is_file() and not (ae.run_dir / PRIOR_DIR).exists()
    _, meta = runs.read_weights(out / runs.WEIGHTS)
    assert meta["role"] == "prior"


def test_a_computation_runs_once_per_key_and_keeps_its_result(tmp_path, monkeypatch):
    calls = []

    def double(x):
        calls.append(x)
        return 2 * x

    monkeypatch.setitem(worker.CALLS, "double", double)
    q = JobQueue(1, tmp_path / "runs", threads=1, backend=ThreadBackend())
    a = q.compute(("double", 21), "double", 21)
    assert q.compute(("double", 21), "double", 21) is a
    wait_finished(a)
    assert a.state == "done" and a.result == 42 and calls == [21]
    boom = q.compute("boom", "double", None)
    wait_finished(boom)
    assert boom.state == "failed" and "TypeError" in boom.view().reason
    assert q.keyed(("double", 21)) is a and not q.list_jobs()


def test_the_backend_is_chosen_by_the_environment(monkeypatch):
    monkeypatch.setenv("VQDEMO_BACKEND", "thread")
    assert isinstance(jobs.make_backend(), ThreadBackend)
    monkeypatch.setenv("VQDEMO_BACKEND", "carrier-pigeon")
    with pytest.raises(jobs.JobError, match="local or ray"):
        jobs.make_backend()
