"""Codebook: every code decoded alone and sorted by use, dead codes marked, perplexity against K, a 2-D
map of the codebook among the encoder's outputs (PCA at once, UMAP from a background worker), and the
validation images that use a chosen code most."""

import math
from functools import partial

import numpy as np
import streamlit as st
import torch

from ui import charts, describe, state, text, theme
from ui import figures as fg
from ui.jobs import job_queue, tick_seconds
from vqdemo import analysis, explain
from vqdemo.jobs import FINISHED, JobError
from vqdemo.quantize import perplexity_of

MAP_POINTS = 2000  # encoder outputs on the 2-D map: UMAP of ~2k points takes seconds, not a minute
INIT_NAMES = {"kmeans": "k-means on encoder outputs", "uniform": "U(-1/K, 1/K)", "normal": "N(0, 1)"}

loaded = state.current()
if loaded is None:
    st.stop()
model, data, cfg = loaded.model, loaded.data, loaded.model.config
big = theme.presenter()

st.title("Codebook: what every code learned, and which ones are used")
if loaded.kind == "vae":
    st.info("This model is a plain VAE: it has no codebook. Pick a VQ or RQ model in the sidebar.")
    st.stop()

key = loaded.key
sizes = model.codebook_sizes


@st.cache_resource(max_entries=16, show_spinner="Encoding the validation set...")
def codebook_view(key: tuple, depth: int, _model, _x, _y) -> dict:
    """Usage, tiles and the 2-D map's points for one depth, once per model (shared, read-only)."""
    codes = analysis.encode_all(_model, _x)                      # (N, h, w) or (N, depth, h, w)
    codes = codes[:, depth] if codes.dim() == 4 else codes
    k = _model.codebook_sizes[depth]
    counts = analysis.usage(codes, k)
    pts = explain.encoder_points(_model, _x, _y, depth=depth, max_points=MAP_POINTS, seed=0)
    both = np.concatenate([pts["codebook"], pts["points"]])     # one projection for codes and outputs
    return {"codes": codes, "counts": counts.numpy(), "perplexity": perplexity_of(counts),
            "tiles": analysis.code_tiles(_model, depth), "map": pts, "pca": analysis.pca_2d(both)}


def umap_job(key: tuple, points: dict):
    """UMAP of codes and outputs, computed once per model and depth in a worker of the class queue (UMAP takes
    half a minute the first time: never in the web server's process)."""
    return job_queue().compute(("umap",) + key, "umap_2d", np.concatenate([points["codebook"], points["points"]]),
                               seed=0)


depth = 0
if loaded.kind == "rq":
    DEPTH = state.page_param("codebook", "depth", hi=len(sizes))
    state.url_value("cb_depth", DEPTH)
    depth = st.select_slider("Depth", list(range(1, len(sizes) + 1)), key="cb_depth",
                             help="RQ has one codebook per depth; depth 1 quantises z_e, "
                                  "later depths the residuals.") - 1
    state.to_url((DEPTH, depth + 1))
K = sizes[depth]
try:
    view = codebook_view(key, depth, model, data.val_x, data.val_y)
except ValueError as e:   # weights that load but overflow (huge finite values): a message, not a traceback
    st.error(f"Could not map this codebook: {text.md(e, 400)}")
    st.stop()
counts = view["counts"]
order = np.argsort(-counts, kind="stable")
used = int((counts > 0).sum())

m1, m2, m3, m4 = st.columns(4)
m1.metric("Codebook size K", K)
m2.metric("Codes used", f"{used} of {K}", help=f"over the {len(data.val_x)} validation images")
m3.metric("Dead codes", K - used, help="never the nearest code of any validation vector")
m4.metric("Perplexity", f"{view['perplexity']:.1f}", help="exp(entropy of code use): the number of codes the model "
          "effectively uses. K if all were used evenly, 1 if one code took everything.")
restart = "on" if cfg.vq.restart_dead else "off"
if loaded.kind == "fsq":
    st.markdown(f"This is finite scalar quantisation (Mentzer et al. 2023): its {K} codes are the points of a fixed "
                f"grid, {' x '.join(map(str, cfg.fsq.levels))} levels, not learned vectors, so no code can drift away "
                f"from the data; {K - used} of the {K} grid points are still unused on the validation set.")
