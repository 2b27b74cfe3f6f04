"""Paint: the code map is a small image you can draw on; the decoder turns it back into a picture.

Each student's canvas (and its undo history) lives in their own session state; only the model, its
palette tiles and the validation codes are shared, read-only, across the class.
"""

from dataclasses import dataclass

import streamlit as st
import torch

from ui import describe, state, text, theme
from ui.painter import grid_painter
from vqdemo import analysis, code_canvas, grid_url

loaded = state.current()
if loaded is None:
    st.stop()

MAX_PAINT_K = 4096  # the palette decodes every code: 4,096 tiles is already a long scroll
st.title("Paint with codes")
DIGITS = loaded.data.name in ("mnist", "mnist-full", "digits")
st.caption(
    "Each cell is one codebook vector; the decoder turns the grid back into an image: paint "
    + ("a stroke of a 'white ink' code and watch a digit appear." if DIGITS
       else "a patch of one code and watch the decoder turn it into a piece of an image.")
)
if loaded.kind == "fsq":
    st.info(f"{text.md(loaded.choice.label)} is an FSQ model (Mentzer et al. 2023): its codes are the points of "
            "a fixed grid, shown on the Learn and Codebook pages. Painting is for VQ-VAE and RQ-VAE models: pick one "
            "in the sidebar.")
    st.stop()
if loaded.kind not in ("vq", "rq"):
    st.info(f"{text.md(loaded.choice.label)} is a {loaded.kind.upper()}: it has no codebook to paint with. "
            "Pick a VQ-VAE or RQ-VAE model in the sidebar.")
    st.stop()


@dataclass(frozen=True)
class Palette:
    urls: list[str]   # K data-URL tiles for the painter
    tiles: torch.Tensor  # (K, C, H, W) each code decoded alone
    ink: int          # the brightest code, selected first


@st.cache_resource(show_spinner="Decoding every code...", max_entries=32)
def palette(path: str, mtime: float, depth: int, _model) -> Palette:
    """Each code of one depth decoded alone, encoded once per model file (path + mtime) for the class."""
    tiles = analysis.code_tiles(_model, depth)
    return Palette(code_canvas.tile_urls(tiles), tiles, code_canvas.brightest_code(tiles))


@st.cache_data(show_spinner="Encoding the validation images...", max_entries=16)
def code_stats(path: str, mtime: float, _model, _val_x) -> tuple[list[int], list[list[float]]]:
    """Per depth: the most used code (the blank canvas) and every code's frequency (random fill)."""
    codes = analysis.encode_all(_model, _val_x)
    sizes = _model.codebook_sizes
    return code_canvas.most_used(codes, sizes), [p.tolist() for p in code_canvas.code_frequencies(codes, sizes)]


model, data = loaded.model, loaded.data
kind, sizes = loaded.kind, model.codebook_sizes
if max(sizes) > MAX_PAINT_K:
    st.info(f"{text.md(loaded.choice.label)} has K = {max(sizes):,} codes; the palette decodes every code, so Paint "
            f"takes models with K up to {MAX_PAINT_K:,}. Pick a smaller model in the sidebar.")
    st.stop()
h, w = model.latent_shape
path, mtime = loaded.key
background, freqs = code_stats(path, mtime, model, data.val_x)

canvas_key = f"paint_canvas:{loaded.choice.id}:{mtime}"
if canvas_key not in st.session_state:   # a shared link's painting (?grid=...) if it fits this model, else blank
    shared = grid_url.decode(state.url_text("grid"), list(sizes), h, w)
    st.session_state[canvas_key] = code_canvas.Canvas(
        shared or [code_canvas.blank_grid(b, h, w) for b in background], sizes)
canvas: code_canvas.Canvas = st.session_state[canvas_key]


def encoded_layers(index: int) -> list[code_canvas.Grid]:
    codes = model.encode_codes(data.val_x[index : index + 1])  # (1, h, w) or (1, D, h, w)
    return code_canvas.as_stack(codes)[0].tolist()


def image_label(index: int) -> str:
    if data.val_y is None:
        return ""
    y = int(data.val_y[index])
    return f" ({text.md(data.class_names[y])})" if data.class_names and y < len(data.class_names) else f" (class {y})"


def reset() -> None:
    canvas.replace([code_canvas.blank_grid(b, h, w) for b in background])


def load_image() -> None:
    canvas.replace(encoded_layers(int(st.session_state["paint_image"])))


