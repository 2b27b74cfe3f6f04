"""The Ray backend: each job in a Ray actor on any node of a cluster, for a class that outgrows one machine.

The web server never imports Ray. A helper process, `ray_driver.py`, is the Ray driver: it checks the cluster
(something answers at RAY_ADDRESS, this machine has the token, the cluster refuses clients without one), connects,
and relays each job's messages over a socket. So a wrong address or a lost head costs a message, never the web
server: pages that need no job never wait on Ray, running jobs fail with a reason when the driver goes, and the
next job starts a new driver (the app reconnects when the head is back).
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from . import JobError, worker
from .local import PACKAGE_ROOT, Channel

READY_TIMEOUT_S = 180.0   # the driver's checks and ray.init (each refusal it finds comes within seconds)
RETRY_S = 10.0            # a refusal is repeated to jobs for this long before a new driver tries again
REACH_TIMEOUT_S = 3.0     # a TCP connection to the head's address: the "nothing answers there" check
LAUNCH = "import sys; from vqdemo.jobs.ray_driver import main; main(int(sys.argv[1]))"


def unreachable(address: str, timeout: float = REACH_TIMEOUT_S) -> str | None:
    """None if something accepts a TCP connection at host:port, else a message that says so and what to do: seconds,
    where Ray's own connection attempt waits about 40 s."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except (OSError, ValueError) as e:
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return (f"nothing answers at RAY_ADDRESS={address} ({why}): start the head there (see the README's Ray commands) "
            "or correct RAY_ADDRESS")


