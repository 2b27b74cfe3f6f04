"""Paint a VQ-VAE code map with the mouse or the keyboard: pick a code from the palette, drag over cells.

Plotly heatmaps return no selections and streamlit-drawable-canvas returns pixels, so this is a
small Streamlit Components v2 element with inline HTML/CSS/JS (no package, no build step). The
HTML/CSS/JS strings are constant; everything that comes from the app travels in `data`, which the
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
from typing import Any

import streamlit as st

from vqdemo.settings import is_int


class PainterInputError(ValueError):
    """Bad arguments to `grid_painter`; the message says what to pass instead."""


MAX_CELLS = 64 * 64
MAX_CODES = 4096
_TILE = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/]+={0,2}")
_COLOR = re.compile(r"[#A-Za-z0-9(),.%/ -]{1,64}")

_HTML = """
<div class="gp" data-testid="gridPainter" data-state="loading">
  <div class="gp-bar">
    <span class="gp-current" data-testid="gridPainterCurrent">
      <span class="gp-current-swatch"></span><span class="gp-current-label"></span>
    </span>
    <button type="button" class="gp-mode" data-mode="paint" aria-pressed="true"
            title="Click or drag over cells to paint them with the selected code">Brush</button>
    <button type="button" class="gp-mode" data-mode="pick" aria-pressed="false"
            title="Click a cell to pick its code (right-click or Alt-click also picks)">Eyedropper</button>
    <span class="gp-hint">Drag to paint &middot; right-click picks a code &middot; keys: arrows move,
      Space paints, I picks, Ctrl+Z undoes</span>
  </div>
  <div class="gp-palette" role="listbox" aria-label="Codebook: arrow keys choose the code to paint with"
       data-testid="gridPainterPalette"></div>
  <div class="gp-grid-wrap">
    <div class="gp-grid" role="grid" data-testid="gridPainterGrid"
         aria-label="Code map: arrow keys move, Space or Enter paints the cell, Shift+arrow paints while moving,
                     I picks the cell's code, [ and ] change the code, Ctrl+Z undoes"></div>
  </div>
  <span class="gp-sr" role="status" aria-live="polite" data-testid="gridPainterStatus"></span>
