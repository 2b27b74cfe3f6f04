"""The Ray backend against a real local head on 127.0.0.1 (token authentication on): a run trains and its files
come back to this machine's runs folder (and the test process, the web side, never imports Ray); a run that ends
leaves its actor, with a warm worker, to the next run; a live K change applies and stop works; a killed Ray worker
fails the job with a clear reason and keeps the last checkpoint. The head is started here and only it is stopped.
tests/test_ray_cluster.py covers a lost head, a wrong address, an open cluster and the README's commands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.test_jobs import DATA, budget, tiny, wait_finished, wait_for
from vqdemo import runs
from vqdemo.jobs import JobQueue
from vqdemo.models import VQVAE

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def head():
    from vqdemo.jobs.ray_head import local_head

    with local_head(num_cpus=2) as h:
        saved = {k: os.environ.get(k) for k in h.env}
        os.environ.update(h.env)   # the driver process and the CLI read the address and token from here
        try:
            yield h
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def ray_queue(head, tmp_path_factory):
    from vqdemo.jobs.ray_backend import RayBackend

    q = JobQueue(1, tmp_path_factory.mktemp("ray") / "runs", threads=1, backend=RayBackend())
    yield q
    q.close()


def test_a_run_trains_on_ray_and_its_files_come_back(ray_queue):
    job = ray_queue.submit("s", "on ray", tiny(), DATA, budget(steps=30))
    wait_finished(job)
    assert job.state == "done", job.view().reason
    model, meta = runs.load_model(job.run_dir)
    assert isinstance(model, VQVAE) and meta["title"] == "on ray"
    assert runs.read_json(job.run_dir / "status.json")["state"] == "done"
    assert {r["step"] for r in runs.read_metrics(job.run_dir) if r["type"] == "val"} >= {1, 10, 30}
    assert "ray" not in sys.modules   # the web side never is a Ray driver: a lost head cannot end its process


def test_a_finished_run_leaves_its_actor_warm_for_the_next_run(ray_queue, head):
    first = ray_queue.submit("s", "first on ray", tiny(), DATA, budget(steps=5))
    wait_finished(first)
    kept = head.actor_pids()
    second = ray_queue.submit("s", "second on ray", tiny(), DATA, budget(steps=5))
    wait_finished(second)
    assert (first.state, second.state) == ("done", "done"), second.view().reason
    assert len(kept) == 1 and head.actor_pids() == kept   # one Ray worker process served both runs


def test_live_k_and_stop_reach_a_ray_worker(ray_queue):
    job = ray_queue.submit("s", "knobs on ray K=8", tiny(k=8), DATA, budget(steps=100_000))
    wait_for(lambda: job.step_count >= 3, "a few steps")
    job.set(k=16, beta=0.5)
    wait_for(lambda: job.view().knobs.get("k") == 16, "K to change")
    job.stop()
    wait_finished(job)
    assert job.state == "stopped"
    model, _ = runs.load_model(job.run_dir, runs.LAST)
    assert model.codebook_sizes == [16]
    assert runs.read_json(job.run_dir / "config.json")["title"] == "knobs on ray K=16"


def test_a_killed_ray_worker_fails_the_job_and_keeps_the_checkpoint(ray_queue, head):
    job = ray_queue.submit("s", "killed on ray", tiny(), DATA, budget(steps=100_000))
    wait_for(lambda: job.step_count >= 12 and (job.run_dir / runs.LAST).is_file(), "a checkpoint")
    pids = head.actor_pids()
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    wait_finished(job)
    view = job.view()
    assert view.state == "failed" and "Ray worker" in view.reason and "kept" in view.reason
    runs.load_model(job.run_dir)
    assert runs.read_json(job.run_dir / "status.json")["state"] == "failed"


def test_the_cli_trains_on_ray_into_its_out_folder(head, tmp_path):
    out = tmp_path / "cli-run"
    done = subprocess.run(
        [sys.executable, "-m", "vqdemo", "train", "--backend", "ray", "--dataset", "digits", "--hidden", "16",
         "--k", "8", "--dim", "4", "--steps", "20", "--batch-size", "16", "--val-every", "10", "--threads", "1",
         "--out", str(out)], capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "done" in done.stdout and (out / runs.WEIGHTS).is_file()
    assert runs.read_json(out / "status.json")["step"] == 20
