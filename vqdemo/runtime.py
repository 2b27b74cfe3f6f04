"""Process set-up that must happen before torch is imported: every entry point calls `configure()` first.

Two settings decide whether a CPU training step takes 85 ms or 2 s on the machines this app runs on:
- OpenMP's wait policy. With the default (spinning) idle OpenMP threads burn the cores that other work needs, and a
  torch op in a non-main thread can sit in libgomp: measured 10-40x slower steps on a busy 2-core machine. libgomp
  reads `OMP_WAIT_POLICY` once, when torch loads it, so it must be in the environment before `import torch`.
- glibc's malloc thresholds. Blocks over 128 KiB are mmap'ed and unmapped on free, so every activation buffer of
  every step page-faults afresh; on virtual machines where faults are dear that made a step about 20x slower.

Entry points: app.py (and ui/, for a page opened by deep link), `python -m vqdemo`, the job worker processes,
bench/*, tests/conftest.py. Importing vqdemo does nothing by itself: set-up is a call, made first, on purpose.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_state: dict[str, bool] = {}


def configure(threads: int | None = None) -> bool:
    """Set up this process for torch; True if it came before torch was imported (so the OpenMP policy holds).

    Idempotent. `threads` sets torch's intra-op thread count (and imports torch, so call it after the rest).
    """
    if "configured" not in _state:
        _state["before_torch"] = "torch" not in sys.modules
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        keep_freed_memory()
        _state["configured"] = True
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))
    return _state["before_torch"]


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Keep freed tensor memory in the heap instead of unmapping it. Best effort: False off glibc (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mmap_set = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
        return mmap_set and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        return False
