"""The app and its Ray cluster, against real local heads on 127.0.0.1 started (and only they stopped) here:
a head killed for real fails its run with a reason, the web side goes on and reconnects when the head is back;
a wrong RAY_ADDRESS fails a run with a message and pages still load; a cluster that lets anyone in is refused;
the README's Ray commands, run as written, make a cluster that requires a token and that the app uses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import REPO, open_page, wait_for
from tests.test_jobs import DATA, budget, tiny
from vqdemo import runs
from vqdemo.jobs import FINISHED, JobQueue, ray_backend
from vqdemo.jobs.ray_backend import RayBackend
from vqdemo.jobs.ray_head import RAY_CLI, free_port, kill_session, local_head, start_head

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEADLINE_S = 300.0   # generous: a Ray head and a driver process start on two shared, loaded cores


def finished(job, timeout: float = DEADLINE_S):
    wait_for(lambda: job.state in FINISHED, f"{job.title} to finish", timeout=timeout, every=0.2)
    return job.view()


def use_cluster(monkeypatch, env: dict[str, str]) -> None:
    """The web side's environment, as a teacher would set it (the driver process inherits it)."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_a_lost_head_fails_its_run_and_the_app_reconnects_when_it_returns(tmp_path, monkeypatch):
    monkeypatch.setattr(ray_backend, "RETRY_S", 0.0)   # retry at once once the head is back
    head = start_head(num_cpus=2)
    try:
        use_cluster(monkeypatch, head.env)
        backend = RayBackend()
        q = JobQueue(1, tmp_path / "runs", threads=1, backend=backend)
        job = q.submit("s", "head killed", tiny(), DATA, budget(steps=10**6))
        wait_for(lambda: job.step_count >= 12 and (job.run_dir / runs.LAST).is_file(), "a checkpoint",
                 timeout=DEADLINE_S)
        head.kill()   # every process of the head, SIGKILL
        view = finished(job)
        assert view.state == "failed" and "Ray" in view.reason and "kept" in view.reason, view.reason
        runs.load_model(job.run_dir, runs.LAST)
        assert "stopped answering" in wait_for(backend.problem, "the app to notice the head has gone",
                                               timeout=DEADLINE_S)
        down = q.submit("s", "while the head is down", tiny(), DATA, budget(steps=5))
        view = finished(down)
        assert view.state == "failed" and "nothing answers" in view.reason, view.reason
        assert q.counts()["running"] == 0 and "ray" not in sys.modules   # the web side is alive and no driver

        with local_head(num_cpus=2, port=head.port, token=head.token):   # the same head, back
            try:
                view = finished(q.submit("s", "after the head came back", tiny(), DATA, budget(steps=5)))
                assert view.state == "done", view.reason
            finally:
                q.close()
    finally:
        head.stop()


def test_a_wrong_address_fails_a_run_with_a_message_and_pages_still_load(tmp_path, monkeypatch):
    address = f"127.0.0.1:{free_port()}"   # nothing listens there
    use_cluster(monkeypatch, {"RAY_ADDRESS": address, "RAY_AUTH_TOKEN": "0" * 32, "VQDEMO_BACKEND": "ray"})
    q = JobQueue(1, tmp_path / "runs", threads=1)   # returns at once: the driver connects in its own process
    try:
        view = finished(q.submit("s", "wrong address", tiny(), DATA, budget(steps=5)))
        assert view.state == "failed" and f"nothing answers at RAY_ADDRESS={address}" in view.reason, view.reason
        assert "RAY_ADDRESS" in wait_for(q.backend.problem, "the driver process to refuse too", timeout=DEADLINE_S)
    finally:
        q.close()
    for page in (None, "train", "codebook"):   # Learn (the default page) and two pages that use the queue
        at = open_page(page, {"model": "shipped:mnist-vq"})
        assert not at.exception


def test_a_cluster_that_lets_anyone_in_is_refused(tmp_path, monkeypatch):
    with local_head(num_cpus=1, auth=False) as head:
        use_cluster(monkeypatch, head.env)   # this machine has a token; the cluster does not ask for one
        q = JobQueue(1, tmp_path / "runs", threads=1, backend=RayBackend())
        try:
            view = finished(q.submit("s", "open cluster", tiny(), DATA, budget(steps=5)))
        finally:
            q.close()
    assert view.state == "failed" and "does not require a token" in view.reason, view.reason
    assert not (tmp_path / "runs" / view.id / runs.WEIGHTS).exists()


