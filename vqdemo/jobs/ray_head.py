"""A throwaway Ray head on 127.0.0.1, for tests and benchmarks of the Ray backend.

Driven through Ray's own CLI, so this module does not import ray: clients must see the token settings it gives
before they import ray. Each head runs in a session of its own (`start_new_session`), and only that session's
processes are ever signalled: other Ray heads on the machine (another developer's, a class's) are never touched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]   # Ray's `ray` command, whether or not it is on PATH


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Every process of one session (a head's processes, the Ray workers it started in groups of their own)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
    return pids


def kill_session(sid: int, term_wait_s: float = 10.0) -> None:
    """SIGTERM every process of one session, SIGKILL what is left after `term_wait_s` (Ray's gcs_server and raylet
    can ignore SIGTERM; 0: SIGKILL at once); returns when none is left."""
    for sig, wait in ((signal.SIGTERM, term_wait_s), (signal.SIGKILL, 30.0))[0 if term_wait_s > 0 else 1:]:
        for pid in session_pids(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not session_pids(sid):
            return


@dataclass
class Head:
    """A running head: `env` is what its clients need (RAY_ADDRESS, RAY_AUTH_MODE, RAY_AUTH_TOKEN)."""

    env: dict[str, str]
    port: int
    token: str
    proc: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """Kill every process of this head at once (SIGKILL), as a crashed machine would go."""
        kill_session(self.proc.pid, term_wait_s=0.0)
        self.proc.wait(30)

    def stop(self) -> None:
        """Stop this head's processes and remove its temp folder (logs, sockets, session files)."""
        kill_session(self.proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        shutil.rmtree(self.log.parent, ignore_errors=True)


def start_head(num_cpus: int = 2, port: int | None = None, token: str | None = None, auth: bool = True,
               start_timeout_s: float = 120.0, prefix: Sequence[str] = ()) -> Head:
    """A Ray head on 127.0.0.1 (`--block`, in a session of its own), ready when this returns. With `auth` (the
    default) token authentication is on with `token` (a fresh one if None); without it the head lets anyone in,
    which the app must refuse (clients still get a token in `env`, so that is what they are refused for).
    `prefix` goes before the command, e.g. `taskset -c 1` to keep the head off the web server's core."""
    port = port or free_port()
    token = token or secrets.token_hex(16)
    env = {"RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    temp = Path(tempfile.mkdtemp(prefix="vqray-", dir="/tmp"))   # Ray's socket paths must stay short
    head_env = {**os.environ, **env, "RAY_USAGE_STATS_ENABLED": "0"}
    if not auth:   # and no token file either: a home of its own
        head_env = {k: v for k, v in head_env.items() if not k.startswith("RAY_AUTH")}
        head_env |= {"RAY_AUTH_MODE": "disabled", "HOME": str(temp)}
    log = temp / "head.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*prefix, *RAY_CLI, "start", "--head", "--num-cpus", str(num_cpus), "--port", str(port),
             "--node-ip-address", "127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
             "--temp-dir", str(temp), "--block"],
            env=head_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    head = Head(env, port, token, proc, log)
    try:
        deadline = time.monotonic() + start_timeout_s
        while subprocess.run([*RAY_CLI, "status", "--address", env["RAY_ADDRESS"]], env=head_env,
                             capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not come up: {log.read_text(errors='replace')[-1500:]}")
            time.sleep(1.0)
    except BaseException:
        head.stop()
        raise
    return head


def node_count(head: Head) -> int:
    """How many nodes `ray status` lists as alive on this head's cluster (0 while it cannot say)."""
    status = subprocess.run([*RAY_CLI, "status", "--address", head.env["RAY_ADDRESS"]], env={**os.environ, **head.env},
                            capture_output=True, text=True)
    active = status.stdout.split("Pending:")[0] if status.returncode == 0 else ""
    return active.count("node_")


def start_node(head: Head, num_cpus: int, prefix: Sequence[str] = (), start_timeout_s: float = 120.0) -> Head:
    """A worker node joining `head` from 127.0.0.1, as a second machine would (`--block`, a session and a temp folder
    of its own, the head's token), ready when `ray status` lists it. Stop it with its own `stop()`."""
    before = max(1, node_count(head))   # the head is a node, listed a few seconds after it starts
    temp = Path(tempfile.mkdtemp(prefix="vqnode-", dir="/tmp"))
    log = temp / "node.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*prefix, *RAY_CLI, "start", "--address", head.env["RAY_ADDRESS"], "--num-cpus", str(num_cpus),
             "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--temp-dir", str(temp), "--block"],
            env={**os.environ, **head.env, "RAY_USAGE_STATS_ENABLED": "0"}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    node = Head(head.env, head.port, head.token, proc, log)
    try:
        deadline = time.monotonic() + start_timeout_s
        while node_count(head) <= before:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray node did not join: {log.read_text(errors='replace')[-1500:]}")
            time.sleep(1.0)
    except BaseException:
        node.stop()
        raise
    return node


@contextlib.contextmanager
def local_head(num_cpus: int = 2, **kw) -> Iterator[Head]:
    """`start_head(...)` for the length of a with-block; on exit it stops this head and only it."""
    head = start_head(num_cpus, **kw)
    try:
        yield head
    finally:
        head.stop()
