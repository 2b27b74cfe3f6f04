"""Atomic file writes: a temp file beside the target, flushed to disk, then os.replace.

A crash or a full disk mid-write leaves the previous file whole: a reader sees the old file or the new one, never
half of one. Run folders (`runs`) and downloaded datasets (`data`) are written this way.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    """The process umask, read once at import (os.umask can only be read by setting it, which races with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_read_umask()   # what open() would give: mkstemp's 0600 would hide runs from another account


def _mkstemp(folder: Path, prefix: str) -> tuple[int, str]:
    """A temp file beside its target, with the umask's mode rather than mkstemp's 0600."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:
        pass
    return fd, tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True))
