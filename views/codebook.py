"""Codebook: every code decoded alone and sorted by use, dead codes marked, perplexity against K, a 2-D
map of the codebook among the encoder's outputs (PCA at once, UMAP from a background thread), and the
validation images that use a chosen code most."""

import math

import numpy as np
import streamlit as st
import torch

from ui import figures as fg
from ui import state
from vqdemo import analysis, explain, runs
from vqdemo.quantize import perplexity_of

MAP_POINTS = 2000  # encoder outputs on the 2-D map: UMAP of ~2k points takes seconds, not a minute

loaded = state.current()
if loaded is None:
    st.stop()
model, data, cfg = loaded.model, loaded.data, loaded.model.config
big = state.presenter()

st.title("Codebook: what every code learned, and which ones are used")
if loaded.kind == "vae":
    st.info("This model is a plain VAE: it has no codebook. Pick a VQ or RQ model in the sidebar.")
    st.stop()

key = (str(loaded.choice.path), (loaded.choice.path / runs.WEIGHTS).stat().st_mtime)
sizes = model.codebook_sizes


def url_int(wkey: str, name: str, default: int, lo: int, hi: int) -> None:
    """Seed a widget's value from the URL once, then keep it clamped (the model may have changed)."""
    if wkey not in st.session_state:
        st.session_state[wkey] = state.int_param(name, default, lo, hi)
    else:
        st.session_state[wkey] = min(hi, max(lo, int(st.session_state[wkey])))


@st.cache_resource(show_spinner=False)
def background() -> explain.BackgroundResults:
    """One worker thread for the whole server: UMAPs queue instead of all running at once."""
    return explain.BackgroundResults(workers=1)


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


def umap_of(points: dict) -> np.ndarray:
    return analysis.umap_2d(np.concatenate([points["codebook"], points["points"]]), seed=0)


depth = 0
if loaded.kind == "rq":
    url_int("cb_depth", "depth", 1, 1, len(sizes))
    depth = st.select_slider("Depth", list(range(1, len(sizes) + 1)), key="cb_depth",
                             help="RQ has one codebook per depth; depth 1 quantises z_e, later depths the residuals.") - 1
    st.query_params["depth"] = str(depth + 1)
K = sizes[depth]
view = codebook_view(key, depth, model, data.val_x, data.val_y)
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
st.markdown(
    f"Codebook collapse, a few codes taking every vector, is what the seeds' setup gives by default (N(0, 1) or "
    f"U(-1/K, 1/K) init, no restarts). This model: **{cfg.vq.init}** init, dead-code restart **{restart}**, "
    f"{'EMA' if cfg.vq.codebook == 'ema' else 'gradient-learned'} codebook. Seed 004 saw many of its codes unused; "
    f"here {K - used} of {K} are.")

# ----------------------------------------------------------------------------- tiles and usage
url_int("cb_code", "code", explain.pick_example(view["tiles"], torch.as_tensor(counts), first=K), 0, K - 1)


def on_tile_click() -> None:
    points = st.session_state["cb_tiles"].selection.points
    if points:
        st.session_state["cb_code"] = int(order[points[0]["point_index"]])


