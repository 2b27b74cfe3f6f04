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
