"""The default backend: each running job in its own worker process on this machine.

Each worker is a fresh interpreter, `python -m vqdemo.jobs FD` (no copy of the web server's threads or
locks, its own torch and thread count, its own OpenMP set-up made before torch loads). Not multiprocessing's
"spawn": that re-runs the parent's main script in the child, and under `streamlit run` the main script is app.py.
Warm spares wait with torch already imported, so a student's run starts training in well under a second
instead of after an import. A socket pair carries the messages of `worker.py` (multiprocessing's Connection
framing); if the app dies, the worker sees the socket close and stops.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path

from . import worker

PACKAGE_ROOT = Path(__file__).resolve().parents[2]   # the folder that holds vqdemo/, for the worker's imports


class Channel:
    """Messages over a socket with plain pickle. Not Connection.send: with torch loaded that shares tensors through
    file descriptors and a handshake keyed to multiprocessing's own children, which these workers are not."""

    def __init__(self, conn: Connection):
        self._conn = conn

    def send(self, msg: worker.Message) -> None:
        self._conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))

    def recv(self) -> worker.Message:
        return pickle.loads(self._conn.recv_bytes())

    def poll(self, timeout: float) -> bool:
        return self._conn.poll(timeout)

    def close(self) -> None:
        self._conn.close()


class LocalHandle:
    """One running job's process and pipe, as the queue sees it."""

    def __init__(self, proc: subprocess.Popen, conn: Channel):
        self.proc = proc
        self._conn = conn

    def send(self, msg: worker.Message) -> None:
        try:
            self._conn.send(msg)
        except (OSError, EOFError):
            pass   # the worker has gone; poll() reports why

    def poll(self, timeout: float) -> list[worker.Message]:
        """Every message waiting now (after up to `timeout` s for the first); [] once the process is gone."""
        out: list[worker.Message] = []
        try:
            if self._conn.poll(timeout):
                while self._conn.poll(0) and len(out) < 1000:
                    out.append(self._conn.recv())
        except (EOFError, OSError):
            pass
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def death(self) -> str:
        """Why the process ended without saying goodbye."""
        try:
            code = self.proc.wait(1)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and code < 0:
            return f"the worker process was killed (signal {-code}); checkpoints saved before that are kept"
        return f"the worker process ended unexpectedly (exit code {code}); checkpoints saved before that are kept"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._conn.close()


class LocalBackend:
    """Starts jobs in spawned processes, keeping `spares` warm (thread-safe): two by default, so the teacher's pair
    of runs starts at once, both without waiting for torch to import."""

    name = "local"

    def __init__(self, spares: int = 2):
        self._wanted = spares
        self._lock = threading.Lock()
        self._spares: list[LocalHandle] = []
        if spares:
            self._warm()

    def _spawn(self) -> LocalHandle:
        ours, theirs = socket.socketpair()
        path = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        proc = subprocess.Popen([sys.executable, "-m", "vqdemo.jobs", str(theirs.fileno())],
                                pass_fds=[theirs.fileno()], env={**os.environ, "PYTHONPATH": path},
                                stdin=subprocess.DEVNULL)
        theirs.close()
        return LocalHandle(proc, Channel(Connection(ours.detach())))

    def _warm(self) -> None:
        with self._lock:
            self._spares = [h for h in self._spares if h.alive()]
            while len(self._spares) < self._wanted:
                self._spares.append(self._spawn())

    def start(self, spec: worker.JobSpec) -> LocalHandle:
        with self._lock:
            handle = self._spares.pop(0) if self._spares else None
        if handle is None or not handle.alive():
            handle = self._spawn()
        handle.send(spec)
        if self._wanted:
            threading.Thread(target=self._warm, daemon=True, name="vqdemo-spare").start()
        return handle

    def close(self) -> None:
        with self._lock:
            spares, self._spares = self._spares, []
        for spare in spares:
            spare.kill()
