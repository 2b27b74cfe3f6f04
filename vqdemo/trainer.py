"""The one training loop, used by the CLI, the app's background jobs, the prior and the tests.

Any model that implements `training_loss(batch) -> (loss, stats)` and `evaluate(x, y, batch_size) -> stats
with "score"` can be trained here. The loop emits events (dicts) for every step and validation, keeps the
best checkpoint by validation score and the last good one, and obeys a `Control` between steps: pause,
resume, single step, stop, and new beta / learning rate / K without a restart.
"""

from __future__ import annotations

import copy
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
    # (+0.34 to +0.38 dB best validation PSNR, README, Benchmarks); priors keep the constant rate (prior.py).
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
    control = control or Control()
    emit = on_event or (lambda e: None)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    model.to(device)
    x_train, y_train = (t.to(device) if t is not None else None for t in train_data)
    x_val, y_val = (t.to(device) if t is not None else None for t in val_data)
    optimizer = _optimizer(model, cfg.lr)
    base_lr = cfg.lr
    meta = dict(meta or {}, train=dataclasses.asdict(cfg), model=model_meta(model))
    if store is None and out_dir is not None:
        store = run_store.RunStore(Path(out_dir))
    if store:
        store.open(meta)
    logged = 0  # rows already handed to the store

    rows: list[Event] = []
    best: dict[str, float] = {}
    last_val: dict[str, float] = {}
    step, state, reason = 0, "done", "finished its budget"
    start = time.monotonic()
    paused_for = 0.0
    clock = _BudgetClock(cfg, len(x_val))
    if store:
        store.status("running", "training", step)
    if cfg.seconds is not None:   # the first step is the one no earlier step can predict, and often the slowest
        clock.step_s = estimate_step_s(model, x_train, y_train, cfg.batch_size, limit_s=cfg.seconds)

    def left() -> float:
        return math.inf if cfg.seconds is None else cfg.seconds - (time.monotonic() - start - paused_for)

    def checkpoint(improved: bool) -> None:
        meta["model"] = model_meta(model)   # K may have changed live
        clock.timed_save(lambda: store.checkpoint(meta["model"], runs.weights_bytes(model, meta), improved, step, best))

    def validate_and_save(final: bool = False) -> None:
        """Validate and checkpoint, within the time budget: a validation that would overrun it is skipped during
        training and, at the end, done on as many validation images as fit (the run still gets a checkpoint)."""
        nonlocal best, last_val, logged
        if clock.val_per_image is None and cfg.seconds is not None:   # first validation: time a few images first
            probe = min(len(x_val), 8)
            model.eval()
            y_probe = None if y_val is None else y_val[:probe]
            clock.timed_val(lambda: model.evaluate(x_val[:probe], y_probe, probe), probe)
            model.train()
        n = clock.images_that_fit(left())
        if n < len(x_val) and not final:
            return
        if n < len(x_val) and best and n < min(len(x_val), cfg.batch_size):
            if store:   # no time to validate: keep the latest weights as last.safetensors only
                checkpoint(False)
            return
        n = max(n, 1)
        model.eval()
        last_val = clock.timed_val(lambda: model.evaluate(x_val[:n], None if y_val is None else y_val[:n],
                                                          validation_batch(cfg.batch_size, x_val.shape[-1])), n)
        model.train()
        event = {"type": "val", "step": step, "time": time.monotonic() - start - paused_for, **last_val}
        if n < len(x_val):
            event["val_images"] = n
        rows.append(event)
        emit(event)
        if not all(math.isfinite(v) for v in last_val.values()):
            return
        improved = not best or (last_val["score"] < best["score"] and n == len(x_val))
        if improved:
            best = dict(last_val, step=step)
        if store:
            checkpoint(improved)
            store.metrics(rows[logged:])
            logged = len(rows)

    model.train()
    while True:
        elapsed = time.monotonic() - start - paused_for
        # the first step's estimate is noisier than a measured step: it alone must not fit for the run to be refused
        keep = clock.reserve(cfg.seconds) if cfg.seconds is not None and step > 0 else 0.0
        out_of_time = cfg.seconds is not None and elapsed + clock.step_s + keep >= cfg.seconds
        if (cfg.steps is not None and step >= cfg.steps) or out_of_time:
            if out_of_time and step == 0:
                state = "failed"
                took = "longer than its whole budget" if math.isinf(clock.step_s) else f"about {clock.step_s:.1f} s"
                reason = (f"one training step of this model would take {took} (timed on a few images first), too "
                          f"long for a {cfg.seconds:g} s budget; use a smaller batch, K, image size or hidden width, "
                          "or a longer budget")
            break   # the next step would leave too little time for the final validation and checkpoint
        if control.paused:
            t0 = time.monotonic()
            if store:
                store.status("paused", "paused by the user", step)
            emit({"type": "paused", "step": step})
            go = control.wait()
            paused_for += time.monotonic() - t0
            if store and not control.paused:
                store.status("running", "training", step)
            if not go:
                state, reason = "stopped", "stopped by the user"
                break
        elif control.stopped:
            state, reason = "stopped", "stopped by the user"
            break

        changes = control.take_changes()
        if changes:
            optimizer = _apply_changes(model, optimizer, changes)
            base_lr = float(changes.get("lr", base_lr))  # a live lr is the new top of the schedule
            event = {"type": "changed", "step": step, **changes}
            rows.append(event)   # the run's folder keeps every live change beside its curves
            emit(event)
        if cfg.schedule != "constant":
            for group in optimizer.param_groups:
                group["lr"] = base_lr * cfg.lr_factor(step, time.monotonic() - start - paused_for)

        t_step = time.monotonic()
        idx = torch.randint(len(x_train), (cfg.batch_size,), generator=gen).to(device)
        batch = (x_train[idx], y_train[idx] if y_train is not None else None)
        loss, stats = model.training_loss(batch)
        if not torch.isfinite(loss):
            state = "failed"
            kept = f"the checkpoint of step {best['step']} was kept" if best else "no checkpoint had been saved yet"
            reason = (f"the loss became {float(loss.detach())} at step {step + 1}: the weights diverged. "
                      f"Lower the learning rate (now {optimizer.param_groups[0]['lr']:g}) and start again; {kept}")
            emit({"type": "failed", "step": step, "reason": reason})
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        clock.took_step(time.monotonic() - t_step)

        event = {"type": "train", "step": step, "time": time.monotonic() - start - paused_for,
                 "lr": optimizer.param_groups[0]["lr"], **stats}
        beta = getattr(getattr(model.config, "vq", None), "beta", None)
        if beta is not None:
            event["beta"] = beta
        emit(event)
        if step % cfg.log_every == 0:
            rows.append(event)
        early = step in EARLY_VAL_STEPS and step < cfg.val_every
        if (early or step % cfg.snapshot_every == 0) and hasattr(model, "snapshot"):
            emit({"type": "snapshot", "step": step, **model.snapshot(x_val[:8])})
        if early or step % cfg.val_every == 0:
            validate_and_save()

    if state != "failed" and (not rows or rows[-1].get("type") != "val" or rows[-1]["step"] != step) and step > 0:
        validate_and_save(final=True)
    if store:
        store.metrics(rows[logged:])
        store.status(state, reason, step, best=best)
    emit({"type": "end", "step": step, "state": state, "reason": reason})
    return TrainResult(state, reason, step, best, last_val, Path(out_dir) if out_dir else None)


