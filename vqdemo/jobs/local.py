"""The default backend: each running job in its own worker process on this machine.

Processes are started with multiprocessing's "spawn" (a fresh interpreter: no copy of the web server's threads or
locks, its own torch and thread count, its own OpenMP set-up made before torch loads). One warm spare waits with
torch already imported, so a student's run starts training in well under a second instead of after an import.
A duplex pipe carries the messages of `worker.py`; if the app dies, the worker sees the pipe close and stops.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
from multiprocessing.connection import Connection

from . import worker

_ctx = mp.get_context("spawn")


class LocalHandle:
    """One running job's process and pipe, as the queue sees it."""

    def __init__(self, proc: mp.process.BaseProcess, conn: Connection):
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
        return self.proc.is_alive()

    def death(self) -> str:
        """Why the process ended without saying goodbye."""
        self.proc.join(1)
        code = self.proc.exitcode
        if code is not None and code < 0:
            return f"the worker process was killed (signal {-code}); checkpoints saved before that are kept"
        return f"the worker process ended unexpectedly (exit code {code}); checkpoints saved before that are kept"

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self._conn.close()


class LocalBackend:
    """Starts jobs in spawned processes, keeping one spare warm (thread-safe)."""

    name = "local"

    def __init__(self, spare: bool = True):
        self._keep_spare = spare
        self._lock = threading.Lock()
        self._spare: LocalHandle | None = None
        if spare:
            self._warm()

    def _spawn(self) -> LocalHandle:
        ours, theirs = _ctx.Pipe(duplex=True)
        proc = _ctx.Process(target=worker.serve, args=(theirs,), name="vqdemo-worker", daemon=True)
        proc.start()
        theirs.close()
        return LocalHandle(proc, ours)

    def _warm(self) -> None:
        with self._lock:
            if self._spare is None or not self._spare.alive():
                self._spare = self._spawn()

    def start(self, spec: worker.JobSpec) -> LocalHandle:
        with self._lock:
            handle, self._spare = self._spare, None
        if handle is None or not handle.alive():
            handle = self._spawn()
        handle.send(spec)
        if self._keep_spare:
            threading.Thread(target=self._warm, daemon=True, name="vqdemo-spare").start()
        return handle

    def close(self) -> None:
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.kill()


class _QueueEnd:
    """One end of an in-memory duplex channel, with the Connection methods `serve` needs."""

    CLOSED = ("closed",)

    def __init__(self, inbox: queue.Queue, outbox: queue.Queue):
        self.inbox, self.outbox = inbox, outbox

    def send(self, msg: worker.Message) -> None:
        self.outbox.put(msg)

    def recv(self) -> worker.Message:
        msg = self.inbox.get()
        if msg is self.CLOSED:
            raise EOFError
        return msg


class ThreadHandle:
    def __init__(self, thread: threading.Thread, end: _QueueEnd):
        self.thread, self._end = thread, end

    def send(self, msg: worker.Message) -> None:
        self._end.send(msg)

    def poll(self, timeout: float) -> list[worker.Message]:
        try:
            out = [self._end.inbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(out) < 1000:
            try:
                out.append(self._end.inbox.get_nowait())
            except queue.Empty:
                break
        return out

    def alive(self) -> bool:
        return self.thread.is_alive()

    def death(self) -> str:
        return "the worker thread ended without a result"

    def kill(self) -> None:
        self._end.send(_QueueEnd.CLOSED)


class ThreadBackend:
    """The same worker in a thread of this process: for unit tests (fast, and monkeypatching reaches the loop) and
    debugging. Not for a class: a thread shares the web server's interpreter and is what made training slow."""

    name = "thread"

    def start(self, spec: worker.JobSpec) -> ThreadHandle:
        to_worker, to_app = queue.Queue(), queue.Queue()
        thread = threading.Thread(target=worker.serve, args=(_QueueEnd(to_worker, to_app),), daemon=True,
                                  name="vqdemo-worker-thread")
        thread.start()
        to_worker.put(spec)
        return ThreadHandle(thread, _QueueEnd(to_app, to_worker))

    def close(self) -> None:
        pass
