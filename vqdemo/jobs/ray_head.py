"""A throwaway Ray head on 127.0.0.1, and worker nodes that join it, for tests and benchmarks of the Ray backend.

Driven through Ray's own CLI, so this module does not import ray: clients must see the token settings it gives
before they import ray. Each head and each node runs in a session of its own (`start_new_session`), and only that
session's processes are ever signalled: other Ray heads on the machine (another developer's, a class's) are never
touched, and killing one node's session is a machine of a real cluster going down.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]   # Ray's `ray` command, whether or not it is on PATH


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free now (all held open together while picked, so none repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def session_pids(sid: int) -> list[int]:
    """Every live process of one session (a head's processes, the Ray workers it started in groups of their own);
    zombies are dead already (the `ray start` that this process has yet to wait for is one)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]   # the field after (name)
                if os.getsid(int(entry.name)) == sid and state != "Z":
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
class Node:
    """One `ray start --block` (a head or a worker node) and every process it started, in its own session."""

    proc: subprocess.Popen
    log: Path

    def pids(self) -> list[int]:
        return session_pids(self.proc.pid)

    def actor_pids(self, actor: str = "JobActor") -> list[int]:
        """The processes of this node that hold an actor of class `actor` (Ray names them `ray::CLASS`)."""
        prefix = f"ray::{actor}".encode()
        found = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(prefix):
                    found.append(pid)
        return found

    def kill(self) -> None:
        """Kill every process of this node at once (SIGKILL), as a crashed machine would go."""
        kill_session(self.proc.pid, term_wait_s=0.0)
        self.proc.wait(30)

    def stop(self) -> None:
        """Stop this node's processes and remove its temp folder (logs, sockets, session files)."""
        kill_session(self.proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        shutil.rmtree(self.log.parent, ignore_errors=True)


@dataclass
class Head(Node):
    """A running head: `env` is what its clients need (RAY_ADDRESS, RAY_AUTH_MODE, RAY_AUTH_TOKEN)."""

    env: dict[str, str]
    port: int
    token: str


def _ray_start(args: list[str], env: dict[str, str], temp: Path, name: str) -> tuple[subprocess.Popen, Path]:
    """`ray start ARGS --block` in a session of its own, its Ray files in `temp`, its output in temp/NAME.log."""
    log = temp / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*RAY_CLI, "start", *args, "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
             "--temp-dir", str(temp), "--block"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def start_head(num_cpus: int = 2, port: int | None = None, token: str | None = None, auth: bool = True,
               start_timeout_s: float = 120.0) -> Head:
    """A Ray head on 127.0.0.1 (`--block`, in a session of its own), ready when this returns. With `auth` (the
    default) token authentication is on with `token` (a fresh one if None); without it the head lets anyone in,
    which the app must refuse (clients still get a token in `env`, so that is what they are refused for)."""
    port = port or free_port()
    token = token or secrets.token_hex(16)
    env = {"RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    temp = Path(tempfile.mkdtemp(prefix="vqray-", dir="/tmp"))   # Ray's socket paths must stay short
    head_env = {**os.environ, **env, "RAY_USAGE_STATS_ENABLED": "0"}
    if not auth:   # and no token file either: a home of its own
        head_env = {k: v for k, v in head_env.items() if not k.startswith("RAY_AUTH")}
        head_env |= {"RAY_AUTH_MODE": "disabled", "HOME": str(temp)}
    proc, log = _ray_start(["--head", "--num-cpus", str(num_cpus), "--port", str(port),
                            "--include-dashboard=false"], head_env, temp, "head")
    head = Head(proc=proc, log=log, env=env, port=port, token=token)
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


def start_node(head: Head, num_cpus: int = 1) -> Node:
    """A worker node on 127.0.0.1 that joins `head` with its token, as `ray start --address` on another machine
    would. Every port Ray would otherwise take by default (the same on every node of one host) is a free one of its
    own, and its files go to a temp dir of its own. Returns at once: `wait_nodes` says when it has joined."""
    temp = Path(tempfile.mkdtemp(prefix="vqnode-", dir="/tmp"))
    names = ("node-manager-port", "object-manager-port", "metrics-export-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "runtime-env-agent-port")
    ports = [f"--{name}={port}" for name, port in zip(names, free_ports(len(names)), strict=True)]
    proc, log = _ray_start(["--address", head.env["RAY_ADDRESS"], "--num-cpus", str(num_cpus), *ports],
                           {**os.environ, **head.env, "RAY_USAGE_STATS_ENABLED": "0"}, temp, "node")
    return Node(proc=proc, log=log)


def wait_nodes(head: Head, nodes: list[Node], timeout_s: float = 180.0) -> str:
    """Until `ray status` lists the head and every one of `nodes` as live; returns what it last said. Fails at once,
    with its output, if a node's `ray start` ends."""
    deadline = time.monotonic() + timeout_s
    count, said = 1 + len(nodes), ""
    while time.monotonic() < deadline:
        for node in nodes:
            if node.proc.poll() is not None:
                raise RuntimeError(f"a Ray worker node ended: {node.log.read_text(errors='replace')[-1500:]}")
        try:
            status = subprocess.run([*RAY_CLI, "status", "--address", head.env["RAY_ADDRESS"]],
                                    env={**os.environ, **head.env}, capture_output=True, text=True,
                                    timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            break
        said = status.stdout + status.stderr
        active = said.split("Active:")[-1].split("Pending:")[0] if "Active:" in said else ""
        if status.returncode == 0 and active.count("node_") == count:
            return said
        time.sleep(1.0)
    logs = [f"{len(n.pids())} processes, {n.log.read_text(errors='replace')[-600:]}" for n in nodes]
    raise RuntimeError(f"the Ray cluster did not reach {count} nodes within {timeout_s:.0f} s: {said[-800:]}; "
                       f"its worker nodes: {logs}")


@contextlib.contextmanager
def local_head(num_cpus: int = 2, **kw) -> Iterator[Head]:
    """`start_head(...)` for the length of a with-block; on exit it stops this head and only it."""
    head = start_head(num_cpus, **kw)
    try:
        yield head
    finally:
        head.stop()