else:
    st.markdown(
        f"Codebook collapse, a few codes taking every vector, is what a codebook learned by gradient without "
        f"restarts does when it **starts far from the encoder's outputs**, as with N(0, 1) init (nn.Embedding's "
        f"default). This model: **{INIT_NAMES.get(cfg.vq.init, cfg.vq.init)}** init, dead-code restart "
        f"**{restart}**, {'EMA (Razavi et al. 2019)' if cfg.vq.codebook == 'ema' else 'gradient-learned'} "
        f"codebook; {K - used} of its {K} codes are unused on the validation set.")

# ----------------------------------------------------------------------------- tiles and usage
# One code can be highlighted on every chart of the page: a click on a tile, a usage bar or a point of the map picks
# it (as does the code picker further down); the pick and whether it is highlighted live in the URL (?code=, ?hl=).
EXAMPLE = explain.pick_example(view["tiles"], torch.as_tensor(counts), first=K)
CODE = state.page_param("codebook", "code", default=EXAMPLE, hi=K - 1)
HIGHLIGHT = state.page_param("codebook", "hl")
entering = "cb_code" not in st.session_state   # Streamlit drops a widget's state when its page is left
state.url_value("cb_code", CODE)
if entering:   # the highlight is no widget: it follows the URL (a link from Learn, a shared one) on entering too
    st.session_state["cb_hl"] = HIGHLIGHT.read()


def clicked_code(chart_key: str) -> int | None:
    """The code id of the point clicked in a chart (each chart puts the code id first in its customdata, which
    arrives as a number, a list, or a {"0": ..., "1": ...} dict when the figure held it as a numpy array)."""
    event = st.session_state.get(chart_key)
    points = event.selection.points if event is not None and event.selection else []
    data = points[0].get("customdata") if points else None
    if isinstance(data, dict):
        data = data.get("0")
    elif isinstance(data, (list, tuple)):
        data = data[0] if data else None
    return int(data) if isinstance(data, (int, float)) and 0 <= data < K else None


def on_click(chart_key: str) -> None:
    code = clicked_code(chart_key)
    if code is not None:
        st.session_state["cb_code"], st.session_state["cb_hl"] = code, True


def clear_highlight() -> None:
    st.session_state["cb_hl"] = False


def highlight() -> None:
    st.session_state["cb_hl"] = True


hl = st.session_state["cb_hl"]
marked = st.session_state["cb_code"] if hl else None
st.session_state["cb_drawn"] = marked   # what this full run drew; the map's fragment reruns the page when it differs
note, clear = st.columns([5, 1], vertical_alignment="center")
if marked is None:
    note.caption("Click a tile, a usage bar or a point of the 2-D map to highlight that code on every chart.")
else:
    note.markdown(f"**Code #{marked}** ({f'{counts[marked]} uses' if counts[marked] else 'dead'}) is highlighted "
                  "on every chart: framed amber among the tiles, outlined among the bars, ringed on the map, the "
                  "others faded. Click another code to move it, or clear it.")
    clear.button("Clear", icon=":material/close:", key="cb_clear", on_click=clear_highlight,
                 help="Show every code again at full strength.")

