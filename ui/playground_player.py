"""Play a recorded 2-D codebook run in the browser: encoder outputs, codes and their cells on a canvas.

A Streamlit Components v2 element with inline HTML/CSS/JS (ui/painter.py reads its own from files). The server
records the whole run once (vqdemo.playground.run, cached per setting and shared by every student) and sends it
packed (vqdemo.playground.pack); the browser animates it frame by frame with requestAnimationFrame, so a frame costs
the server nothing. The HTML/CSS/JS strings are constant; the run travels in `data` and is read as numbers.

For tests and bench/playground_fps.py the root element carries data-state (playing / paused / done),
data-frame (the frame shown), data-drawn (frames drawn since the run arrived) and data-draw-ms (the last
frame's drawing time).

Accessibility: every control is a native button, range or select (keyboard-operable as they are); the canvas is
one tab stop too, where Space plays or pauses, the arrows step a frame back or forward and Home/End jump to the
ends. Dead codes are crosses, live ones discs (shape, not red alone). With prefers-reduced-motion the run does
not start by itself (WCAG 2.2.2): it waits on its first frame for Play or Step. A visually hidden live region
reads the status line out after each step, pause or scrub, never while it plays (that would be 20 a second).
"""

from __future__ import annotations

import streamlit as st

_HTML = """
<div class="pg" data-testid="playground" data-state="loading" data-frame="0" data-drawn="0">
  <canvas class="pg-canvas" role="img" tabindex="0" data-testid="playgroundCanvas"
          aria-label="Encoder outputs, codes and the region each code owns: Space plays or pauses, arrows step">
  </canvas>
  <div class="pg-bar">
    <button type="button" class="pg-play" data-testid="playgroundPlay">Pause</button>
    <button type="button" class="pg-step" title="One frame forward">Step</button>
    <button type="button" class="pg-restart" title="Back to step 0 and play">Restart</button>
    <input type="range" class="pg-scrub" min="0" max="0" value="0" aria-label="Frame">
    <select class="pg-speed" aria-label="Frames per second">
      <option value="5">5 fps</option><option value="10">10 fps</option>
      <option value="20" selected>20 fps</option><option value="30">30 fps</option>
    </select>
  </div>
  <div class="pg-status" data-testid="playgroundStatus"></div>
  <div class="pg-sr" role="status" aria-live="polite" data-testid="playgroundAnnounce"></div>
</div>
"""

_CSS = """
.pg { font-family: var(--st-font, system-ui, sans-serif); font-size: 1rem; color: var(--st-text-color, #111);
      max-width: 100%; }
.pg-canvas { display: block; width: 100%; max-width: 560px; aspect-ratio: 1 / 1; border: 1px solid #d1d5db;
             border-radius: 6px; background: #fff; touch-action: none; }
.pg-bar { display: flex; flex-wrap: wrap; gap: 0.4rem; align-items: center; margin-top: 0.4rem; max-width: 560px; }
.pg-bar button, .pg-bar select { font: inherit; padding: 0.15rem 0.6rem; border: 1px solid #9ca3af;
      border-radius: 6px; background: #f9fafb; color: inherit; cursor: pointer; }
.pg-scrub { flex: 1 1 8rem; min-width: 6rem; accent-color: var(--st-primary-color, #1f77b4); }
.pg-status { margin-top: 0.3rem; font-variant-numeric: tabular-nums; max-width: 560px; }
.pg-bar button:focus-visible, .pg-bar select:focus-visible, .pg-scrub:focus-visible, .pg-canvas:focus-visible {
      outline: 3px solid var(--st-primary-color, #1f77b4); outline-offset: 2px; }
.pg-sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
"""

