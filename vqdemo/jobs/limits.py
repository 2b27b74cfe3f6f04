"""How long one job may hold a worker, by the wall clock.

A run's time budget counts training seconds only, and the pause limit only stops a run paused for that long in
one go while others wait: a student pressing Play and Pause in turn could keep the only worker for ever. So every
job also has a wall-clock cap from the moment a worker takes it: its budget, plus the pause limit once, plus a
margin for loading data and building the model. At the cap the job is stopped (it saves its last checkpoint,
which is kept); a worker that does not end within a grace period after that is killed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

START_MARGIN_S = 30.0    # loading data and building the model before the first step, on a busy machine
STOP_GRACE_S = 30.0      # after the stop at the cap, how long a worker has to save its last checkpoint
CALL_SECONDS = 180.0     # a named computation's budget: UMAP of 5,000 points took ~31 s here, its import ~11 s


def wall_cap_s(budget_s: float, pause_limit_s: float) -> float:
    """The most wall-clock seconds a job with this training budget may hold a worker."""
    return budget_s + pause_limit_s + START_MARGIN_S


@dataclass
class WallClock:
    """A running job's wall-clock cap; `due()` says what to do now: nothing, stop it, or kill its worker."""

    cap_s: float
    started: float = field(default_factory=time.monotonic)
    stopped_at: float | None = None

    def due(self) -> str | None:
        now = time.monotonic()
        if self.stopped_at is not None:
            return "kill" if now - self.stopped_at > STOP_GRACE_S else None
        if now - self.started > self.cap_s:
            self.stopped_at = now
            return "stop"
        return None

    def reason(self, kept: bool) -> str:
        """Why the job ended; `kept` when it is a run whose saved checkpoints stay."""
        return (f"stopped after {self.cap_s / 60:.1f} min on a worker, pauses included (a job may hold one for its "
                "time budget plus the pause limit)" + ("; its checkpoints are kept" if kept else ""))
