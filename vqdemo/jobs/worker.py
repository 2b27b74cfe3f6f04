"""What runs inside a job's worker process: one task (train an autoencoder, train a prior, compute) driven by
messages, reporting by messages. It knows nothing of processes, pipes or Ray: `serve` gets a connection-like
object with `send` / `recv`, the backends only move messages.

Messages in (app -> worker): the `JobSpec` first, then commands `("pause",)`, `("resume",)`, `("step", n)`,
`("stop",)`, `("set", {"beta": .., "lr": .., "k": ..})`.
Messages out (worker -> app): `("event", dict)` for every training event, `("store", method, *args)` for every
write the run folder needs (the app side's `run_store.RunStore` does the writing, so a Ray node needs no shared disk),
and last `("exit", state, reason, result)`.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .. import runtime
from ..events import Command, Report


class Connection(Protocol):
    def send(self, msg: Message) -> None: ...

    def recv(self) -> Message: ...


@dataclass
class JobSpec:
    """A task and its arguments, picklable. task: "train" (model, data, train, normalize_recon, meta, command),
    "prior" (files: the autoencoder's folder as {name: bytes}, seconds, seed) or "call" (fn, args)."""

    task: str
    threads: int
    args: dict[str, Any] = field(default_factory=dict)


Message = JobSpec | Command | Report   # what a backend carries: the spec, then commands in and reports out


class ForwardingStore:
    """The training loop's `Store`, sent back over the connection instead of written here."""

    def __init__(self, send: Callable[[Message], None]):
        self._send = send

    def open(self, meta: dict) -> None:
        self._send(("store", "open", meta))

    def status(self, state: str, reason: str, step: int, **extra: Any) -> None:
        self._send(("store", "status", state, reason, step, extra))

    def metrics(self, rows: list[dict]) -> None:
        self._send(("store", "metrics", rows))

    def images(self, blob: bytes) -> None:
        self._send(("store", "images", blob))

    def checkpoint(self, model_meta: dict, blob: bytes, improved: bool, step: int, best: dict | None = None) -> None:
        self._send(("store", "checkpoint", model_meta, blob, improved, step, best))


def apply_command(control, msg: Message) -> None:
    """One command from the app onto the training loop's Control."""
    name, *args = msg
    if name == "set":
        control.set(**args[0])
    elif name in ("pause", "resume", "stop", "step"):
        getattr(control, name)(*args)


def _listen(conn: Connection, control) -> None:
    """Commands until the app goes away; a closed connection (the server died) stops the run."""
    while True:
        try:
            apply_command(control, conn.recv())
        except (EOFError, OSError):
            control.stop()
            return


def _train(args: dict, control, emit, store) -> tuple[str, str, Any]:
    from ..fit import fit

    _, result = fit(args["model"], args["data"], args["train"], store=store, normalize_recon=args["normalize_recon"],
                    command=args["command"], meta=args["meta"], control=control, on_event=emit)
    return result.state, result.reason, None


def _prior(args: dict, control, emit, store) -> tuple[str, str, Any]:
    """Train a prior on an autoencoder shipped as files (no shared disk with the app); its run folder comes back
    through the store."""
    from ..prior import train_prior

    ends: list[dict] = []

    def on_event(event: dict) -> None:
        if event["type"] == "end":
            ends.append(event)
        emit(event)

    with tempfile.TemporaryDirectory(prefix="vqdemo-prior-") as tmp:
        for name, data in args["files"].items():
            (Path(tmp) / Path(name).name).write_bytes(data)
        train_prior(Path(tmp), seconds=args["seconds"], seed=args["seed"], control=control, on_event=on_event,
                    store=store)
    end = ends[-1] if ends else {"state": "failed", "reason": "the prior's training loop did not report an end"}
    return end["state"], end["reason"], None


def _call(args: dict, control, emit, store) -> tuple[str, str, Any]:
    fn = CALLS[args["fn"]]
    return "done", "computed", fn(*args.get("args", ()), **args.get("kwargs", {}))


def _umap_2d(points, seed: int = 0):
    from ..analysis import umap_2d

    return umap_2d(points, seed=seed)


def _best_codes(run_dir: str, image, seed: int = 0) -> dict:
    """The best-codes search (vqdemo.best_codes) for one image (C, H, W) with the model saved in run_dir."""
    import torch

    from ..best_codes import SearchConfig, search
    from ..runs import load_model

    model, _ = load_model(run_dir)
    found = search(model, torch.as_tensor(image), SearchConfig(seed=seed))
    return {"encoder_codes": found.encoder_codes.numpy(), "codes": found.codes.numpy(),
            "encoder_psnr": found.encoder_psnr, "psnr": found.psnr, "image": found.image.numpy(),
            "encoder_image": found.encoder_image.numpy(), "sweeps": found.sweeps, "seconds": found.seconds,
            "history": found.history}


TASKS = {"train": _train, "prior": _prior, "call": _call}
# what a "call" job may run: named, never pickled code
CALLS: dict[str, Callable[..., Any]] = {"umap_2d": _umap_2d, "best_codes": _best_codes}


def run(spec: JobSpec, control, send: Callable[[Message], None]) -> tuple[str, str, Any]:
    """Run one task to its end; every failure becomes (state "failed", a reason a student can act on)."""
    store = ForwardingStore(send)
    try:
        return TASKS[spec.task](spec.args, control, lambda e: send(("event", e)), store)
    except ValueError as e:   # DataError, ImageError, PriorError, config errors: the message says what to do
        return "failed", str(e), None
    except (BrokenPipeError, EOFError, ConnectionError):
        return "failed", "the app stopped listening to this run", None
    except MemoryError:
        return "failed", "the run ran out of memory; try a smaller batch, K or image size", None
    except Exception as e:    # noqa: BLE001 - a worker must report, never die silently
        return "failed", f"{type(e).__name__}: {e}. This is a bug; try a smaller run and tell the teacher", None


def _warm_up() -> None:
    """Load what every run needs before a job arrives: torch, the models, and the optimiser (whose first use
    imports torch's compiler stack, about 2 s here)."""
    import torch

    from .. import fit  # noqa: F401

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _yield_to_the_web_server() -> None:
    """Env VQDEMO_WORKER_NICE (default 0) lowers a worker's CPU share, for a teacher who prefers quick pages to fast
    training on a small machine.

    Workers are not SCHED_BATCH: torch's two intra-op threads meet at a barrier after every op, and a batch thread
    that wakes does not preempt a busy core, so every op waited a scheduler slice. With every core busy a run made
    0.37-0.63x the CLI's steps per second at batch 32 (0.87x without), and the web server no longer needs the
    protection (30 students cost it a quarter of a core)."""
    try:
        nice = int(os.environ.get("VQDEMO_WORKER_NICE", "0"))
    except ValueError:
        nice = 0
    if 0 < nice <= 19:
        os.nice(nice)


def serve(conn: Connection) -> None:
    """A worker process's main: set up the process, load torch, wait for a spec, run it, report, return.

    Started ahead of need as a warm spare, so a student's run does not wait for torch to import.
    """
    runtime.configure()
    _yield_to_the_web_server()
    _warm_up()
    from ..trainer import Control

    try:
        spec = conn.recv()
    except (EOFError, OSError):
        return
    runtime.configure(spec.threads)
    control = Control()
    lock = threading.Lock()

    def send(msg: Message) -> None:
        with lock:
            conn.send(msg)

    threading.Thread(target=_listen, args=(conn, control), daemon=True, name="vqdemo-commands").start()
    state, reason, result = run(spec, control, send)
    try:
        send(("exit", state, reason, result))
    except (OSError, EOFError):
        pass