def random_fill(d: int) -> None:
    st.session_state["paint_random_seed"] = st.session_state.get("paint_random_seed", 0) + 1
    layers = [canvas.layer(i) for i in range(canvas.depth)]
    layers[d] = code_canvas.random_grid(torch.tensor(freqs[d]), h, w, st.session_state["paint_random_seed"])
    canvas.replace(layers)


if kind == "rq":
    depth = st.radio(
        "Paint depth", list(range(1, canvas.depth + 1)), horizontal=True, key="paint_depth",
        help="An RQ model stacks several codes per cell, coarse to fine; paint one depth, the others keep their codes.",
    )
else:
    depth = 1
d = depth - 1
pal = palette(path, mtime, d, model)

n_val = len(data.val_x)
left, right = st.columns([3, 2], gap="large")
with left:
    b1, b2, b3 = st.columns(3)
    b1.button("Reset to blank", on_click=reset, width="stretch",
              help=f"Every cell back to the most used code{'s' if kind == 'rq' else ''} on the validation set.")
    b2.button("Undo stroke", on_click=canvas.undo, disabled=not canvas.can_undo, width="stretch")
    b3.button("Random fill", on_click=random_fill, args=(d,), width="stretch",
              help="Draw every cell independently at the codes' real frequencies: right codes, no structure.")
    pick, thumb, load = st.columns([2, 1, 2], vertical_alignment="bottom")
    index = int(pick.number_input("Validation image", 0, n_val - 1, 0, key="paint_image",
                                  help=f"One of the {n_val} validation images, to paint over its code map."))
    thumb.image(state.crisp(data.val_x[index], 56), output_format="PNG",
                alt=f"validation image {index}{describe.label(data.class_names, data.val_y, index)}")
    load.button("Load from image", on_click=load_image, width="stretch",
                help="Replace the canvas with this image's code map (every depth).")
    grid = grid_painter(canvas.layer(d), tiles=pal.urls, selected=pal.ink,
                        cell_px=64 if theme.presenter() else 48, key=f"painter:{loaded.choice.id}:{d}")
    if canvas.paint(d, grid):
        st.rerun()  # show the new canvas (and let the painter see it) before anything else is drawn
    st.caption(f"The {h}x{w} code map{f' at depth {depth}' if kind == 'rq' else ''}: pick a code in the palette, "
               "click or drag over cells; right-click a cell to pick its code. The image to load: "
               f"validation image {index}{image_label(index)}.")

codes = canvas.codes(kind)
painted = describe.code_map(canvas.layer(d), sizes[d])   # what the decoded pictures say they show
encoded = grid_url.encode([canvas.layer(i) for i in range(canvas.depth)], list(sizes))
blank = grid_url.encode([code_canvas.blank_grid(b, h, w) for b in background], list(sizes))
if encoded != state.url_text("grid", blank):   # a link without ?grid= says the blank canvas: nothing to write
    state.write_url({"grid": encoded})
with right:
    if kind == "rq":
        partial, full = st.columns(2)
        partial.image(state.crisp(model.decode_codes(codes, depth)[0], 224), output_format="PNG",
                      alt=f"Decoded from depths 1 to {depth}: depth {depth} is a {painted}")
        partial.caption(f"Decoded from depths 1..{depth}: what the codes so far say.")
        full.image(state.crisp(model.decode_codes(codes)[0], 224), output_format="PNG",
                   alt=f"Decoded code map, all {canvas.depth} depths: depth {depth} is a {painted}")
        full.caption(f"Decoded from all {canvas.depth} depths: the deeper codes add detail.")
    else:
        st.image(state.crisp(model.decode_codes(codes)[0], 336), output_format="PNG",
                 alt=f"Decoded code map: a {painted}")
        st.caption("The decoder's picture of your code map, redrawn after every stroke.")

    st.markdown("**What the codes look like**")
    used = code_canvas.layer_legend(canvas.layer(d), top=6)
    for col, (c, count) in zip(st.columns(6), used):
        col.image(state.crisp(pal.tiles[c], 48), output_format="PNG", caption=f"#{c} ×{count}",
                  alt=describe.tile(c, count, "cells of your grid"))
    st.caption("The codes in your grid, each decoded on its own (tiled over the whole map), with how many cells "
               "use it, most used first.")

state.notebook_button("paint")   # this setup as a Jupyter notebook (ui/notebook_button.py)