</div>
"""

_CSS = """
.gp {
  --cell: 48px;
  --swatch: calc(28px + (1rem - 16px) * 5);   /* 28 px; 48 px under presenter mode's 20 px root font */
  --gp-accent: var(--st-primary-color, #ff4b4b);
  --gp-fg: var(--st-text-color, #31333f);
  --gp-line: var(--st-border-color, rgba(128, 128, 128, 0.35));
  --gp-panel: var(--st-secondary-background-color, rgba(128, 128, 128, 0.08));
  display: flex;
  flex-direction: column;
  gap: 0.6rem;
  font-family: var(--st-font, system-ui, sans-serif);
  font-size: 0.875rem;   /* 14 px; grows with presenter mode's larger root font */
  color: var(--gp-fg);
  user-select: none;
  -webkit-user-select: none;
}
.gp-bar { display: flex; flex-wrap: wrap; align-items: center; gap: 0.5rem; }
.gp-current { display: inline-flex; align-items: center; gap: 0.45rem; min-width: 7.5em;
  font-variant-numeric: tabular-nums; font-weight: 600; }
.gp-current-swatch { width: 28px; height: 28px; border: 1px solid var(--gp-line); border-radius: 6px;
  background-size: cover; image-rendering: pixelated; }
.gp-mode { font: inherit; color: inherit; background: transparent; cursor: pointer;
  border: 1px solid var(--gp-line); border-radius: var(--st-button-radius, 8px); padding: 0.2rem 0.75rem; }
.gp-mode:hover { border-color: var(--gp-accent); }
.gp-mode[aria-pressed="true"] { border-color: var(--gp-accent); font-weight: 600;
  background: color-mix(in srgb, var(--gp-accent) 10%, transparent); box-shadow: inset 0 0 0 1px var(--gp-accent); }
.gp-mode:focus-visible { outline: 3px solid var(--gp-fg); outline-offset: 2px; }
.gp-hint { opacity: 0.8; font-size: 0.8rem; }   /* 0.8: still 4.5:1 against the page (WCAG 1.4.3) */
.gp-sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
.gp-palette { position: relative; display: flex; flex-wrap: wrap; gap: 4px;
  max-height: calc(4 * (var(--swatch) + 4px) + 12px);   /* four whole rows of swatches */
  overflow-y: auto; padding: 6px; border: 1px solid var(--gp-line);
  border-radius: var(--st-base-radius, 8px); background: var(--gp-panel); }
.gp-swatch { position: relative; width: var(--swatch); height: var(--swatch); padding: 0; cursor: pointer;
  border: 1px solid var(--gp-line); border-radius: 5px; background-size: cover;
  image-rendering: pixelated; transition: transform 80ms; }
.gp-swatch:hover, .gp-swatch.gp-hot { transform: scale(1.15); z-index: 1; }
.gp-swatch.gp-hot { box-shadow: 0 0 0 2px var(--gp-fg); }
.gp-swatch[aria-selected="true"] { outline: 2px solid var(--gp-accent); outline-offset: 1px; z-index: 2; }
.gp-swatch:focus-visible { outline: 3px solid var(--gp-fg); outline-offset: 2px; box-shadow: 0 0 0 2px #fff;
  z-index: 3; }
@media (prefers-reduced-motion: reduce) { .gp-swatch { transition: none; } }
.gp-show-ids:not(.gp-many) .gp-swatch::after { content: attr(data-code); position: absolute;
  right: 1px; bottom: 0; font-size: calc(10px + (1rem - 16px) * 1.5);   /* 10 px; 16 px when presenting */
  line-height: 1; color: #fff; text-shadow: 0 0 2px #000, 0 0 2px #000; }
.gp-grid-wrap { overflow-x: auto; padding: 2px; }
.gp-grid { display: grid; grid-template-columns: repeat(var(--cols, 1), var(--cell));
  grid-auto-rows: var(--cell); gap: 1px; width: max-content; padding: 1px; border-radius: 6px;
  background: var(--gp-line); touch-action: none; cursor: crosshair; }
.gp[data-mode="pick"] .gp-grid { cursor: copy; }
.gp-row { display: contents; }   /* rows for the ARIA grid; the CSS grid places the cells */
.gp-cell { position: relative; background-size: cover; image-rendering: pixelated; }
.gp-cell:focus { outline: none; }
.gp-cell:focus-visible { outline: 3px solid var(--gp-fg); outline-offset: -3px; box-shadow: inset 0 0 0 5px #fff;
  z-index: 2; }   /* dark ring inside a white one: visible over any tile */
.gp-cell:hover { outline: 2px solid var(--gp-fg); outline-offset: -2px; z-index: 1; }
.gp-cell.gp-hot { box-shadow: inset 0 0 0 2px var(--gp-accent); }
.gp-id { display: none; position: absolute; right: 2px; bottom: 1px; pointer-events: none;
  font-size: clamp(8px, calc(var(--cell) * 0.26), 12px); line-height: 1; color: #fff;
  text-shadow: 0 0 2px #000, 0 0 2px #000; font-variant-numeric: tabular-nums; }
.gp-show-ids .gp-id { display: block; }
"""

_JS = r"""
// One painter per mounted element. Streamlit calls this default export again (same parentElement,
// previous cleanup not called) every time `data` changes, so the painter is built once, kept in a
// WeakMap and only updated; window listeners are removed by the cleanup, which runs on unmount.
const painters = new WeakMap();

export default function (component) {
  let painter = painters.get(component.parentElement);
  if (!painter) {
    painter = createPainter(component.parentElement);
    painters.set(component.parentElement, painter);
  }
  painter.update(component);
  return painter.destroy;
}

const TILE = /^data:image\/(png|jpeg|gif|webp);base64,[A-Za-z0-9+\/]+={0,2}$/;
const isInt = (v) => Number.isInteger(v);
const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);
const sameList = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// Normalise the payload from Python; null when it is unusable (then the last good grid stays).
function readData(d) {
  if (!d || typeof d !== "object") return null;
  const k = isInt(d.k) ? clamp(d.k, 1, 4096) : 0;
  const rows = d.codes;
  if (!k || !Array.isArray(rows) || !rows.length || !Array.isArray(rows[0]) || !rows[0].length) return null;
  const w = rows[0].length;
  if (!rows.every((row) => Array.isArray(row) && row.length === w)) return null;
  const perCode = (xs, ok) =>
    Array.from({ length: k }, (_, i) => {
      const x = Array.isArray(xs) ? xs[i] : null;
      return typeof x === "string" && ok(x) ? x : "";
    });
  return {
    k,
    h: rows.length,
    w,
    grid: rows.map((row) => row.map((v) => (isInt(v) ? clamp(v, 0, k - 1) : 0))),
    rev: typeof d.rev === "string" ? d.rev : "",
    seq: isInt(d.seq) ? d.seq : 0,
    tiles: perCode(d.tiles, (t) => TILE.test(t)),
    colors: perCode(d.colors, (c) => CSS.supports("color", c)),
    selected: isInt(d.selected) ? clamp(d.selected, 0, k - 1) : 0,
    cellPx: isInt(d.cellPx) ? clamp(d.cellPx, 8, 128) : 48,
    showIds: d.showIds !== false,
  };
}

function createPainter(root) {
  const $ = (sel) => root.querySelector(sel);
  const box = $(".gp");
  const palette = $(".gp-palette");
  const gridEl = $(".gp-grid");
  const currentSwatch = $(".gp-current-swatch");
  const currentLabel = $(".gp-current-label");
  const modeButtons = [...root.querySelectorAll(".gp-mode")];
  const status = $(".gp-sr");
  const s = {
    d: null, grid: [], cells: [], swatches: [], selected: 0, pySelected: null, hot: null,
    base: "", seq: 0, sentSeq: 0, strokes: 0, mode: "paint", painting: false, changed: false, send: null,
    cursor: [0, 0], history: [], before: null,
  };
  const copy = (grid) => grid.map((row) => row.slice());
  const say = (text) => { status.textContent = text; };

  // Dress a cell or swatch as a code: its decoded tile over its colour (both validated).
  function look(el, code) {
    el.style.backgroundColor = s.d.colors[code];
    el.style.backgroundImage = s.d.tiles[code] ? `url("${s.d.tiles[code]}")` : "";
  }

  function buildPalette() {
    const top = palette.scrollTop;
    s.swatches = Array.from({ length: s.d.k }, (_, code) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "gp-swatch";
      b.dataset.code = code;
      b.title = `code ${code}`;
      b.tabIndex = -1;
      b.setAttribute("role", "option");
      b.setAttribute("aria-label", `code ${code}`);
      b.setAttribute("aria-selected", "false");
      look(b, code);
      return b;
    });
    palette.replaceChildren(...s.swatches);
    palette.scrollTop = top;
  }

  function buildGrid() {
    gridEl.style.setProperty("--cols", String(s.d.w));
    const refocus = gridEl.contains(document.activeElement);
    s.cells = s.grid.map((row, r) =>
      row.map((_, c) => {
        const cell = document.createElement("div");
        cell.className = "gp-cell";
        cell.setAttribute("role", "gridcell");
        cell.tabIndex = -1;
        cell.dataset.r = r;
        cell.dataset.c = c;
        const id = document.createElement("span");
        id.className = "gp-id";
        id.setAttribute("aria-hidden", "true");
        cell.append(id);
        return cell;
      }),
    );
    const rows = s.cells.map((cells) => {
      const row = document.createElement("div");
      row.className = "gp-row";
      row.setAttribute("role", "row");
      row.replaceChildren(...cells);
      return row;
    });
    gridEl.replaceChildren(...rows);
    moveCursor(Math.min(s.cursor[0], s.d.h - 1), Math.min(s.cursor[1], s.d.w - 1), refocus);
  }

  // The cursor cell is the grid's one tab stop (roving tabindex); moving it moves the focus.
  function moveCursor(r, c, focus) {
    const [r0, c0] = s.cursor;
    if (s.cells[r0] && s.cells[r0][c0]) s.cells[r0][c0].tabIndex = -1;
    s.cursor = [clamp(r, 0, s.d.h - 1), clamp(c, 0, s.d.w - 1)];
    const cell = s.cells[s.cursor[0]][s.cursor[1]];
    cell.tabIndex = 0;
    if (focus) cell.focus();
  }

  function drawCell(r, c, force) {
    const cell = s.cells[r][c];
    const code = s.grid[r][c];
    if (!force && cell.dataset.code === String(code)) return;
    cell.dataset.code = code;
    cell.title = `row ${r}, col ${c}: code ${code}`;
    cell.setAttribute("aria-label", `row ${r}, column ${c}: code ${code}`);
    cell.firstChild.textContent = String(code);
    look(cell, code);
  }

  function select(code) {
    s.swatches.forEach((b, i) => {
      b.setAttribute("aria-selected", String(i === code));
      b.tabIndex = i === code ? 0 : -1;
    });
    s.selected = code;
    box.dataset.selected = code;
    look(currentSwatch, code);
    currentLabel.textContent = `code ${code}`;
    const b = s.swatches[code];  // keep it visible inside the palette's own scroll box
    const view = [palette.scrollTop, palette.scrollTop + palette.clientHeight];
    if (b && (b.offsetTop < view[0] || b.offsetTop + b.offsetHeight > view[1])) {
      palette.scrollTop = b.offsetTop - palette.clientHeight / 2;
    }
  }

  function setMode(mode) {
    s.mode = mode;
    box.dataset.mode = mode;
    modeButtons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.mode === mode)));
  }

  // Hovering a cell lights up its codebook entry; hovering a swatch lights up the cells using it.
  function highlight(code, inGrid) {
    const key = code === null ? null : `${code}:${inGrid}`;
    if (s.hot === key) return;
    s.hot = key;
    s.swatches.forEach((b, i) => b.classList.toggle("gp-hot", i === code));
    const cellHot = (cell) => !inGrid && cell.dataset.code === String(code);
    s.cells.flat().forEach((cell) => cell.classList.toggle("gp-hot", cellHot(cell)));
  }

  const cellOf = (e) => {
    const cell = e.target instanceof Element ? e.target.closest(".gp-cell") : null;
    return cell && gridEl.contains(cell) ? cell : null;
  };

  function paint(cell) {
    const r = Number(cell.dataset.r), c = Number(cell.dataset.c);
    if (s.grid[r][c] === s.selected) return;
    s.grid[r][c] = s.selected;
    s.changed = true;
    drawCell(r, c, false);
  }

  function pick(cell) {
    select(s.grid[Number(cell.dataset.r)][Number(cell.dataset.c)]);
    setMode("paint");
    say(`picked code ${s.selected}`);
  }

  // One message per stroke: the whole grid, the codes it was painted on, and a stroke number.
  function endStroke() {
    if (!s.painting) return;
    s.painting = false;
    box.classList.remove("gp-painting");
    if (!s.changed || !s.send) return;
    s.changed = false;
    s.history.push(s.before);
    sendGrid();
  }

  function sendGrid() {
    if (!s.send) return;
    s.seq += 1;
    s.sentSeq = s.seq;
    s.strokes += 1;
    box.dataset.strokes = s.strokes;
    s.send("painted", { grid: s.grid.map((row) => row.slice()), base: s.base, seq: s.seq });
  }

  gridEl.addEventListener("pointerdown", (e) => {
    const cell = cellOf(e);
    if (!cell || !s.d) return;
    e.preventDefault();
    if (e.button === 2 || e.altKey || s.mode === "pick") return pick(cell);
    if (e.button !== 0) return;
    // Touch pointers are captured by the first cell; release so pointerover reaches the others.
    if (cell.hasPointerCapture(e.pointerId)) cell.releasePointerCapture(e.pointerId);
    highlight(null);
    moveCursor(Number(cell.dataset.r), Number(cell.dataset.c), false);
    s.before = copy(s.grid);
    s.painting = true;
    s.changed = false;
    box.classList.add("gp-painting");
    paint(cell);
  });
  gridEl.addEventListener("pointerover", (e) => {
    const cell = cellOf(e);
    if (!cell) return;
    if (!s.painting) return highlight(Number(cell.dataset.code), true);
    if (e.buttons & 1) paint(cell);
    else endStroke();  // the button was released outside the window
  });
  gridEl.addEventListener("pointerleave", () => highlight(null));
  gridEl.addEventListener("contextmenu", (e) => e.preventDefault());
  palette.addEventListener("click", (e) => {
    const b = e.target instanceof Element ? e.target.closest(".gp-swatch") : null;
    if (b) select(Number(b.dataset.code));
  });
  palette.addEventListener("pointerover", (e) => {
    const b = e.target instanceof Element ? e.target.closest(".gp-swatch") : null;
    if (b) highlight(Number(b.dataset.code), false);
  });
  palette.addEventListener("pointerleave", () => highlight(null));
  modeButtons.forEach((b) => b.addEventListener("click", () => setMode(b.dataset.mode)));

  // Keyboard painting: each painted cell is one stroke, so Python sees it at once (as after a mouse drag).
  function paintCursor() {
    const [r, c] = s.cursor;
    if (s.grid[r][c] === s.selected) return say(`row ${r}, column ${c} already has code ${s.selected}`);
    s.history.push(copy(s.grid));
    s.grid[r][c] = s.selected;
    drawCell(r, c, false);
    sendGrid();
    say(`painted row ${r}, column ${c} with code ${s.selected}`);
  }

  function undo() {
    if (!s.history.length) return say("nothing to undo here; the Undo stroke button undoes older strokes");
    s.grid = s.history.pop();
    s.grid.forEach((row, r) => row.forEach((_, c) => drawCell(r, c, false)));
    sendGrid();
    say("undid the last stroke");
  }

  const MOVES = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
  gridEl.addEventListener("keydown", (e) => {
    if (!s.d || s.painting) return;
    const [r, c] = s.cursor;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (key in MOVES) {
      moveCursor(r + MOVES[key][0], c + MOVES[key][1], true);
      if (e.shiftKey) paintCursor();
    } else if (key === "Home" || key === "End") {
      moveCursor(e.ctrlKey ? (key === "Home" ? 0 : s.d.h - 1) : r, key === "Home" ? 0 : s.d.w - 1, true);
    } else if (key === " " || key === "Enter") {
      paintCursor();
    } else if (key === "z" && (e.ctrlKey || e.metaKey)) {
      undo();
    } else if (key === "i") {
      pick(s.cells[r][c]);
    } else if (key === "[" || key === "]") {
      select(clamp(s.selected + (key === "]" ? 1 : -1), 0, s.d.k - 1));
      say(`code ${s.selected}`);
    } else {
      return;
    }
    e.preventDefault();
  });
  gridEl.addEventListener("focusin", (e) => {
    const cell = cellOf(e);
    if (cell) moveCursor(Number(cell.dataset.r), Number(cell.dataset.c), false);
  });

  // The palette is a listbox: one tab stop, arrows (a row at a time up and down) choose the code.
  palette.addEventListener("keydown", (e) => {
    if (!s.d) return;
    const across = Math.max(1, s.swatches.filter((b) => b.offsetTop === s.swatches[0].offsetTop).length);
    const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -across, ArrowDown: across }[e.key];
    const to = e.key === "Home" ? 0 : e.key === "End" ? s.d.k - 1 : step ? s.selected + step : null;
    if (to === null) return;
    e.preventDefault();
    select(clamp(to, 0, s.d.k - 1));
    s.swatches[s.selected].focus();
  });
  window.addEventListener("pointerup", endStroke);
  window.addEventListener("pointercancel", endStroke);
  window.addEventListener("blur", endStroke);

  function update({ data, setStateValue }) {
    s.send = setStateValue;
    const d = readData(data);
    if (!d) {
      box.dataset.state = s.d ? "ready" : "invalid";
      return;
    }
    const prev = s.d;
    s.d = d;
    box.dataset.state = "ready";
    const reshaped = !prev || prev.h !== d.h || prev.w !== d.w;
    const relooked =
      !prev || prev.k !== d.k || !sameList(prev.tiles, d.tiles) || !sameList(prev.colors, d.colors);
    s.seq = Math.max(s.seq, d.seq);
    // Keep the local grid while a stroke is under way or Python has not seen the last one yet.
    if (!reshaped && (s.painting || s.sentSeq > d.seq)) {
      s.grid = s.grid.map((row) => row.map((v) => Math.min(v, d.k - 1)));
    } else {
      const same = s.grid.length === d.h && s.grid.every((row, r) => sameList(row, d.grid[r]));
      if (!same) s.history = [];   // a reset, a load or Python's undo: the local undo steps no longer apply
      s.grid = d.grid;
      s.base = d.rev;
      s.painting = false;
    }
    box.style.setProperty("--cell", `${d.cellPx}px`);
    box.classList.toggle("gp-show-ids", d.showIds);
    box.classList.toggle("gp-many", d.k > 64);  // ids on hundreds of swatches are clutter; hover shows them
    if (relooked) buildPalette();
    if (reshaped) buildGrid();
    s.grid.forEach((row, r) => row.forEach((_, c) => drawCell(r, c, relooked)));
    highlight(null);
    // Python's `selected` wins only when it changes; otherwise the student's pick stays.
    const pyChanged = d.selected !== s.pySelected;
    s.pySelected = d.selected;
    if (pyChanged || s.selected >= d.k) select(d.selected);
    else if (relooked) select(s.selected);
  }

  function destroy() {
    window.removeEventListener("pointerup", endStroke);
    window.removeEventListener("pointercancel", endStroke);
    window.removeEventListener("blur", endStroke);
    painters.delete(root);
  }

  setMode("paint");
  return { update, destroy };
}
"""

_component = st.components.v2.component("vqdemo_grid_painter", html=_HTML, css=_CSS, js=_JS)


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
