"""The Ray driver: the one process of the app that imports Ray, started by `ray_backend.RayBackend` (a fresh
interpreter that calls `main(FD)`) and talking to the web server over the socket FD.

Why a process of its own: a Ray driver that loses its cluster's head ends its whole process ("Failed to connect to
GCS within 60 seconds ... The program will terminate"), and `ray.init` to an address where nothing answers waits
about 40 s per try. Here that ends or blocks only this helper; the web server sees its socket close, fails the
running jobs with a reason, and starts a new driver for the next job (so it reconnects once the head is back).

Before connecting it checks, each with a message that says what to do: that something answers at the address
(within seconds, not Ray's 40 s), that this machine has the cluster's token, and that the cluster refuses a client
without one (`ray_probe.py`, in a process with no token). Then `ray.init` with token authentication on.

An actor asks Ray for the job's CPUs (and one GPU when the cluster has any) and runs the job the same way the
local backend does: in a spawned worker process of its own, so the training loop has the main thread of a fresh
interpreter whatever Ray does with its threads. There is no shared filesystem: the spec carries everything the
job needs, and events and checkpoints come back by polling the actor, relayed to the web server. So a node that
dies (a worker machine switched off) loses only what it had not yet sent: the job fails with a reason that names
the lost machine, its checkpoints already in the app's run folder stay there, and jobs on other nodes go on.

Messages in (web server -> driver): ("start", job, spec), ("send", job, message), ("kill", job).
Messages out: ("ready", address) or ("refused", why) first, then ("msg", job, [worker messages]) and, if the
head stops answering, ("lost", why) before this process exits.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["RAY_AUTH_MODE"] = "token"   # before ray is imported: it reads the mode then. This app never runs without

import ray  # noqa: E402
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayError  # noqa: E402

from . import worker  # noqa: E402
from .local import LocalBackend  # noqa: E402
from .ray_backend import unreachable  # noqa: E402

PACKAGE = Path(__file__).resolve().parents[1]    # vqdemo/, shipped to the cluster's workers with each job
POLL_TIMEOUT_S = 30.0   # a Ray worker that does not answer a poll for this long has failed its job
UNAVAILABLE_RETRY_S = 1.0   # a dropped connection to an actor is retried this often (within POLL_TIMEOUT_S)
SILENT = f"the Ray worker running this job stopped answering for {POLL_TIMEOUT_S:.0f} s"
NODE_LOST = ("the machine running this run stopped (its Ray node was lost); checkpoints saved before that are kept "
             "and the cluster's other machines take new runs")
ACTOR_POLL_S = 0.2      # how long one poll of an actor waits for messages
PROBE_TIMEOUT_S = 60.0
HEALTH_EVERY_S = 2.0    # the head's address is checked this often while connected ...
HEALTH_MISSES = 3       # ... and this many misses in a row mean the head has gone


class Refused(Exception):
    """The cluster cannot or must not be used; the message says why and what to do."""


def resolve(address: str) -> str:
    """host:port of the cluster: RAY_ADDRESS as given, or ("auto" / empty) the head `ray start` made here."""
    from ray._private.services import canonicalize_bootstrap_address_or_die

    if address and address != "auto":
        return address   # as the teacher wrote it, so messages name it
    try:
        return canonicalize_bootstrap_address_or_die(address or "auto")
    except (ConnectionError, ValueError) as e:
        raise Refused(f"no Ray cluster found ({str(e).splitlines()[0][:200]}): set RAY_ADDRESS to the head's "
                      "HOST:PORT, as the README's Ray commands do") from None


def check_token_required(address: str) -> None:
    """Refuse a cluster that lets in a client without a token: anyone who can reach it could run code on it."""
    from ray._raylet import AuthenticationTokenLoader

    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        raise Refused("this machine has no Ray token: set RAY_AUTH_TOKEN to the output of `ray get-auth-token` on "
                      "the head (or copy the head's ~/.ray/auth_token here)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
    with tempfile.TemporaryDirectory(prefix="vqdemo-probe-") as home:   # no ~/.ray/auth_token to find
        try:
            probe = subprocess.run([sys.executable, str(Path(__file__).with_name("ray_probe.py")), address],
                                   env={**env, "RAY_AUTH_MODE": "disabled", "HOME": home}, capture_output=True,
                                   text=True, timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise Refused(f"the Ray cluster at {address} did not answer a check within {PROBE_TIMEOUT_S:.0f} s") \
                from None
    if probe.returncode == 0:
        raise Refused(f"the Ray cluster at {address} does not require a token, so anyone who can reach it can run "
                      "code on it; restart its head with token authentication as the README's Ray commands do "
                      "(RAY_AUTH_MODE=token)")
    if probe.returncode != 3:
        raise Refused(f"could not check the Ray cluster at {address} ({probe.stderr.strip()[-300:]})")
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    try:
        GcsClient(address=address)   # this process, with the token here: at once, where ray.init retries a while
    except AuthenticationError:
        raise Refused(f"the Ray cluster at {address} refused the token here: set RAY_AUTH_TOKEN to the output of "
                      "`ray get-auth-token` on the head") from None


def connect(address: str) -> str:
    """Check the cluster, then connect this process to it as a driver; returns host:port."""
    address = resolve(address)
    why = unreachable(address)
    if why is not None:
        raise Refused(why)
    check_token_required(address)
    try:
        ray.init(address=address, log_to_driver=False,
                 runtime_env={"py_modules": [str(PACKAGE)], "env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}})
    except Exception as e:  # noqa: BLE001 - whatever Ray raises, the web server gets one line
        raise Refused(f"could not join the Ray cluster at {address} ({type(e).__name__}: "
                      f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    return address


@ray.remote(max_restarts=0, max_concurrency=4)
class JobActor:
    """Holds one job's worker process on a Ray node and relays its messages."""

    def __init__(self, spec: worker.JobSpec):
        self._handle = LocalBackend(spares=0).start(spec)

    def command(self, msg: worker.Message) -> None:
        self._handle.send(msg)

    def poll(self, timeout: float) -> list[worker.Message]:
        out = self._handle.poll(timeout)
        if not out and not self._handle.alive():
            out.append(("died", self._handle.death()))
        return out

    def node(self) -> str:
        """The id of the Ray node this actor runs on: the driver asks at once, so it still knows once the node dies."""
        return ray.get_runtime_context().get_node_id()

    def stop(self) -> None:
        self._handle.kill()