class _Driver:
    """One `ray_driver` process and the thread that reads what it says."""

    def __init__(self, address: str):
        ours, theirs = socket.socketpair()
        path = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": address,
               "OMP_WAIT_POLICY": "PASSIVE"}
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self._sock = ours                                   # kept to shut down: that wakes the reader thread
        self._conn = Channel(Connection(os.dup(ours.fileno())))
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.address = address
        self.refused: str | None = None     # why the driver could not connect
        self.lost: str | None = None        # why a connected driver ended
        self.ended_at: float | None = None
        self.cpus: int | None = None        # the cluster's CPUs, as the driver last said
        self.on_cpus: Callable[[], None] = lambda: None
        self._jobs: dict[str, RayHandle] = {}
        self._count = 0
        threading.Thread(target=self._read, daemon=True, name="vqdemo-ray-driver").start()

    @property
    def gone(self) -> bool:
        return self.ended_at is not None

    def _read(self) -> None:
        why = None
        try:
            while True:
                msg = self._conn.recv()
                if msg[0] == "msg":
                    with self._lock:
                        handle = self._jobs.get(msg[1])
                    if handle is not None:
                        handle.deliver(msg[2])
                elif msg[0] == "ready":
                    self.address, self.cpus = msg[1], msg[2]
                    self._ready.set()
                    self.on_cpus()
                elif msg[0] == "cluster":
                    self.cpus = msg[1]
                    self.on_cpus()
                elif msg[0] == "refused":
                    why = self.refused = msg[1]
                elif msg[0] == "lost":
                    why = msg[1]
        except (EOFError, OSError):
            pass
        with self._send_lock:
            self._conn.close()
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = None
        if self.refused is None and not self._ready.is_set():
            self.refused = f"the Ray driver process ended before it connected (exit code {code})"
        self.lost = why or f"the Ray driver process ended (exit code {code})"
        self.ended_at = time.monotonic()
        self._ready.set()
        with self._lock:
            orphans, self._jobs = list(self._jobs.values()), {}
        for handle in orphans:
            handle.deliver([("died", f"lost the Ray cluster: {self.lost}; checkpoints saved before that are kept. "
                                     "The next run reconnects")])

    def send(self, msg: tuple) -> None:
        try:
            with self._send_lock:
                self._conn.send(msg)
        except (OSError, EOFError):
            pass   # the driver has gone; _read fails its jobs

    def wait_ready(self, timeout: float) -> None:
        """Until the driver has connected; JobError with its reason if it could not."""
        if not self._ready.wait(timeout):
            self.refused = f"the Ray cluster at {self.address} was not joined within {timeout:.0f} s"
            self.proc.kill()
            raise JobError(self.refused)
        if self.refused is not None:
            raise JobError(self.refused)

    def start(self, spec: worker.JobSpec) -> RayHandle:
        with self._lock:
            if self.gone:
                raise JobError(f"lost the Ray cluster: {self.lost}")
            self._count += 1
            job = f"job-{self._count}"
            handle = self._jobs[job] = RayHandle(self, job)
        self.send(("start", job, spec))
        return handle

    def forget(self, job: str) -> None:
        with self._lock:
            self._jobs.pop(job, None)
        self.send(("kill", job))

    def close(self) -> None:
        """End the driver: it sees its socket close, kills this server's actors and exits."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._sock.close()


class RayHandle:
    """One job on the cluster, as the queue sees it: messages relayed by the driver process."""

    def __init__(self, driver: _Driver, job: str):
        self._driver, self._job = driver, job
        self._inbox: queue.Queue = queue.Queue()
        self._dead: str | None = None

    def deliver(self, messages: list[worker.Message]) -> None:
        for msg in messages:
            self._inbox.put(msg)

    def send(self, msg: worker.Message) -> None:
        self._driver.send(("send", self._job, msg))

    def poll(self, timeout: float) -> list[worker.Message]:
        try:
            out = [self._inbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(out) < 1000:
            try:
                out.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        for msg in out:
            if msg[0] == "died":
                self._dead = msg[1]
        return out

    def alive(self) -> bool:
        return self._dead is None and not (self._driver.gone and self._inbox.empty())

    def death(self) -> str:
        return self._dead or f"lost the Ray cluster: {self._driver.lost}; checkpoints saved before that are kept"

    def kill(self) -> None:
        self._driver.forget(self._job)


class RayBackend:
    """Jobs on the Ray cluster at `address` (else RAY_ADDRESS, else a head started on this machine), through one
    driver process, started at once in the background and again after it ends."""

    name = "ray"

    def __init__(self, address: str | None = None, ready_timeout_s: float = READY_TIMEOUT_S):
        self.address = address if address is not None else os.environ.get("RAY_ADDRESS", "")
        self.ready_timeout_s = ready_timeout_s
        self._lock = threading.Lock()
        self._driver = _Driver(self.address)

    def driver(self) -> _Driver:
        """The current driver, a new one if the last has ended (after RETRY_S when it was refused)."""
        with self._lock:
            old = self._driver
            if old.gone and (old.refused is None or time.monotonic() - old.ended_at > RETRY_S):
                self._driver = _Driver(self.address)
                self._driver.on_cpus = old.on_cpus
            return self._driver

    def capacity(self) -> int | None:
        """The cluster's CPUs as last heard (None until the driver has connected, or once it has gone): the queue
        runs that many jobs at once unless told otherwise, so nodes that join or leave change it."""
        driver = self._driver
        return None if driver.gone else driver.cpus

    def on_capacity(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from the driver's reader thread) whenever the cluster's CPUs change."""
        self._driver.on_cpus = callback

    def start(self, spec: worker.JobSpec) -> RayHandle:
        if self.address not in ("", "auto"):
            why = unreachable(self.address)   # here, at once: a driver would say the same after importing Ray
            if why is not None:
                raise JobError(why)
        driver = self.driver()
        driver.wait_ready(self.ready_timeout_s)
        return driver.start(spec)

    def problem(self) -> str | None:
        """Why the cluster cannot be used now (for a page to say), or None while it can or is being joined."""
        driver = self._driver
        return driver.refused or (f"lost the Ray cluster: {driver.lost}" if driver.gone else None)

    def close(self) -> None:
        self._driver.close()
