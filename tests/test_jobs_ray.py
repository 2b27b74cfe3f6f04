"""The Ray backend against a real local head on 127.0.0.1 (token authentication on): a run trains and its files
come back to this machine's runs folder; a live K change applies and stop works; a killed Ray worker fails the
job with a clear reason and keeps the last checkpoint. The head is started here and only it is stopped.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from tests.test_jobs import DATA, budget, tiny, wait_finished, wait_for
from vqdemo import runs
from vqdemo.jobs import JobQueue
from vqdemo.models import VQVAE

pytestmark = [pytest.mark.integration, pytest.mark.slow]
HEAD_START_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_queue(tmp_path_factory):
    port = free_port()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    temp = tempfile.mkdtemp(prefix="vqray-", dir="/tmp")   # Ray's socket paths must stay short
    log = open(os.path.join(temp, "head.log"), "wb")
    head = subprocess.Popen(
        ["ray", "start", "--head", "--num-cpus", "2", "--port", str(port), "--node-ip-address", "127.0.0.1",
         "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", temp, "--block"],
        env={**os.environ, **auth, "RAY_USAGE_STATS_ENABLED": "0"}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)   # its own process group: the teardown stops this head and nothing else
    saved = {k: os.environ.get(k) for k in [*auth, "RAY_ADDRESS"]}
    os.environ.update(auth, RAY_ADDRESS=f"127.0.0.1:{port}")   # before ray is imported: it reads them then
    import ray

    from vqdemo.jobs.ray_backend import RayBackend

    try:
        deadline = time.monotonic() + HEAD_START_S
        backend = None
        while backend is None:
            assert head.poll() is None, open(log.name).read()[-2000:]
            try:
                backend = RayBackend()
            except (ConnectionError, RuntimeError, ValueError):
                ray.shutdown()
                assert time.monotonic() < deadline, "the Ray head did not come up"
                time.sleep(1.0)
        queue = JobQueue(1, tmp_path_factory.mktemp("ray") / "runs", threads=1, backend=backend)
        yield queue
    finally:
        ray.shutdown()
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(head.pid, sig)
                head.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
        log.close()
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
