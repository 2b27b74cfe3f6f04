"""The one training loop, used by the CLI, the app's background jobs, the prior and the tests.

Any model that implements `training_loss(batch) -> (loss, stats)` and `evaluate(x, y, batch_size) -> stats
with "score"` can be trained here. The loop emits events (dicts) for every step and validation, keeps the
best checkpoint by validation score and the last good one, and obeys a `Control` between steps: pause,
resume, single step, stop, and new beta / learning rate / K without a restart.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from . import run_store, runs
from .budget_clock import BudgetClock, estimate_step_s
from .events import Event
from .settings import Checked, setting

EARLY_VAL_STEPS = (1, 10, 50)  # validate (and snapshot) here too, so a live run shows PSNR, usage and images at once
MAX_THREADS = 256  # torch.set_num_threads(100000) crashed the process (SIGSEGV) in the first convolution
VAL_PIXELS = 256 * 32 * 32  # a validation batch holds about this many pixels (256 small images), or the training batch
VAL_BATCH_MAX = 256  # images per validation batch at most, however small the images: bounds the peak memory
SCHEDULES = ("constant", "cosine", "decay")
DECAY_SHARE = 0.3  # "decay": the learning rate falls linearly to 0 over this last share of the budget


class Trainable(Protocol):
    config: Any

    def training_loss(self, batch: tuple[Tensor, Tensor | None]) -> tuple[Tensor, dict[str, float]]: ...

    def evaluate(self, x: Tensor, y: Tensor | None, batch_size: int) -> dict[str, float]: ...


class Store(Protocol):
    """Where a run's files go: `run_store.RunStore` writes them; a job's worker forwards the same calls to the app."""

    def open(self, meta: dict) -> None: ...

    def status(self, state: str, reason: str, step: int, **extra: Any) -> None: ...

    def metrics(self, rows: list[Event]) -> None: ...

    def images(self, blob: bytes) -> None: ...

    def checkpoint(self, model_meta: dict, blob: bytes, improved: bool, step: int,
                   best: dict | None = None) -> None: ...


DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig(Checked):
    """How long and how a run trains; each field's help, bounds and choices are its metadata (see settings.py)."""

    steps: int | None = setting(None, lo=1, hi=10_000_000,
                                help="stop after this many steps (with a time budget too: whichever comes first)")
    seconds: float | None = setting(None, lo=0, hi=7 * 86400, lo_open=True,
                                    help="stop after this many seconds of training (the command line gives 60 when "
                                         "neither budget is given)")
    # With lr 2e-3, batch 32 gave the best PSNR per CPU-minute measured on MNIST (45 s on 2 cores: 24.2 dB at 32
    # against 23.2-23.5 at 64 and 23.4 at 16; README, Benchmarks).
    batch_size: int = setting(32, lo=1, hi=4096, label="batch size", help="images per training step")
    lr: float = setting(2e-3, lo=0, hi=1, lo_open=True, label="learning rate", help="Adam's learning rate")
    seed: int = setting(0, lo=0, hi=2**63 - 1, help="seeds the weights' init and the batches")
    val_every: int = setting(250, lo=1, hi=10_000_000, help="validate (and checkpoint) every N steps, and at the end")
    log_every: int = setting(10, lo=1, hi=10_000_000, flag="", help="metrics.jsonl gets one train row every N steps")
    snapshot_every: int = setting(50, lo=1, hi=10_000_000, flag="",
                                  help="live reconstructions for the app every N steps")
    device: str = setting("auto", choices=DEVICES, help="auto: a GPU when there is one, else the CPU")
    threads: int | None = setting(None, lo=1, hi=MAX_THREADS,
                                  help="torch CPU threads (default: one for a small model's steps, else every core; "
                                       "fit.train_threads)")
    # decay is the default: at the 2,200 steps 45 s buys on a quiet machine it beat constant on seeds 0, 1 and 2
    # (+0.34 to +0.38 dB best validation PSNR, README, Benchmarks); priors keep the constant rate (prior/training.py).
    schedule: str = setting("decay", choices=SCHEDULES,
                            help="learning rate over the run: constant, or cosine (from lr down to 0 along a half "
                                 "cosine by the end of the budget, steps or seconds; Loshchilov & Hutter 2017 "
                                 "without restarts), or decay (constant, then linearly to 0 over the last 3 tenths "
                                 "of the budget: warm-up-stable-decay without the warm-up), so a short run ends "
                                 "settled")

    def budgeted(self) -> TrainConfig:
        """This config, refused when it gives no budget (neither steps nor seconds): what `run_training` runs."""
        if self.steps is None and self.seconds is None:
            raise ValueError("give a budget: steps or seconds")
        return self

    def lr_factor(self, step: int, elapsed_s: float) -> float:
        """The share of lr to use after `step` steps and `elapsed_s` seconds of training (pauses excluded)."""
        if self.schedule == "constant":
            return 1.0
        spent = min(1.0, max(step / self.steps if self.steps else 0.0,
                             elapsed_s / self.seconds if self.seconds else 0.0))
        if self.schedule == "decay":
            return min(1.0, (1.0 - spent) / DECAY_SHARE)
        return 0.5 * (1.0 + math.cos(math.pi * spent))