def readme_ray_commands() -> list[str]:
    """The commands of the README's Ray cluster section, comments dropped."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("**A Ray cluster"):]
    block = section[section.index("```bash") + len("```bash"):section.index("```", section.index("```bash") + 7)]
    return [line.split("  #")[0].strip() for line in block.strip().splitlines() if line.strip()]


def test_the_readme_ray_commands_run_as_written_and_require_a_token(tmp_path, monkeypatch):
    """Every line as written; only HEAD-IP, the port and =TOKEN are filled in (a free port on 127.0.0.1 and the token
    the first line printed), the web server binds 127.0.0.1, and Ray's files go to a home and temp dir of the
    test's own."""
    commands = readme_ray_commands()
    assert len(commands) == 4 and commands[0].startswith("ray get-auth-token")
    port, web_port = free_port(), free_port()
    home, temp = tmp_path / "home", Path(f"/tmp/vqr-{os.getpid()}")   # Ray's socket paths must stay short
    home.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VQDEMO_BACKEND"))}
    env = {**clean, "HOME": str(home), "RAY_TMPDIR": str(temp), "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{clean.get('PATH', '')}",
           "VQDEMO_RUNS_DIR": str(tmp_path / "runs")}

    def fill(line: str, token: str = "") -> str:
        return line.replace("HEAD-IP", "127.0.0.1").replace("6379", str(port)).replace("=TOKEN", f"={token}")

    made = subprocess.run(fill(commands[0]), shell=True, env=env, capture_output=True, text=True, timeout=120)
    token = made.stdout.strip()
    assert made.returncode == 0 and re.fullmatch(r"[0-9a-f]{32,}", token), made.stderr
    assert (home / ".ray" / "auth_token").read_text().strip() == token
    cluster = subprocess.Popen(["bash", "-c", f"set -e; {fill(commands[1])}; {fill(commands[2], token)}"], env=env,
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)   # every Ray process of these commands is in this session
    web = None
    try:
        out, _ = cluster.communicate(timeout=DEADLINE_S)
        assert cluster.returncode == 0, out[-3000:]
        assert "Token authentication is disabled" not in out
        probe = subprocess.run([sys.executable, str(REPO / "vqdemo" / "jobs" / "ray_probe.py"), f"127.0.0.1:{port}"],
                               env={**env, "RAY_AUTH_MODE": "disabled", "HOME": str(tmp_path)}, capture_output=True,
                               text=True, timeout=120)
        assert probe.returncode == 3, probe.stderr   # a client without the token is refused
        seen: list[str] = []

        def both_nodes() -> bool:   # the head reports "No cluster status" for a few seconds after it starts
            status = subprocess.run([*RAY_CLI, "status", "--address", f"127.0.0.1:{port}"],
                                    env={**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token},
                                    capture_output=True, text=True, timeout=120)
            seen[:] = [status.stdout[-2000:] + status.stderr[-1000:]]
            return status.returncode == 0 and status.stdout.count("node_") >= 2

        try:
            wait_for(both_nodes, "ray status to list both nodes", timeout=DEADLINE_S, every=2.0)
        except AssertionError as e:
            raise AssertionError(f"{e}; it last said: {seen}") from None

        serve = fill(commands[3], token).replace("0.0.0.0", "127.0.0.1") + (
            f" --server.port {web_port} --server.headless true --browser.gatherUsageStats false"
            " --server.fileWatcherType none")
        web = subprocess.Popen(["bash", "-c", serve], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: _health(web_port), "the web server to answer", timeout=DEADLINE_S, every=1.0)

        assigned = dict(re.findall(r"(\w+)=(\S+)", fill(commands[3], token).split("streamlit")[0]))
        use_cluster(monkeypatch, assigned | {"HOME": str(home)})
        q = JobQueue(1, tmp_path / "runs-here", threads=1)   # the app's queue, with the line's environment
        try:
            view = finished(q.submit("s", "on the README's cluster", tiny(), DATA, budget(steps=5)))
            assert view.state == "done", view.reason
        finally:
            q.close()
        monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * len(token))   # a wrong token is refused at once, by name
        q = JobQueue(1, tmp_path / "runs-wrong-token", threads=1)
        try:
            view = finished(q.submit("s", "wrong token", tiny(), DATA, budget(steps=5)))
            assert view.state == "failed" and "refused the token here" in view.reason, view.reason
        finally:
            q.close()
    finally:
        if web is not None:
            kill_session(web.pid)   # the web server and its Ray driver process
        kill_session(cluster.pid)
        subprocess.run(["rm", "-rf", str(temp)], check=False)


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as r:
            return r.read() == b"ok"
    except OSError:
        time.sleep(0.5)
        return False
