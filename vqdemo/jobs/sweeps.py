"""Sweeps: one link, a different (K, beta) cell for each student, the same cell on every visit.

A teacher's sweep is pinned: its cells are handed out in turn (every cell used before any repeats) and each
student's is kept for good, on disk too (`<runs>/sweeps.json`), so no later visitor, made-up student or other sweep
moves it. Any other sweep gives a cell from a hash of (sweep, student), which depends on nothing else at all.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

from .. import files, runs

MAX_PINNED_SWEEPS = 16   # teachers' sweeps remembered, the oldest forgotten (2,000 students each fit sweeps.json)
MAX_SWEEP_OWNERS = 2000  # students remembered per pinned sweep; later ones get a cell from their id's hash
SWEEPS_FILE = "sweeps.json"


class Sweeps:
    """The pinned sweeps of one runs folder and the cell each student was given."""

    def __init__(self, runs_dir: Path):
        self.path = runs_dir / SWEEPS_FILE
        self._lock = threading.Lock()
        self.given: OrderedDict[str, dict[str, int]] = self._read()

    def pin(self, sweep: str) -> None:
        with self._lock:
            self.given.setdefault(sweep, {})
            self.given.move_to_end(sweep)
            while len(self.given) > MAX_PINNED_SWEEPS:
                self.given.popitem(last=False)
            self._write()

    def pinned(self, sweep: str) -> bool:
        with self._lock:
            return sweep in self.given

    def cell(self, sweep: str, owner: str, cells: int) -> int:
        cells = max(1, cells)
        with self._lock:
            given = self.given.get(sweep)
            if given is None or (owner not in given and len(given) >= MAX_SWEEP_OWNERS):
                return int(hashlib.blake2b(f"{sweep}\0{owner}".encode(), digest_size=4).hexdigest(), 16) % cells
            if owner not in given:
                given[owner] = len(given)
                self._write()
            return given[owner] % cells

    def _read(self) -> OrderedDict[str, dict[str, int]]:
        try:
            kept = runs.read_json(self.path)
        except runs.CheckpointError:
            return OrderedDict()
        return OrderedDict((str(name), {str(o): c for o, c in given.items() if isinstance(c, int) and c >= 0})
                           for name, given in list(kept.items())[-MAX_PINNED_SWEEPS:] if isinstance(given, dict))

    def _write(self) -> None:
        try:
            files.write_json(self.path, dict(self.given))
        except OSError:
            pass   # a read-only runs folder: the cells hold until the server stops