def validation_batch(batch_size: int, image_size: int) -> int:
    """Validation needs no gradients, so it takes larger batches than training: as many images as VAL_PIXELS holds
    (at most VAL_BATCH_MAX), or the training batch when that is larger. fit.step_bytes counts the same batch."""
    return max(batch_size, min(VAL_BATCH_MAX, VAL_PIXELS // max(1, image_size ** 2)))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but no GPU is available; use --device cpu or auto")
    return torch.device(name)


class Control:
    """Flags the training thread reads between steps; safe to set from any thread (a page, a CLI)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paused = False
        self._stop = False
        self._steps_granted = 0
        self._pending: dict[str, float] = {}

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def step(self, n: int = 1) -> None:
        """While paused: run exactly n more steps, then pause again."""
        with self._cond:
            self._steps_granted += n
            self._cond.notify_all()

    def set(self, **changes: float) -> None:
        """Queue live changes (beta, lr, k); applied before the next step."""
        with self._cond:
            self._pending.update(changes)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopped(self) -> bool:
        return self._stop

    def wait(self) -> bool:
        """Block while paused (unless a step was granted). False means: stop now."""
        with self._cond:
            while self._paused and not self._stop and self._steps_granted == 0:
                self._cond.wait(timeout=0.5)
            if self._paused and self._steps_granted:
                self._steps_granted -= 1
            return not self._stop

    def take_changes(self) -> dict[str, float]:
        with self._cond:
            changes, self._pending = self._pending, {}
            return changes


@dataclass
class TrainResult:
    state: str                 # "done" | "stopped" | "failed"
    reason: str
    steps: int
    best: dict[str, float] = field(default_factory=dict)
    last_val: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None


def model_meta(model: Trainable) -> dict:
    cfg = model.config
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dataclasses.asdict(cfg)


def run_training(
    model: Trainable,
    train_data: tuple[Tensor, Tensor | None],
    val_data: tuple[Tensor, Tensor | None],
    cfg: TrainConfig,
    *,
    out_dir: Path | None = None,
    store: Store | None = None,
    meta: dict | None = None,
    control: Control | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> TrainResult:
    """Train `model` in place. With `out_dir` (or any `store`), keep config.json, status.json, metrics.jsonl and
    the best and last weights there."""
    cfg.validate()
    cfg.budgeted()
    run = _Run(model, train_data, val_data, cfg, out_dir=out_dir, store=store, meta=meta,
               control=control or Control(), emit=on_event or (lambda e: None))
    state, reason = run.train()
    run.finish(state, reason)
    return TrainResult(state, reason, run.step, run.best, run.last_val, Path(out_dir) if out_dir else None)


_STOPPED = ("stopped", "stopped by the user")


class _Run:
    """One call of `run_training`: the model, its data, optimiser and clock, and what the run has recorded so far
    (rows, best and last validation, steps). Each phase of the loop is a method that says what it reads and sets."""

    def __init__(self, model: Trainable, train_data: tuple[Tensor, Tensor | None],
                 val_data: tuple[Tensor, Tensor | None], cfg: TrainConfig, *, out_dir: Path | None,
                 store: Store | None, meta: dict | None, control: Control, emit: Callable[[Event], None]):
        self.model, self.cfg, self.control, self.emit = model, cfg, control, emit
        self.device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)   # the batches' draws

        model.to(self.device)
        self.x_train, self.y_train = (t.to(self.device) if t is not None else None for t in train_data)
        self.x_val, self.y_val = (t.to(self.device) if t is not None else None for t in val_data)
        self.optimizer = _optimizer(model, cfg.lr)
        self.base_lr = cfg.lr   # the top of the schedule; a live lr replaces it
        self.meta = dict(meta or {}, train=dataclasses.asdict(cfg), model=model_meta(model))
        if store is None and out_dir is not None:
            store = run_store.RunStore(Path(out_dir))
        self.store = store
        if store:
            store.open(self.meta)
        self.logged = 0   # rows already handed to the store

        self.rows: list[Event] = []
        self.best: dict[str, float] = {}
        self.last_val: dict[str, float] = {}
        self.step = 0
        self.start = time.monotonic()
        self.paused_for = 0.0
        self.clock = BudgetClock(cfg, len(self.x_val))
        if store:
            store.status("running", "training", self.step)
        if cfg.seconds is not None:   # the first step is the one no earlier step can predict, and often the slowest
            self.clock.step_s = estimate_step_s(model, self.x_train, self.y_train, cfg.batch_size, limit_s=cfg.seconds)

    def elapsed(self) -> float:
        """Seconds of training so far, pauses excluded."""
        return time.monotonic() - self.start - self.paused_for

    def left(self) -> float:
        return math.inf if self.cfg.seconds is None else self.cfg.seconds - self.elapsed()

    def train(self) -> tuple[str, str]:
        """Step until the budget is spent, the user stops the run or the loss diverges; returns (state, reason)."""
        self.model.train()
        while True:
            ended = self.budget_spent() or self.obey_control()
            if ended:
                return ended
            self.apply_changes()
            self.follow_schedule()
            stats = self.train_step()
            if isinstance(stats, tuple):
                return stats
            self.record_step(stats)

    def budget_spent(self) -> tuple[str, str] | None:
        """(state, reason) when the steps are done or the next step would leave too little time for the final
        validation and checkpoint (a first step that alone would not fit fails the run); None: train on."""
        cfg, clock, step = self.cfg, self.clock, self.step
        elapsed = self.elapsed()
        # the first step's estimate is noisier than a measured step: it alone must not fit for the run to be refused
        keep = clock.reserve(cfg.seconds) if cfg.seconds is not None and step > 0 else 0.0
        out_of_time = cfg.seconds is not None and elapsed + clock.step_s + keep >= cfg.seconds
        if not ((cfg.steps is not None and step >= cfg.steps) or out_of_time):
            return None
        if out_of_time and step == 0:
            took = "longer than its whole budget" if math.isinf(clock.step_s) else f"about {clock.step_s:.1f} s"
            return "failed", (f"one training step of this model would take {took} (timed on a few images first), too "
                              f"long for a {cfg.seconds:g} s budget; use a smaller batch, K, image size or hidden "
                              "width, or a longer budget")
        return "done", "finished its budget"

    def obey_control(self) -> tuple[str, str] | None:
        """Hold while paused (a granted single step goes on); _STOPPED when the user stopped the run, else None.
        Adds the time held to paused_for."""
        control, store = self.control, self.store
        if control.paused:
            t0 = time.monotonic()
            if store:
                store.status("paused", "paused by the user", self.step)
            self.emit({"type": "paused", "step": self.step})
            go = control.wait()
            self.paused_for += time.monotonic() - t0
            if store and not control.paused:
                store.status("running", "training", self.step)
            if not go:
                return _STOPPED
        elif control.stopped:
            return _STOPPED
        return None

    def apply_changes(self) -> None:
        """The live knobs asked for since the last step (beta, lr, K) go into the model and the optimiser; the run's
        rows keep each change beside its curves."""
        changes = self.control.take_changes()
        if not changes:
            return
        self.optimizer = _apply_changes(self.model, self.optimizer, changes)
        self.base_lr = float(changes.get("lr", self.base_lr))  # a live lr is the new top of the schedule
        event = {"type": "changed", "step": self.step, **changes}
        self.rows.append(event)
        self.emit(event)

    def follow_schedule(self) -> None:
        """The learning rate for this step: base_lr times the schedule's share (TrainConfig.lr_factor)."""
        if self.cfg.schedule != "constant":
            for group in self.optimizer.param_groups:
                group["lr"] = self.base_lr * self.cfg.lr_factor(self.step, self.elapsed())

    def train_step(self) -> dict[str, float] | tuple[str, str]:
        """One optimiser step on a random batch: its stats, or ("failed", reason) when the loss is not finite (the
        weights are left as they were)."""
        cfg, model, optimizer = self.cfg, self.model, self.optimizer
        t_step = time.monotonic()
        idx = torch.randint(len(self.x_train), (cfg.batch_size,), generator=self.gen).to(self.device)
        batch = (self.x_train[idx], self.y_train[idx] if self.y_train is not None else None)
        loss, stats = model.training_loss(batch)
        if not torch.isfinite(loss):
            best = self.best
            kept = f"the checkpoint of step {best['step']} was kept" if best else "no checkpoint had been saved yet"
            reason = (f"the loss became {float(loss.detach())} at step {self.step + 1}: the weights diverged. "
                      f"Lower the learning rate (now {optimizer.param_groups[0]['lr']:g}) and start again; {kept}")
            self.emit({"type": "failed", "step": self.step, "reason": reason})
            return "failed", reason
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.step += 1
        self.clock.took_step(time.monotonic() - t_step)
        return stats

    def record_step(self, stats: dict[str, float]) -> None:
        """The step's event (a row every log_every steps), then the snapshot and validation when they are due."""
        cfg, step = self.cfg, self.step
        event = {"type": "train", "step": step, "time": self.elapsed(),
                 "lr": self.optimizer.param_groups[0]["lr"], **stats}
        beta = getattr(getattr(self.model.config, "vq", None), "beta", None)
        if beta is not None:
            event["beta"] = beta
        self.emit(event)
        if step % cfg.log_every == 0:
            self.rows.append(event)
        early = step in EARLY_VAL_STEPS and step < cfg.val_every
        if (early or step % cfg.snapshot_every == 0) and hasattr(self.model, "snapshot"):
            self.emit({"type": "snapshot", "step": step, **self.model.snapshot(self.x_val[:8])})
        if early or step % cfg.val_every == 0:
            self.validate_and_save()

    def checkpoint(self, improved: bool) -> None:
        self.meta["model"] = model_meta(self.model)   # K may have changed live
        store, model, meta = self.store, self.model, self.meta
        self.clock.timed_save(lambda: store.checkpoint(meta["model"], runs.weights_bytes(model, meta), improved,
                                                       self.step, self.best))

    def validate_and_save(self, final: bool = False) -> None:
        """Validate and checkpoint, within the time budget: a validation that would overrun it is skipped during
        training and, at the end, done on as many validation images as fit (the run still gets a checkpoint).
        Sets last_val, best when it improved, and logged."""
        cfg, model, clock, store = self.cfg, self.model, self.clock, self.store
        x_val, y_val = self.x_val, self.y_val
        if clock.val_per_image is None and cfg.seconds is not None:   # first validation: time a few images first
            probe = min(len(x_val), 8)
            model.eval()
            y_probe = None if y_val is None else y_val[:probe]
            clock.timed_val(lambda: model.evaluate(x_val[:probe], y_probe, probe), probe)
            model.train()
        n = clock.images_that_fit(self.left())
        if n < len(x_val) and not final:
            return
        if n < len(x_val) and self.best and n < min(len(x_val), cfg.batch_size):
            if store:   # no time to validate: keep the latest weights as last.safetensors only
                self.checkpoint(False)
            return
        n = max(n, 1)
        model.eval()
        last_val = clock.timed_val(lambda: model.evaluate(x_val[:n], None if y_val is None else y_val[:n],
                                                          validation_batch(cfg.batch_size, x_val.shape[-1])), n)
        self.last_val = last_val
        model.train()
        event = {"type": "val", "step": self.step, "time": self.elapsed(), **last_val}
        if n < len(x_val):
            event["val_images"] = n
        self.rows.append(event)
        self.emit(event)
        if not all(math.isfinite(v) for v in last_val.values()):
            return
        improved = not self.best or (last_val["score"] < self.best["score"] and n == len(x_val))
        if improved:
            self.best = dict(last_val, step=self.step)
        if store:
            self.checkpoint(improved)
            store.metrics(self.rows[self.logged:])
            self.logged = len(self.rows)

    def finish(self, state: str, reason: str) -> None:
        """A last validation unless the run failed or has just validated this step; then the rows not yet stored, the
        final status and the "end" event."""
        rows, step = self.rows, self.step
        if state != "failed" and (not rows or rows[-1].get("type") != "val" or rows[-1]["step"] != step) and step > 0:
            self.validate_and_save(final=True)
        if self.store:
            self.store.metrics(rows[self.logged:])
            self.store.status(state, reason, step, best=self.best)
        self.emit({"type": "end", "step": step, "state": state, "reason": reason})


def _optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)


def _apply_changes(model: Any, optimizer: torch.optim.Optimizer, changes: dict[str, float]) -> torch.optim.Optimizer:
    """Live knobs, checked where they came in (`knobs.check`). beta and lr apply in place; a new K resizes the
    codebook and rebuilds the optimiser, carrying over Adam's state for every parameter whose shape did not change."""
    if "beta" in changes:
        model.set_beta(float(changes["beta"]))
    if "lr" in changes:
        for group in optimizer.param_groups:
            group["lr"] = float(changes["lr"])
    if "k" in changes:
        old_state = {id(p): optimizer.state[p] for group in optimizer.param_groups for p in group["params"]
                     if p in optimizer.state}
        model.resize_codebook(int(changes["k"]))
        lr = optimizer.param_groups[0]["lr"]
        optimizer = _optimizer(model, lr)
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) in old_state:
                    optimizer.state[p] = old_state[id(p)]
    return optimizer