_JS = """
const players = new WeakMap();

export default function (component) {
  let player = players.get(component.parentElement);
  if (!player) {
    player = createPlayer(component.parentElement);
    players.set(component.parentElement, player);
  }
  player.update(component.data);
  return player.destroy;
}

const GRID = 150;   // cells are found on a GRID x GRID raster (VQ: 150 * 150 * K distances per frame)
const isNum = (v) => typeof v === "number" && Number.isFinite(v);

function bytes(b64) {
  if (typeof b64 !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) return null;
  const raw = atob(b64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function hexRgb(c) {
  const m = /^#([0-9a-fA-F]{6})$/.exec(c);
  const v = m ? parseInt(m[1], 16) : 0x888888;
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

// Normalise the payload; null when it is unusable (then nothing is drawn).
function readRun(d) {
  if (!d || typeof d !== "object") return null;
  if (!Number.isInteger(d.frames) || !Number.isInteger(d.n) || !Number.isInteger(d.k)) return null;
  const f = d.frames, n = d.n, k = d.k;
  const points = bytes(d.points), codes = bytes(d.codes), countBytes = bytes(d.counts);
  if (!points || points.length !== f * n * 2 || !codes || codes.length !== f * k * 2) return null;
  if (!countBytes || countBytes.length !== f * k * 2) return null;
  const counts = new Uint16Array(countBytes.buffer);
  const colors = Array.isArray(d.colors) && d.colors.length === k ? d.colors.map(String) : Array(k).fill("#1f77b4");
  const list = (a) => (Array.isArray(a) && a.length === f && a.every(isNum) ? a : Array(f).fill(NaN));
  // FSQ: the rounding cells are boxes between per-axis edges; each point's code comes from the server
  let edges = null, ids = null;
  if (d.grid) {
    const ok = (e) => Array.isArray(e) && e.every(isNum);
    const idBytes = bytes(d.ids);
    if (!Array.isArray(d.edges) || d.edges.length !== 2 || !d.edges.every(ok)) return null;
    if ((d.edges[0].length + 1) * (d.edges[1].length + 1) !== k) return null;
    if (!idBytes || idBytes.length !== f * n * 2) return null;
    edges = d.edges; ids = new Uint16Array(idBytes.buffer);
  }
  return { f, n, k, points, codes, counts, rgb: colors.map(hexRgb), colors, dead: String(d.dead || "#dc2626"),
           step: list(d.step), loss: list(d.loss), perplexity: list(d.perplexity), rev: String(d.rev || ""),
           fps: [5, 10, 20, 30].includes(d.fps) ? d.fps : 20, grid: !!d.grid, edges, ids };
}

// FSQ: the code of a point (byte units) is the mixed-radix number of the edges below it on each axis
function cellOf(px, py, edges) {
  let ix = 0, iy = 0;
  while (ix < edges[0].length && px >= edges[0][ix]) ix++;
  while (iy < edges[1].length && py >= edges[1][iy]) iy++;
  return ix + (edges[0].length + 1) * iy;
}

function createPlayer(root) {
  const box = root.querySelector(".pg"), canvas = root.querySelector(".pg-canvas");
  const play = root.querySelector(".pg-play"), stepBtn = root.querySelector(".pg-step");
  const restart = root.querySelector(".pg-restart"), scrub = root.querySelector(".pg-scrub");
  const speed = root.querySelector(".pg-speed"), status = root.querySelector(".pg-status");
  const announce = root.querySelector(".pg-sr");
  const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");
  const ctx = canvas.getContext("2d");
  const cells = document.createElement("canvas");
  cells.width = GRID; cells.height = GRID;
  const cellCtx = cells.getContext("2d");
  const cellImg = cellCtx.createImageData(GRID, GRID);
  const label = new Int32Array(GRID * GRID);
  const s = { run: null, frame: 0, playing: false, last: 0, drawn: 0, raf: 0 };

  function nearest(px, py, codes, off, k) {   // px, py in 0..255 byte space
    let best = 0, bestD = Infinity;
    for (let j = 0; j < k; j++) {
      const dx = px - codes[off + 2 * j], dy = py - codes[off + 2 * j + 1];
      const dd = dx * dx + dy * dy;
      if (dd < bestD) { bestD = dd; best = j; }
    }
    return best;
  }

  function draw() {
    const r = s.run;
    if (!r) return;
    const t0 = performance.now();
    const size = Math.max(120, Math.round(canvas.clientWidth || 480));
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(size * dpr)) {
      canvas.width = Math.round(size * dpr);
      canvas.height = canvas.width;
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const f = s.frame, k = r.k, n = r.n, cOff = f * k * 2, pOff = f * n * 2, kOff = f * k;
    const X = (b) => (b / 255) * size, Y = (b) => size - (b / 255) * size;
    // Cells: each raster cell takes the colour of the code it belongs to, pale; borders darker. VQ: the nearest
    // code (Voronoi cells); FSQ: the box between the rounding edges (not the nearest grid point).
    for (let gy = 0; gy < GRID; gy++) {
      const by = 255 * (1 - (gy + 0.5) / GRID);
      for (let gx = 0; gx < GRID; gx++) {
        const bx = 255 * (gx + 0.5) / GRID;
        label[gy * GRID + gx] = r.grid ? cellOf(bx, by, r.edges) : nearest(bx, by, r.codes, cOff, k);
      }
    }
    const px = cellImg.data;
    for (let i = 0; i < GRID * GRID; i++) {
      const c = r.rgb[label[i]];
      const edge = (i % GRID < GRID - 1 && label[i + 1] !== label[i])
        || (i + GRID < GRID * GRID && label[i + GRID] !== label[i]);
      const a = edge ? 0.55 : 0.16;
      px[4 * i] = Math.round(255 * (1 - a) + (edge ? 60 : c[0]) * a);
      px[4 * i + 1] = Math.round(255 * (1 - a) + (edge ? 60 : c[1]) * a);
      px[4 * i + 2] = Math.round(255 * (1 - a) + (edge ? 60 : c[2]) * a);
      px[4 * i + 3] = 255;
    }
    cellCtx.putImageData(cellImg, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(cells, 0, 0, size, size);
    // Encoder outputs: small dots in the colour of the code they snap to (FSQ: the code it rounded to).
    for (let i = 0; i < n; i++) {
      const bx = r.points[pOff + 2 * i], by = r.points[pOff + 2 * i + 1];
      ctx.fillStyle = r.colors[r.grid ? r.ids[f * n + i] : nearest(bx, by, r.codes, cOff, k)];
      ctx.fillRect(X(bx) - 1.5, Y(by) - 1.5, 3, 3);
    }
    // Codes: live ones as outlined discs in their colour, dead ones (no point picked them) as red crosses.
    let dead = 0;
    for (let j = 0; j < k; j++) {
      const x = X(r.codes[cOff + 2 * j]), y = Y(r.codes[cOff + 2 * j + 1]);
      if (r.counts[kOff + j] === 0 && !r.grid) {
        dead++;
        ctx.strokeStyle = r.dead; ctx.lineWidth = 2.5;
        ctx.beginPath(); ctx.moveTo(x - 5, y - 5); ctx.lineTo(x + 5, y + 5);
        ctx.moveTo(x + 5, y - 5); ctx.lineTo(x - 5, y + 5); ctx.stroke();
      } else {
        ctx.fillStyle = r.colors[j]; ctx.strokeStyle = "#111827"; ctx.lineWidth = 1.5;
        ctx.beginPath(); ctx.arc(x, y, r.grid ? 4 : 6, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
      }
    }
    let used = 0;
    for (let j = 0; j < k; j++) if (r.counts[kOff + j] > 0) used++;
    const fmt = (v, d) => (isNum(v) ? v.toFixed(d) : "?");
    status.textContent = `step ${r.step[f]} of ${r.step[r.f - 1]}: ${used} of ${k} codes used` +
      (r.grid ? " (a fixed grid: nothing to restart)" : `, ${dead} dead`) +
      `, perplexity ${fmt(r.perplexity[f], 1)}, loss ${fmt(r.loss[f], 4)}`;
    scrub.value = String(f);
    s.drawn++;
    box.dataset.frame = String(f);
    box.dataset.drawn = String(s.drawn);
    box.dataset.drawMs = (performance.now() - t0).toFixed(2);
  }

  function setPlaying(on) {
    s.playing = on && !!s.run;
    play.textContent = s.playing ? "Pause" : "Play";
    box.dataset.state = s.playing ? "playing" : (s.run && s.frame >= s.run.f - 1 ? "done" : "paused");
    cancelAnimationFrame(s.raf);
    if (s.playing) { s.last = 0; s.raf = requestAnimationFrame(tick); }
    else announce.textContent = status.textContent;
  }

  function tick(now) {
    if (!s.playing || !s.run) return;
    const interval = 1000 / Number(speed.value);
    if (!s.last || now - s.last >= interval) {
      s.last = s.last ? s.last + interval * Math.floor((now - s.last) / interval) : now;
      draw();
      if (s.frame >= s.run.f - 1) { setPlaying(false); return; }
      s.frame++;
    }
    s.raf = requestAnimationFrame(tick);
  }

  play.addEventListener("click", () => {
    if (s.run && !s.playing && s.frame >= s.run.f - 1) s.frame = 0;
    setPlaying(!s.playing);
  });
  function show(frame) {   // a still frame, on request (Step, scrub, keys)
    if (!s.run) return;
    s.frame = Math.min(Math.max(frame, 0), s.run.f - 1);
    setPlaying(false);
    draw();
    announce.textContent = status.textContent;
  }
  stepBtn.addEventListener("click", () => show(s.frame + 1));
  canvas.addEventListener("keydown", (e) => {
    if (!s.run) return;
    const to = { ArrowRight: s.frame + 1, ArrowLeft: s.frame - 1, Home: 0, End: s.run.f - 1 }[e.key];
    if (to !== undefined) show(to);
    else if (e.key === " " || e.key === "Enter" || e.key === "k") play.click();
    else return;
    e.preventDefault();
  });
  restart.addEventListener("click", () => { s.frame = 0; setPlaying(true); });
  scrub.addEventListener("input", () => show(Number(scrub.value)));
  const onResize = () => { if (!s.playing) draw(); };
  window.addEventListener("resize", onResize);

  function update(data) {
    const r = readRun(data);
    if (!r) { box.dataset.state = "error"; status.textContent = "This run could not be read."; return; }
    if (s.run && s.run.rev === r.rev) return;   // a rerun with the same run: keep playing where we are
    s.run = r; s.frame = 0; s.drawn = 0;
    scrub.max = String(r.f - 1);
    speed.value = String(r.fps);
    draw();
    setPlaying(!reducedMotion.matches);
  }

  function destroy() {
    cancelAnimationFrame(s.raf);
    window.removeEventListener("resize", onResize);
    players.delete(root);
  }

  return { update, destroy };
}
"""

_component = st.components.v2.component("vqdemo_playground", html=_HTML, css=_CSS, js=_JS)


def player(run: dict, colors: list[str], dead: str, rev: str, grid: bool = False, fps: int = 20,
           key: str = "playground") -> None:
    """Show a packed run (vqdemo.playground.pack) and play it at `fps`; `rev` names the run, so a rerun with
    the same rev keeps the animation where it is. grid: the codes are a fixed FSQ grid (none can die), drawn with
    its rounding cells (the run's `edges`) and each point coloured by the code it rounded to (`ids`)."""
    _component(key=key, data={**run, "colors": list(colors), "dead": dead, "rev": rev, "grid": bool(grid),
                              "fps": int(fps)})