class RayHandle:
    """One job's actor, as this driver sees it."""

    def __init__(self, actor):
        self.actor = actor
        self._node = actor.node.remote()
        self._dead: str | None = None
        self._unavailable_since: float | None = None

    def send(self, msg: worker.Message) -> None:
        if self._dead is None:
            self.actor.command.remote(msg)

    def poll(self, timeout: float) -> list[worker.Message]:
        if self._dead is not None:
            return [("died", self._dead)]
        try:
            messages = ray.get(self.actor.poll.remote(timeout), timeout=timeout + POLL_TIMEOUT_S)
            self._unavailable_since = None
            return messages
        except ActorUnavailableError:   # the connection dropped: the actor may answer again, or its node be dead
            if self._node_lost():
                self._dead = NODE_LOST
            else:
                since = self._unavailable_since = self._unavailable_since or time.monotonic()
                if time.monotonic() - since < POLL_TIMEOUT_S:
                    time.sleep(UNAVAILABLE_RETRY_S)
                    return []
                self._dead = SILENT
        except RayActorError as e:
            self._dead = NODE_LOST if self._node_lost(e) else (
                f"the Ray worker running this job died ({str(e).splitlines()[0][:160]}); checkpoints saved before "
                "that are kept")
        except GetTimeoutError:
            self._dead = SILENT
        except RayError as e:
            self._dead = f"the Ray cluster failed this job ({type(e).__name__}); checkpoints saved before that are kept"
        return [("died", self._dead)]

    def _node_lost(self, error: RayActorError | None = None) -> bool:
        """Whether the node that held this actor has left the cluster: Ray's error says so, or the cluster's node
        list shows it dead. False when the actor died before it said where it ran."""
        if error is not None and "node has died" in str(error):
            return True
        try:
            node = ray.get(self._node, timeout=POLL_TIMEOUT_S)
            return not any(n["NodeID"] == node and n["Alive"] for n in ray.nodes())
        except RayError:
            return False

    def kill(self) -> None:
        try:
            ray.kill(self.actor, no_restart=True)
        except RayError:
            pass