class _BudgetClock:
    """What the next step, validation and checkpoint will take, from what the last ones took: so that a run with a
    time budget stops before a step or a validation would carry it past the budget, not after."""

    def __init__(self, cfg: TrainConfig, val_images: int):
        self.batch_size = cfg.batch_size
        self.val_images = val_images
        self.step_s = 0.0              # the slowest recent step, decaying: one slow step is not forgotten at once
        self.steps = 0                 # steps timed; before the first, step_s is estimate_step_s's
        self.val_per_image: float | None = None
        self.save_s = 0.0

    def took_step(self, seconds: float) -> None:
        self.step_s = seconds if self.steps == 0 else max(seconds, 0.9 * self.step_s)   # measured beats estimated
        self.steps += 1

    def val_per_image_s(self) -> float:
        """Measured, or before the first validation: a forward pass costs about a third of a training step."""
        if self.val_per_image is not None:
            return self.val_per_image
        return self.step_s / self.batch_size / 2

    def reserve(self, budget_s: float) -> float:
        """Time kept for the final validation and checkpoint: what they are expected to take, at most a quarter of
        the budget (a validation that needs more is done on fewer images)."""
        return min(self.val_per_image_s() * self.val_images + self.save_s, budget_s / 4)

    def images_that_fit(self, seconds_left: float) -> int:
        """How many validation images can be validated and the result saved in the time left (all of them
        when there is no time budget)."""
        per_image = self.val_per_image_s()
        if math.isinf(seconds_left) or per_image * self.val_images + self.save_s <= seconds_left:
            return self.val_images
        return max(0, min(self.val_images, int((seconds_left - self.save_s) / max(per_image, 1e-9))))

    def timed_val(self, run: Callable[[], dict[str, float]], n: int) -> dict[str, float]:
        t0 = time.monotonic()
        out = run()
        self.val_per_image = (time.monotonic() - t0) / max(n, 1)
        return out

    def timed_save(self, run: Callable[[], None]) -> None:
        t0 = time.monotonic()
        run()
        self.save_s = time.monotonic() - t0


def estimate_step_s(model: Trainable, x: Tensor, y: Tensor | None, batch_size: int,
                    limit_s: float = math.inf) -> float:
    """Seconds the first training step of `batch_size` images will take, before it is taken: steps of 1 image and of
    a quarter batch on fresh copies of the model, extrapolated linearly to the whole batch. A fresh copy's step
    includes what only a first step does (the k-means start of a codebook: 7 of the 8 s of a first step at
    K = 16,384); a one-image validation first pays the process's one-time costs (kernels, allocator).

    A probe that would itself take past `limit_s` (judged by the last one, scaled) is not run: the estimate is then
    inf, longer than any budget. The copies and a forked random state leave the run exactly as it would
    be without the estimate; the probes cost about a third of one step."""
    few = max(2, min(-(-batch_size // 4), len(x)))
    device = x.device
    t_start = time.monotonic()

    def timed(run: Callable[[], object]) -> float:
        t0 = time.monotonic()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.monotonic() - t0

    def step(n: int) -> float:
        probe = copy.deepcopy(model).train()
        return timed(lambda: probe.training_loss((x[:n], None if y is None else y[:n]))[0].backward())

    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if device.type == "cuda" else []):
        warm = copy.deepcopy(model).eval()
        one = 3 * timed(lambda: warm.evaluate(x[:1], None if y is None else y[:1], 1))   # a step: ~3 forwards
        for n in (1, few):
            if time.monotonic() - t_start + one * n >= limit_s:
                return math.inf   # this probe alone would use up the budget: so would the whole batch
            took = step(n)
            if n == 1:
                one = took
    per_image = max(0.0, (took - one) / (few - 1))
    return one + per_image * (batch_size - 1)


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
