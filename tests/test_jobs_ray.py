"""The Ray backend against a real local head on 127.0.0.1 (token authentication on): a run trains and its files
come back to this machine's runs folder; a live K change applies and stop works; a killed Ray worker fails the
job with a clear reason and keeps the last checkpoint. The head is started here and only it is stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.test_jobs import DATA, budget, tiny, wait_finished, wait_for
from vqdemo import runs
from vqdemo.jobs import JobQueue
from vqdemo.models import VQVAE

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_queue(tmp_path_factory):
    from vqdemo.jobs.ray_head import local_head

    with local_head(num_cpus=2) as env:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)   # before ray is imported: it reads the token settings then
        import ray

        from vqdemo.jobs.ray_backend import RayBackend

        try:
            yield JobQueue(1, tmp_path_factory.mktemp("ray") / "runs", threads=1, backend=RayBackend())
        finally:
            ray.shutdown()
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_a_run_trains_on_ray_and_its_files_come_back(ray_queue):
    job = ray_queue.submit("s", "on ray", tiny(), DATA, budget(steps=30))
    wait_finished(job)
    assert job.state == "done", job.view().reason
    model, meta = runs.load_model(job.run_dir)
    assert isinstance(model, VQVAE) and meta["title"] == "on ray"
    assert runs.read_json(job.run_dir / "status.json")["state"] == "done"
    assert {r["step"] for r in runs.read_metrics(job.run_dir) if r["type"] == "val"} >= {1, 10, 30}


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


def test_a_killed_ray_worker_fails_the_job_and_keeps_the_checkpoint(ray_queue):
    import ray

    job = ray_queue.submit("s", "killed on ray", tiny(), DATA, budget(steps=100_000))
    wait_for(lambda: job.step_count >= 12 and (job.run_dir / runs.LAST).is_file(), "a checkpoint")
    pid = ray.get(job._handle.actor.pid.remote(), timeout=30)
    os.kill(pid, signal.SIGKILL)
    wait_finished(job)
    view = job.view()
    assert view.state == "failed" and "Ray worker" in view.reason and "kept" in view.reason
    runs.load_model(job.run_dir)
    assert runs.read_json(job.run_dir / "status.json")["state"] == "failed"


def test_the_cli_trains_on_ray_into_its_out_folder(ray_queue, tmp_path):
    import sys

    out = tmp_path / "cli-run"
    done = subprocess.run(
        [sys.executable, "-m", "vqdemo", "train", "--backend", "ray", "--dataset", "digits", "--hidden", "16",
         "--k", "8", "--dim", "4", "--steps", "20", "--batch-size", "16", "--val-every", "10", "--threads", "1",
         "--out", str(out)], capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "done" in done.stdout and (out / runs.WEIGHTS).is_file()
    assert runs.read_json(out / "status.json")["step"] == 20
