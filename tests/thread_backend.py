"""The job worker in a thread of the test process: fast, and a test's monkeypatching reaches the training loop.

Not for a class (a thread shares the web server's interpreter, which is what made training slow), so it lives with
the tests, which add it to `vqdemo.jobs.backends.BACKENDS` as "thread" (tests/conftest.py).
"""

from __future__ import annotations

import queue
import threading

from vqdemo.jobs import worker


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
    """The same worker as a real backend's, in a thread of this process."""

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