class Driver:
    """Starts one actor per job and relays each job's messages to the web server."""

    def __init__(self, conn, address: str):
        self.conn = conn
        self.address = address
        self.gpus = ray.cluster_resources().get("GPU", 0) > 0
        self.handles: dict[str, RayHandle] = {}
        self._send_lock = threading.Lock()

    def send(self, msg: tuple) -> None:
        with self._send_lock:
            self.conn.send(msg)

    def start(self, job: str, spec: worker.JobSpec) -> None:
        try:
            actor = JobActor.options(num_cpus=spec.threads,
                                     num_gpus=1 if self.gpus and spec.task != "call" else 0).remote(spec)
        except Exception as e:  # noqa: BLE001 - one job fails, the driver goes on
            self.send(("msg", job, [("died", f"the Ray cluster could not start this job ({type(e).__name__}: {e})")]))
            return
        handle = self.handles[job] = RayHandle(actor)
        threading.Thread(target=self._relay, args=(job, handle), daemon=True, name=f"relay-{job}").start()

    def _relay(self, job: str, handle: RayHandle) -> None:
        while self.handles.get(job) is handle:
            messages = handle.poll(ACTOR_POLL_S)
            try:
                if messages:
                    self.send(("msg", job, messages))
            except (OSError, EOFError):
                return   # the web server has gone: serve() ends and kills the actors
            if any(m[0] in ("died", "exit") for m in messages):
                return

    def watch_head(self) -> None:
        """Say "lost" and end this process when the head's address stops answering (Ray would end it anyway, a
        minute later, and the web server should not keep sending jobs to a dead cluster that long)."""
        misses = 0
        while True:
            time.sleep(HEALTH_EVERY_S)
            why = unreachable(self.address)
            misses = misses + 1 if why is not None else 0
            if misses >= HEALTH_MISSES:
                try:
                    self.send(("lost", f"the Ray head at {self.address} stopped answering"))
                finally:
                    os._exit(0)

    def serve(self) -> None:
        """Commands until the web server goes away; then every actor of this driver is killed."""
        threading.Thread(target=self.watch_head, daemon=True, name="watch-head").start()
        while True:
            try:
                name, job, *args = self.conn.recv()
            except (EOFError, OSError):
                break
            if name == "start":
                self.start(job, args[0])
            elif name == "send" and job in self.handles:
                self.handles[job].send(args[0])
            elif name == "kill" and job in self.handles:
                self.handles.pop(job).kill()
        for handle in list(self.handles.values()):
            handle.kill()


def main(fd: int) -> None:
    from multiprocessing.connection import Connection

    from .local import Channel

    conn = Channel(Connection(fd))
    try:
        address = connect(os.environ.get("RAY_ADDRESS", ""))
    except Refused as e:
        with contextlib.suppress(OSError, EOFError):   # the web server may have gone meanwhile
            conn.send(("refused", str(e)))
        return
    driver = Driver(conn, address)
    try:
        conn.send(("ready", address))
    except (OSError, EOFError):
        return
    driver.serve()


if __name__ == "__main__":
    main(int(sys.argv[1]))
