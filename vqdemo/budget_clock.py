"""A run's time budget: what the next step, validation and checkpoint will take, so that a run with a time budget
stops before one of them would carry it past the budget, not after (`BudgetClock`), and the first step's time,
estimated before it is taken (`estimate_step_s`)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .trainer import Trainable, TrainConfig


class BudgetClock:
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
