"""A throwaway Ray head on 127.0.0.1, for tests and benchmarks of the Ray backend.

Driven through Ray's own CLI, so this module does not import ray: clients must see the token settings it yields
before they import ray.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]   # Ray's `ray` command, whether or not it is on PATH


@contextlib.contextmanager
def local_head(num_cpus: int = 2, start_timeout_s: float = 120.0) -> Iterator[dict[str, str]]:
    """A Ray head on 127.0.0.1 for tests and benchmarks, with token authentication on and a fresh token; yields the
    environment (RAY_ADDRESS, RAY_AUTH_MODE, RAY_AUTH_TOKEN) that clients need. On exit it stops this head and only
    it (its own process group), never other Ray processes on the machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    temp = tempfile.mkdtemp(prefix="vqray-", dir="/tmp")   # Ray's socket paths must stay short
    log = open(os.path.join(temp, "head.log"), "wb")  # noqa: SIM115 - the log lives as long as the head
    head = subprocess.Popen(
        [*RAY_CLI, "start", "--head", "--num-cpus", str(num_cpus), "--port", str(port),
         "--node-ip-address", "127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
         "--temp-dir", temp, "--block"],
        env={**os.environ, **env, "RAY_USAGE_STATS_ENABLED": "0"}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout_s
        while subprocess.run([*RAY_CLI, "status", "--address", env["RAY_ADDRESS"]], env={**os.environ, **env},
                             capture_output=True).returncode != 0:
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not come up: {open(log.name).read()[-1500:]}")  # noqa: SIM115
            time.sleep(1.0)
        yield env
    finally:
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