tiles_col, usage_col = st.columns([1, 1.15])
with tiles_col:
    st.subheader("Every code decoded alone")
    ncol = math.ceil(math.sqrt(K))
    tile_px = max(16, min(56, (560 if big else 420) // ncol))
    describe.chart(st, fg.tile_mosaic(view["tiles"], order, counts, ncol, tile_px, marked),
                   f"all {K} codes decoded on their own, most used first: " + describe.usage(counts),
                   key="cb_tiles", on_select=partial(on_click, "cb_tiles"), selection_mode="points", width="stretch",
                   config={"displayModeBar": False})
    st.caption("Most used first, left to right: each code's vector tiled over the whole latent grid and decoded "
               "to see what it learned. Red tiles are dead codes: on this page, dead means no vector of the "
               f"{len(data.val_x)} validation images picked it. Click a tile to see where it is used.")
with usage_col:
    st.subheader("How often each code is picked")
    describe.chart(st, charts.usage_histogram(counts, charts.NEVER_USED, "vectors that picked it", sort=True,
                                              height=440 if big else 360, color=fg.code_colors(K),
                                              perplexity=view["perplexity"], selected=marked),
                   describe.usage(counts), key="cb_usage", on_select=partial(on_click, "cb_usage"),
                   selection_mode="points", config={"displayModeBar": False})
    st.caption(f"Codes ranked by use over the validation set, each in its code colour. The dashed line is the "
               f"perplexity ({view['perplexity']:.1f}): how many codes are effectively in use, against K = {K}. "
               "Dead codes (never picked) are the short red bars at the end. Click a bar to highlight its code.")

# --------------------------------------------------------------------------------- the 2-D map
st.subheader("The codebook among the encoder's outputs")
has_labels = data.val_y is not None and data.class_names is not None
c1, c2 = st.columns([1, 2])
BY = state.page_param("codebook", "by", options=("code", "label") if has_labels else ("code",))
state.url_value("cb_by", BY)
by = c1.radio("Colour the encoder outputs by", BY.options, key="cb_by", horizontal=True,
              format_func=lambda b: "their code" if b == "code" else "the image's label")
PROJ = state.page_param("codebook", "proj")
state.url_value("cb_proj", PROJ)
proj = c2.radio("Projection", PROJ.options, key="cb_proj", horizontal=True,
                help="PCA is instant. UMAP keeps neighbours together but is slow, so it runs in the background "
                     "once per model for the whole server; PCA is shown until it is ready.")
state.to_url((BY, by), (PROJ, proj))

umap = None
if proj == "UMAP":
    try:
        umap = umap_job(key + (depth, MAP_POINTS), view["map"])
    except JobError as e:   # the class queue is full: UMAP waits its turn like a run, PCA shows meanwhile
        st.info(f"UMAP cannot be queued now ({text.md(e, 300)}); showing PCA.")
waiting = umap is not None and umap.state not in FINISHED


@st.fragment(run_every=tick_seconds(2.0) if waiting else None)
def map_panel() -> None:
    status = umap.view() if umap is not None else None
    if waiting and status.state in FINISHED:
        st.rerun()  # UMAP just finished: one full rerun redraws the map and stops the polling
    pts, xy, method = view["map"], view["pca"], "PCA"
    if status is not None and status.state == "done" and umap.result is not None:
        xy, method = umap.result, "UMAP"
    elif status is not None and status.active:
        where = f" (place {status.place} in the class queue)" if status.place else ""
        st.info(f"UMAP is computing in a background worker{where}: about half a minute the first time, shared by "
                "everyone on this server. PCA is shown until it is ready, and the map swaps by itself.",
                icon=":material/hourglass_top:")
    elif status is not None and status.state in ("failed", "stopped"):
        st.warning(f"UMAP did not finish ({text.md(status.reason, 400)}); showing PCA.")
    k = len(pts["codebook"])
    fig = fg.map_2d(xy[k:], xy[:k], pts["codes"], pts["labels"], counts, by,
                    [text.plotly(n) for n in data.class_names or []] or None, 560 if big else 470, method,
                    st.session_state["cb_code"] if st.session_state["cb_hl"] else None)
    describe.chart(st, fig, config={"displayModeBar": False}, key="cb_map", on_select=partial(on_click, "cb_map"),
                   selection_mode="points")
    if st.session_state["cb_drawn"] != (st.session_state["cb_code"] if st.session_state["cb_hl"] else None):
        st.rerun()   # a click on the map (this fragment's rerun) moved the highlight: redraw the other charts too
    st.caption(f"{method} of the {k} codebook vectors (diamonds; dead ones red crosses) and {len(pts['points'])} "
               "encoder outputs (dots). Coloured by code, each dot should sit by its diamond; coloured by label, "
               "see whether codes belong to one class or are pieces shared by all. Click a diamond or a dot to "
               "highlight its code.")


map_panel()

# ------------------------------------------------------------------------------- one code, in use
st.subheader("Where one code is used")
pick_col, imgs_col = st.columns([1, 3])
with pick_col:
    code = st.selectbox("Code", [int(c) for c in order], key="cb_code", on_change=highlight,
                        format_func=lambda c: f"#{c} · {counts[c]} uses" if counts[c] else f"#{c} · dead")
    state.to_url((CODE, code), (HIGHLIGHT, st.session_state["cb_hl"]))
    state.image(st, view["tiles"][code], 150, caption=f"code #{code} decoded alone",
                alt=describe.tile(code, int(counts[code])))
with imgs_col:
    top = analysis.images_using(view["codes"], code, top=8)
    if len(top) == 0:
        st.info(f"Code #{code} is dead: no validation vector picked it, so the decoder never sees it. "
                + ("It is a point of FSQ's fixed grid that no encoder output rounds to." if loaded.kind == "fsq" else
                   "Dead-code restart would move it onto a real encoder output during training."
                   if not cfg.vq.restart_dead
                   else "Dead-code restart moves such codes onto real encoder outputs during training; this one has "
                        "not found a place yet."))
    else:
        color = fg.code_colors(K)[code]
        cols = st.columns(8)
        for c, i in zip(cols, top.tolist()):
            mask = view["codes"][i] == code
            state.image(c, fg.overlay_cells(data.val_x[i], mask, color), 96,
                        caption=f"#{i}: {int(mask.sum())} cells",
                        alt=f"validation image {i}{describe.label(data.class_names, data.val_y, i)}, its "
                            f"{int(mask.sum())} cells that picked code #{code} tinted")
        st.caption(f"The validation images that use code #{code} most; the cells that picked it are tinted in its "
                   "colour. A code is a piece of stroke or texture, reused wherever it fits.")

# ------------------------------------------------------------------------------ where codes start
@st.cache_resource(max_entries=16, show_spinner="Building fresh models...")
def start_view(key: tuple, _model, _x) -> dict:
    """Each init's codes against a fresh encoder's outputs (step 0), and this model's trained outputs."""
    x = _x[:128]
    return {"inits": {i: analysis.init_geometry(_model.config, x, i, seed=0) for i in INIT_NAMES},
            "trained": analysis.output_radius(_model, x)}


def start_section() -> None:
    st.subheader("Where the codes start, and why that decides collapse")
    sv = start_view(key, model, data.val_x)
    g, trained = sv["inits"], sv["trained"]
    rows = [("fresh encoder's outputs", g["normal"].output_dist), ("this model's outputs, trained", trained)]
    rows += [(f"{INIT_NAMES[i]} codes", g[i].code_dist) for i in INIT_NAMES]
    describe.chart(st, fg.distance_strips(rows, 330 if big else 290), config={"displayModeBar": False})
    t50, t95 = np.percentile(trained, [50, 95])
    n, u = g["normal"], g["uniform"]
    u_from_centre = float(np.median(u.code_dist))
    u_where = (f"{u_from_centre:.2f} from the fresh outputs' centre ({u_from_centre / max(n.spread, 1e-9):.0f} cloud "
               "radii out, so only a few win at first), " + ("inside" if u_from_centre < t50 else "at the edge of")
               + f" the ball this model's trained outputs fill (median {t50:.2f})")
    st.caption(
        f"A freshly built model of this shape, before any training step: its encoder's outputs fill a cloud of radius "
        f"{n.spread:.3f}; trained, this model's outputs lie a median {t50:.2f} from their centre "
        f"(95% within {t95:.2f}). "
        f"N(0, 1) codes start a median {n.gap:.2f} from the nearest output, each alone in its own direction; "
        f"U(-1/K, 1/K) codes start {u.gap:.2f} away, bunched within {u.bunch:.2f} of each other; k-means codes start "
        f"on the outputs "
        f"({g['kmeans'].gap:.3f}). Codes the nearest of some output at step 0: N(0, 1) {n.winners}, U(-1/K, 1/K) "
        f"{u.winners}, k-means {g['kmeans'].winners} of {K}.")
    st.markdown(
        "A code learned by gradient moves only when some vector picks it. With N(0, 1) codes far out, the few nearest "
        "win, the encoder is pulled towards them by the commitment loss, and the others are never picked again. "
        f"U(-1/K, 1/K) codes do not start at the outputs' centre either: they start {u_where}. What saves them is "
        "that they start bunched together: as training spreads the outputs past the bunch, "
        "its codes become the nearest of some outputs and start to learn. N(0, 1) codes start beyond any output, "
        "each in its own direction, so no output ever comes nearer to them than to a winner. Measured on MNIST "
        "(`python bench/train_quality.py`: gradient codebook, no restarts, 60 s, seed 0, K = 64): 2 to 3 codes in "
        "use with N(0, 1) init, 49 to 64 with U(-1/K, 1/K) init (the fewer on a busier machine, with fewer steps). "
        "The default here, k-means init with an EMA codebook and "
        "dead-code restarts (Razavi et al. 2019), starts every code on the data.")


if loaded.kind != "fsq":  # FSQ learns no codebook, so nothing starts anywhere: its grid is fixed
    start_section()

state.notebook_button("codebook")   # this setup as a Jupyter notebook (ui/notebook_button.py)
