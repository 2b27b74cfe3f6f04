"""Paint a VQ-VAE code map with the mouse or the keyboard: pick a code from the palette, drag over cells.

Plotly heatmaps return no selections and streamlit-drawable-canvas returns pixels, so this is a
small Streamlit Components v2 element whose HTML, CSS and JS live in ui/painter_assets/ (no package, no
build step). Those files are constant; everything that comes from the app travels in `data`, which the
JS validates and writes into the DOM only through properties, never as markup.

Protocol. Python sends `{codes, rev, seq, ...}` where `rev` fingerprints the `codes` argument. At
the end of each stroke the browser sets the state value `painted = {grid, base, seq}`: the whole
grid, the `rev` it was painted on, and a stroke counter (one rerun per stroke, not per cell). Each
run decides whether that painted grid still applies (see `_resolve`): a new stroke applies if it
was painted on these `codes`, or if `codes` is just the grid this painter returned last run (the
app fed the result back, the usual pattern). An old stroke keeps applying until `codes` changes
for another reason (a new image encoded, an undo), after which it is dropped for good.

Keyboard (WCAG 2.1.1): the grid is one tab stop with a cursor cell (a roving tabindex, as the ARIA grid
pattern has it); arrows move it, Space or Enter paints it, Shift+arrow paints while moving, I picks the
cell's code, [ and ] step through the palette, Ctrl+Z undoes the last stroke. The palette is a listbox,
one tab stop, arrows choose. Each keyboard paint is one stroke (one message), like a mouse drag.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from vqdemo.settings import is_int


class PainterInputError(ValueError):
    """Bad arguments to `grid_painter`; the message says what to pass instead."""


MAX_CELLS = 64 * 64
MAX_CODES = 4096
_TILE = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/]+={0,2}")
_COLOR = re.compile(r"[#A-Za-z0-9(),.%/ -]{1,64}")

_ASSETS = Path(__file__).resolve().parent / "painter_assets"   # painter.html, painter.css, painter.js


def _asset(name: str) -> str:
    """The text of one of the painter's files. Components v2 takes file paths only for an installed package that
    declares an asset_dir in its pyproject.toml; the app runs from its folder, so the files' text goes inline."""
    return (_ASSETS / name).read_text(encoding="utf-8")


_component = st.components.v2.component(
    "vqdemo_grid_painter", html=_asset("painter.html"), css=_asset("painter.css"), js=_asset("painter.js")
)


@dataclass(frozen=True)
class _Stroke:
    """The painted grid the browser sent, the `rev` it was painted on, and its stroke number."""

    grid: list[list[int]]
    base: str
    seq: int


@dataclass(frozen=True)
class _Memo:
    """What the previous run saw and returned, kept in session state per painter key."""

    codes_rev: str = ""
    out_rev: str = ""
    seen: int = 0
    accepted: int = 0


def _rev(grid: list[list[int]]) -> str:
    return hashlib.blake2b(json.dumps(grid, separators=(",", ":")).encode(), digest_size=8).hexdigest()


def _check_codes(codes: Any) -> list[list[int]]:
    rows = codes.tolist() if hasattr(codes, "tolist") else codes
    if not isinstance(rows, (list, tuple)) or not rows or not all(isinstance(r, (list, tuple)) for r in rows):
        raise PainterInputError("codes must be a non-empty list of rows of ints, e.g. [[0, 1], [2, 3]]")
    w = len(rows[0])
    if w == 0 or any(len(r) != w for r in rows):
        lengths = [len(r) for r in rows]
        raise PainterInputError(f"codes must be rectangular with non-empty rows, got row lengths {lengths}")
    if len(rows) * w > MAX_CELLS:
        raise PainterInputError(f"codes has {len(rows)}x{w} cells; the painter takes at most {MAX_CELLS}")
    bad = next((v for r in rows for v in r if not is_int(v)), None)
    if bad is not None:
        raise PainterInputError(f"codes must hold integer code ids, got {bad!r}")
    return [[int(v) for v in r] for r in rows]