tiles_col, usage_col = st.columns([1, 1.15])
with tiles_col:
    st.subheader("Every code decoded alone")
    ncol = math.ceil(math.sqrt(K))
    tile_px = max(16, min(56, (560 if big else 420) // ncol))
    st.plotly_chart(fg.tile_mosaic(view["tiles"], order, counts, ncol, tile_px, st.session_state["cb_code"]),
                    key="cb_tiles", on_select=on_tile_click, selection_mode="points", width="content",
                    config={"displayModeBar": False})
    st.caption("Most used first, left to right: each code's vector tiled over the whole latent grid and decoded "
               "(seed 004's trick). Red tiles are dead codes. Click a tile to see where it is used.")
with usage_col:
    st.subheader("How often each code is picked")
    st.plotly_chart(fg.usage_bars(counts, view["perplexity"], 440 if big else 360), config={"displayModeBar": False})
    st.caption(f"Codes ranked by use over the validation set. The dashed line is the perplexity ({view['perplexity']:.1f}): "
               f"how many codes are effectively in use, against K = {K}. Dead codes sit in the red band.")

# --------------------------------------------------------------------------------- the 2-D map
st.subheader("The codebook among the encoder's outputs")
has_labels = data.val_y is not None and data.class_names is not None
c1, c2 = st.columns([1, 2])
by_options = ["code", "label"] if has_labels else ["code"]
if "cb_by" not in st.session_state:
    wanted = st.query_params.get("by", "code")
    st.session_state["cb_by"] = wanted if wanted in by_options else "code"
by = c1.radio("Colour the encoder outputs by", by_options, key="cb_by", horizontal=True,
              format_func=lambda b: "their code" if b == "code" else "the image's label")
st.query_params["by"] = by
if "cb_proj" not in st.session_state:
    st.session_state["cb_proj"] = "PCA" if st.query_params.get("proj") == "PCA" else "UMAP"
proj = c2.radio("Projection", ["UMAP", "PCA"], key="cb_proj", horizontal=True,
                help="PCA is instant. UMAP keeps neighbours together but is slow, so it runs in the background "
                     "once per model for the whole server; PCA is shown until it is ready.")
st.query_params["proj"] = proj

bg = background()
umap_key = key + (depth, MAP_POINTS)
if proj == "UMAP":
    bg.submit(umap_key, umap_of, view["map"])
waiting = proj == "UMAP" and bg.state(umap_key) == "running"


@st.fragment(run_every=2.0 if waiting else None)
def map_panel() -> None:
    status = bg.state(umap_key)
    if waiting and status != "running":
        st.rerun()  # UMAP just finished: one full rerun redraws the map and stops the polling
    pts, xy, method = view["map"], view["pca"], "PCA"
    if proj == "UMAP" and status == "done":
        xy, method = bg.get(umap_key), "UMAP"
    elif proj == "UMAP" and status == "running":
        st.info("UMAP is computing in the background (about half a minute the first time, shared by everyone on "
                "this server); PCA is shown until it is ready, and the map swaps by itself.", icon=":material/hourglass_top:")
    elif proj == "UMAP" and status == "failed":
        try:
            bg.get(umap_key)
        except Exception as e:  # noqa: BLE001  a failed projection must not take the page down
            st.warning(f"UMAP failed ({e}); showing PCA.")
    k = len(pts["codebook"])
    fig = fg.map_2d(xy[k:], xy[:k], pts["codes"], pts["labels"], counts, by,
                    data.class_names, 560 if big else 470, method)
    st.plotly_chart(fig, config={"displayModeBar": False}, key="cb_map")
    st.caption(f"{method} of the {k} codebook vectors (diamonds; dead ones red crosses) and {len(pts['points'])} "
               "encoder outputs (dots). Coloured by code, each dot should sit by its diamond; coloured by label, "
               "see whether codes belong to one class or are pieces shared by all.")


map_panel()

# ------------------------------------------------------------------------------- one code, in use
st.subheader("Where one code is used")
pick_col, imgs_col = st.columns([1, 3])
with pick_col:
    code = st.selectbox("Code", [int(c) for c in order], key="cb_code",
                        format_func=lambda c: f"#{c} · {counts[c]} uses" if counts[c] else f"#{c} · dead")
    st.query_params["code"] = str(code)
    st.image(state.crisp(view["tiles"][code], 150), caption=f"code #{code} decoded alone")
with imgs_col:
    top = analysis.images_using(view["codes"], code, top=8)
    if len(top) == 0:
        st.info(f"Code #{code} is dead: no validation vector picked it, so the decoder never sees it. "
                f"{'Dead-code restart would move it onto a real encoder output during training.' if not cfg.vq.restart_dead else 'Dead-code restart moves such codes onto real encoder outputs during training; this one has not found a place yet.'}")
    else:
        color = fg.code_colors(K)[code]
        cols = st.columns(8)
        for c, i in zip(cols, top.tolist()):
            mask = view["codes"][i] == code
            c.image(state.crisp(fg.overlay_cells(data.val_x[i], mask, color), 96), caption=f"#{i}: {int(mask.sum())} cells")
        st.caption(f"The validation images that use code #{code} most; the cells that picked it are tinted in its "
                   "colour. A code is a piece of stroke or texture, reused wherever it fits.")
