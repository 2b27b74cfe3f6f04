"""Reconstruct: originals beside what comes back through the codes, PSNR per image, each image's code
map; RQ models coarse to fine, depth by depth; and the user's own image through the same model."""

import hashlib
import math

import streamlit as st
import torch

from ui import describe, state, text, theme
from ui import figures as fg
from ui.jobs import job_queue, tick_seconds
from vqdemo import analysis
from vqdemo.app_limits import MAX_IMAGE_MB
from vqdemo.images import ImageError, border_mean, load_image
from vqdemo.jobs import FINISHED
from vqdemo.metrics import PSNR_MEANING, psnr_of, psnr_per_image

loaded = state.current()
if loaded is None:
    st.stop()
model, data, cfg = loaded.model, loaded.data, loaded.model.config
key = loaded.key
is_vq = loaded.kind in ("vq", "rq", "fsq")
is_rq = loaded.kind == "rq"
K = model.codebook_sizes
n_val = len(data.val_x)


@st.cache_resource(max_entries=8, show_spinner="Reconstructing the validation set...")
def validation(key: tuple, _model, _x) -> dict:
    """Reconstructions, PSNR and codes of the whole validation set, once per model (shared, read-only)."""
    x_hat, psnr = analysis.reconstruct(_model, _x)
    out = {"x_hat": x_hat, "psnr": psnr}
    if _model.config.kind in ("vq", "rq", "fsq"):
        out["codes"] = analysis.encode_all(_model, _x)
    if _model.config.kind == "rq":
        coarse = analysis.coarse_to_fine(_model, _x)                           # depth x (N, C, H, W)
        out["coarse"] = coarse
        out["psnr_depth"] = [psnr_of(_x, c) for c in coarse]
    return out


@st.cache_resource(max_entries=32, show_spinner="Decoding your image...")
def decoded_upload(digest: str, size: int, channels: int, _raw: bytes) -> torch.Tensor | str:
    """An upload as this model's input (C, size, size), or why it cannot be used: decoded once per content (its
    sha256) and input shape for the whole server, so a flip of Invert or any other rerun, in any session, reuses it
    (a 6300x6300 16-bit PNG cost 1.45 s of CPU per rerun). Shared and read-only."""
    try:
        if len(_raw) > MAX_IMAGE_MB * 2**20:
            raise ImageError(f"the file is {len(_raw) / 2**20:.1f} MB, over the {MAX_IMAGE_MB} MB limit; "
                             "downscale or compress it and try again.")
        return load_image(_raw, size=size, channels=channels)  # (C, H, W) in [0, 1]
    except ImageError as e:
        return str(e)