def _check_look(
    codes: list[list[int]], tiles: list[str] | None, colors: list[str] | None
) -> tuple[int, list[str] | None, list[str]]:
    """Validate tiles/colours and derive K: their length, else the largest id in `codes` plus one."""
    if tiles is not None:
        if not isinstance(tiles, (list, tuple)) or not tiles:
            raise PainterInputError("tiles must be a non-empty list of data-URL images, one per code")
        bad = next((i for i, t in enumerate(tiles) if not isinstance(t, str) or not _TILE.fullmatch(t)), None)
        if bad is not None:
            raise PainterInputError(f"tiles[{bad}] is not a base64 data URL (data:image/png;base64,...)")
    if colors is not None:
        if not isinstance(colors, (list, tuple)) or not colors:
            raise PainterInputError("colors must be a non-empty list of CSS colours, one per code")
        bad = next((i for i, c in enumerate(colors) if not isinstance(c, str) or not _COLOR.fullmatch(c)), None)
        if bad is not None:
            raise PainterInputError(
                f"colors[{bad}] = {colors[bad]!r} is not a plain CSS colour like '#1f77b4' or 'rgb(31, 119, 180)'"
            )
        if tiles is not None and len(colors) != len(tiles):
            raise PainterInputError(
                f"tiles and colors need one entry per code: got {len(tiles)} tiles and {len(colors)} colours"
            )
    if tiles is not None or colors is not None:
        k = len(tiles if tiles is not None else colors)
    else:
        k = max(1, 1 + max(map(max, codes)))
    if k > MAX_CODES:
        raise PainterInputError(f"the painter shows at most {MAX_CODES} codes, got {k}")
    if colors is None:  # golden-angle hues: neighbouring ids get clearly different colours
        colors = [f"hsl({i * 137.508 % 360:.1f}, 62%, 55%)" for i in range(k)]
    return k, None if tiles is None else list(tiles), list(colors)


def _read_stroke(value: Any, h: int, w: int, k: int) -> _Stroke | None:
    """The browser's `painted` state if well formed (ids clamped to [0, k)), else None."""
    if not isinstance(value, dict):
        return None
    grid, base, seq = value.get("grid"), value.get("base"), value.get("seq")
    if not isinstance(base, str) or not is_int(seq) or not isinstance(grid, list) or len(grid) != h:
        return None
    if not all(isinstance(row, list) and len(row) == w and all(is_int(v) for v in row) for row in grid):
        return None
    return _Stroke([[min(max(int(v), 0), k - 1) for v in row] for row in grid], base, int(seq))


def _resolve(
    codes: list[list[int]], rev: str, stroke: _Stroke | None, memo: _Memo
) -> tuple[list[list[int]], _Memo]:
    """Pick the grid to show and return: the painted one while it still applies, else `codes`.

    A new stroke applies if it was painted on these codes, or if these codes are what this painter
    returned last run (the app fed its result back; the browser may not have seen that rerun yet).
    An old stroke keeps applying only while `codes` stays what it was or what we returned.
    """
    if stroke is None:
        applies = False
    elif stroke.seq > memo.seen:
        applies = stroke.base == rev or rev == memo.out_rev
    else:
        applies = stroke.seq == memo.accepted and rev in (memo.codes_rev, memo.out_rev)
    grid = stroke.grid if applies else codes
    seen = max(memo.seen, stroke.seq if stroke else 0)
    accepted = stroke.seq if stroke and applies else 0
    return grid, _Memo(codes_rev=rev, out_rev=_rev(grid), seen=seen, accepted=accepted)


def _noop() -> None:
    """State callbacks must exist for the state to be declared; the rerun itself is the event."""


def grid_painter(
    codes: list[list[int]],
    *,
    tiles: list[str] | None = None,
    colors: list[str] | None = None,
    selected: int = 0,
    cell_px: int = 48,
    show_ids: bool = True,
    key: str,
) -> list[list[int]]:
    """Show `codes` (h rows of w code ids) as a paintable grid under a palette of K codes.

    `tiles` are K data-URL images (each code decoded on its own), `colors` K CSS colours (the
    fallback look; generated when neither is given, with K = max id + 1). Ids are clamped to
    [0, K). `selected` is the palette's initial code. Returns the grid the student painted if they
    painted since `codes` last changed, else `codes`; feed it back (`codes = grid_painter(codes,
    ...)`) to make painting cumulative. To discard painting, pass different `codes` or a new `key`.
    """
    grid = _check_codes(codes)
    k, tiles, colors = _check_look(grid, tiles, colors)
    if not isinstance(key, str) or not key:
        raise PainterInputError("key must be a non-empty string that names this painter")
    if not is_int(selected) or not is_int(cell_px):
        raise PainterInputError(f"selected and cell_px must be ints, got {selected!r} and {cell_px!r}")
    h, w = len(grid), len(grid[0])
    grid = [[min(max(v, 0), k - 1) for v in row] for row in grid]
    rev = _rev(grid)

    memo_key = f"_grid_painter_memo:{key}"
    state = st.session_state.get(key)  # last run's component state; the same value the mount returns
    stroke = _read_stroke(state.get("painted") if isinstance(state, dict) else None, h, w, k)
    shown, memo = _resolve(grid, rev, stroke, st.session_state.get(memo_key, _Memo()))
    st.session_state[memo_key] = memo
    _component(
        key=key,
        data={
            "codes": shown,
            "rev": rev,
            "seq": memo.seen,
            "k": k,
            "tiles": tiles,
            "colors": colors,
            "selected": min(max(int(selected), 0), k - 1),
            "cellPx": min(max(int(cell_px), 8), 128),
            "showIds": bool(show_ids),
        },
        on_painted_change=_noop,
    )
    return [row[:] for row in shown]