def code_map_figure(codes, titles: list[str], depth: int):
    """codes: (n, h, w) or (n, depth, h, w) -> the maps of one depth, side by side."""
    maps = codes[:, depth] if codes.dim() == 4 else codes
    cell = max(6, min(30 if theme.presenter() else 22, 1000 // (len(maps) * maps.shape[-1]) - 2))
    return fg.code_maps([m.numpy() for m in maps], K[depth], titles, cell_px=cell)


st.title("Reconstruct: what comes back through the codes")
val = validation(key, model, data.val_x)

if is_vq:
    h, w = model.latent_shape
    bits_in = cfg.image_size ** 2 * cfg.channels * 8
    bits_codes = h * w * sum(math.log2(k) for k in K)
    st.markdown(f"Each {cfg.image_size}x{cfg.image_size} image ({bits_in:,} bits as 8-bit pixels) is stored as "
                f"{h}x{w} code ids{f' at each of {len(K)} depths' if is_rq else ''}: "
                f"**{bits_codes:,.0f} bits**, {bits_in / bits_codes:.0f}x smaller. The decoder rebuilds the image "
                "from those ids alone.")
else:
    st.markdown("This model is a plain VAE: its latent is a grid of continuous numbers, not codes, so there are no "
                "code maps here. Pick a VQ or RQ model in the sidebar to see them.")

count_options = [4, 6, 8, 10, 12]
N = state.page_param("reconstruct", "n")
state.url_value("rc_n", N)
if st.session_state["rc_n"] not in count_options:
    st.session_state["rc_n"] = min(count_options, key=lambda c: abs(c - st.session_state["rc_n"]))
c1, c2, c3 = st.columns([1, 1, 2])
n = c2.select_slider("How many", count_options, key="rc_n")
START = state.page_param("reconstruct", "start", hi=max(0, n_val - n))
state.url_value("rc_start", START)
start = c1.number_input("First validation image", 0, max(0, n_val - n), key="rc_start", step=n,
                        help="Step through the held-out images; the URL keeps the setup.")
depth = 0
if is_rq:
    DEPTH = state.page_param("reconstruct", "depth", hi=len(K))
    state.url_value("rc_depth", DEPTH)
    depth = c3.select_slider("Code map of depth", list(range(1, len(K) + 1)), key="rc_depth",
                             help="RQ keeps one code map per depth; depth 1 is the coarsest.") - 1
    state.to_url((DEPTH, depth + 1))
state.to_url((START, start), (N, n))

idx = list(range(start, min(n_val, start + n)))
psnr = val["psnr"][idx]
m1, m2, m3 = st.columns(3)
m1.metric("PSNR of these images", f"{psnr_of(data.val_x[idx], val['x_hat'][idx]):.2f} dB", help=PSNR_MEANING)
m2.metric("PSNR over the validation set", f"{psnr_of(data.val_x, val['x_hat']):.2f} dB",
          help=f"{n_val} held-out images; {PSNR_MEANING}")
if is_vq:
    used = int((analysis.usage(val["codes"][:, depth] if is_rq else val["codes"], K[depth]) > 0).sum())
    m3.metric(f"Codes used{f' at depth {depth + 1}' if is_rq else ''}", f"{used} of {K[depth]}")

st.subheader("Originals, reconstructions and their code maps")
size = 130 if theme.presenter() else 96
cols = st.columns(len(idx))
codes_shown = (val["codes"][idx][:, depth] if is_rq else val["codes"][idx]) if is_vq else None
for c, i, p in zip(cols, idx, psnr.tolist()):
    label = f"#{i}"
    if data.val_y is not None and data.class_names:
        label += f" ({text.md(data.class_names[int(data.val_y[i])])})"
    name = f"validation image {i}{describe.label(data.class_names, data.val_y, i)}"
    state.image(c, data.val_x[i], size, caption=label, alt=name)   # natural width, never wider than the column
    state.image(c, val["x_hat"][i], size, caption=f"{p:.1f} dB",
                alt=describe.image(f"reconstruction of {name}", p))
if is_vq:   # one figure for all maps, as wide as the row of images: no column is too narrow for its chart
    describe.chart(st, fg.code_maps([m.numpy() for m in codes_shown], K[depth],
                                    cell_px=max(8, min(24, 900 // (len(idx) * model.latent_shape[1])))),
                   describe.code_map([m.numpy() for m in codes_shown], K[depth]),
                   config={"displayModeBar": False}, key="rc_maps")
st.caption("Top: the original; middle: the reconstruction and its PSNR; bottom: its code map, one colour per "
           "code id (the same colours on every page; hover a cell for its id). Thin strokes and corners are "
           "where detail goes first, and similar strokes reuse the same codes across images.")

if is_rq:
    st.subheader("Coarse to fine: decoding with the first d depths only")
    show = idx[: min(len(idx), 6)]
    cols = st.columns(len(K) + 1)
    strips = [analysis.image_grid(data.val_x[show], 1)] + [analysis.image_grid(c[show], 1) for c in val["coarse"]]
    side = state.crisp_width(strips[0], 80)   # one width for every strip, so their rows stay level
    state.image(cols[0], strips[0], 80, caption="original", width=side,   # (a wider caption would stretch it)
                alt=f"validation images {show[0]} to {show[-1]}, one above the other")
    for d, (c, strip) in enumerate(zip(cols[1:], strips[1:])):
        db = psnr_of(data.val_x[show], val["coarse"][d][show])
        state.image(c, strip, 80, width=side, caption=f"depths 1..{d + 1}: {db:.1f} dB",
                    alt=describe.image(f"validation images {show[0]} to {show[-1]} decoded from depths 1 to {d + 1}",
                                       db))
    st.caption("Left to right, each depth adds the code of what the previous depths left unexplained: "
               "the coarse image at depth 1, its details after.")
    describe.chart(st, fg.psnr_by_depth(val["psnr_depth"]), config={"displayModeBar": False})
    gains = [b - a for a, b in zip(val["psnr_depth"], val["psnr_depth"][1:])]
    st.caption(f"PSNR over the {n_val} validation images as depths are added: "
               + ", ".join(f"depth {d + 2} {g:+.2f} dB" for d, g in enumerate(gains)) + ".")

def best_codes_section() -> None:
    """The encoder's code map against the best one a greedy search finds for one image, searched in a worker of the
    class queue (seconds of decoding: never in the web server's process), shared by everyone who asks."""
    st.subheader("Is the encoder's code map the best one?")
    st.markdown("The encoder picks, cell by cell, the code **nearest in latent space**. The decoder mixes "
                "neighbouring cells, so another code can give a sharper image. A greedy search tries, cell after "
                "cell, every code of the codebook (one decoder batch per cell) and keeps any that lowers the pixel "
                "error: the same number of code ids, so the same bits.")
    a, b = st.columns([2, 1], vertical_alignment="bottom")
    i = a.selectbox("Image", idx, key="rc_best_img", format_func=lambda j: f"validation image #{j}")
    job_key = ("best_codes",) + tuple(key) + (int(i),)
    if b.button("Search for better codes", key="rc_best_go", width="stretch"):
        job_queue().compute(job_key, "best_codes", str(loaded.choice.path), data.val_x[i].numpy(), seed=0)
    job = job_queue().keyed(job_key)
    if job is None:
        return
    waiting = job.state not in FINISHED

    @st.fragment(run_every=tick_seconds(1.0) if waiting else None)
    def result_panel() -> None:
        status = job.view()
        if waiting and status.state in FINISHED:
            st.rerun()   # the search just finished: one full rerun draws it and stops the polling
        if status.active:
            where = f" (place {status.place} in the class queue)" if status.place else ""
            st.info(f"Searching in a background worker{where}: a few seconds.", icon=":material/hourglass_top:")
            return
        if status.state != "done" or job.result is None:
            st.warning(f"The search did not finish ({text.md(status.reason, 400)}). Press the button to try again.")
            return
        r = job.result
        changed = torch.as_tensor(r["codes"] != r["encoder_codes"]).any(0)          # (h, w)
        cols = st.columns(3)
        name = f"validation image {i}{describe.label(data.class_names, data.val_y, i)}"
        state.image(cols[0], data.val_x[i], 150, caption=f"#{i}: original", alt=name)
        state.image(cols[1], torch.as_tensor(r["encoder_image"]), 150,
                    caption=f"encoder's codes: {r['encoder_psnr']:.2f} dB",
                    alt=describe.image(f"{name} decoded from the encoder's codes", r["encoder_psnr"]))
        tinted = fg.overlay_cells(torch.as_tensor(r["image"]), changed, fg.ARGMIN)
        state.image(cols[2], tinted, 150, caption=f"searched codes: {r['psnr']:.2f} dB (changed cells tinted)",
                    alt=describe.image(f"{name} decoded from the searched codes, its {int(changed.sum())} "
                                       "changed cells tinted", r["psnr"]))
        d = min(depth, r["codes"].shape[0] - 1)
        describe.chart(st, fg.code_maps([r["encoder_codes"][d], r["codes"][d]], K[d],
                                        ["encoder's codes", "searched codes"]),
                       "the encoder's and the searched codes: " + describe.code_map(
                           [r["encoder_codes"][d], r["codes"][d]], K[d]),
                       config={"displayModeBar": False}, key="rc_best_maps")
        n_cells = changed.numel()
        st.caption(f"Greedy coordinate descent over the {n_cells} cells ({r['sweeps']} sweeps, {r['seconds']:.1f} s "
                   f"in a worker) changed the code of {int(changed.sum())} cells and moved this image's PSNR from "
                   f"{r['encoder_psnr']:.2f} to {r['psnr']:.2f} dB at the same bits. The nearest code in latent "
                   "space is not always the best code for the decoded image: the encoder is trained to be close to "
                   "its codes, not to pick the codes that decode best.")

    result_panel()


if is_vq:
    best_codes_section()

st.subheader("Your own image")
up = st.file_uploader(f"Upload an image (PNG, JPEG, BMP, GIF, TIFF or WebP; at most {MAX_IMAGE_MB} MB)",
                      type=["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp"], key="rc_upload",
                      max_upload_size=MAX_IMAGE_MB,
                      help=f"It is resized to {cfg.image_size}x{cfg.image_size} and "
                           f"{'greyscale' if cfg.channels == 1 else 'RGB'}, as this model expects.")
if up is not None:
    raw = up.getvalue()
    x = decoded_upload(hashlib.sha256(raw).hexdigest(), cfg.image_size, cfg.channels, raw)
    if isinstance(x, str):
        st.error(f"Could not use {text.md(up.name)}: {text.md(x, 400)}")
    else:
        # A photo of dark ink on white paper is the negative of what an MNIST model learned: detect it from the
        # background (the image's border) and offer the inverted image, on by default when they disagree.
        trained_bg, upload_bg = border_mean(data.val_x[:256]), border_mean(x)
        mismatch = abs(upload_bg - trained_bg) > 0.5
        invert = st.toggle("Invert the upload (dark ink on light paper becomes light on dark)", value=mismatch,
                           key=f"rc_invert:{up.name}:{len(raw)}")
        if mismatch:
            st.info(f"Your image has a {'light' if upload_bg > trained_bg else 'dark'} background "
                    f"(border brightness {upload_bg:.2f}); this model learned images with a "
                    f"{'dark' if trained_bg < 0.5 else 'light'} one ({trained_bg:.2f}). "
                    + ("It is inverted below so the model can read it; switch it off to compare."
                       if invert else "Switch on the invert toggle to give the model what it expects."))
        if invert:
            x = 1 - x
        x_hat, p = analysis.reconstruct(model, x[None])
        cols = st.columns([1, 1, 2])
        state.image(cols[0], x, 160, caption=f"as the model sees it ({cfg.image_size}x{cfg.image_size})",
                    alt=f"your upload resized to {cfg.image_size}x{cfg.image_size}")
        state.image(cols[1], x_hat[0], 160, caption=f"reconstruction: {float(p[0]):.1f} dB",
                    alt=describe.image("reconstruction of your upload", float(p[0])))
        if is_vq:
            codes = model.encode_codes(x[None])
            describe.chart(cols[2], code_map_figure(codes, [text.plotly_template(up.name, 24)], depth),
                           config={"displayModeBar": False})
            if is_rq:
                coarse = analysis.coarse_to_fine(model, x[None])
                dcols = st.columns(len(coarse))
                for d, (c, im) in enumerate(zip(dcols, coarse)):
                    db = float(psnr_per_image(x[None], im)[0])
                    state.image(c, im[0], 96, caption=f"depths 1..{d + 1}: {db:.1f} dB",
                                alt=describe.image(f"your upload decoded from depths 1 to {d + 1}", db))
        st.caption(f"This model learned its codes on {data.name}: an image unlike those comes back drawn with "
                   "the strokes its codebook knows.")

state.notebook_button("reconstruct")   # this setup as a Jupyter notebook (ui/notebook_button.py)
