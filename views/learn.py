"""Learn: one image through the loaded VQ-VAE, every tensor with its real shape; one latent vector
snapped to its nearest code; the losses, the straight-through estimator, and why a prior comes next."""

import numpy as np
import streamlit as st

from ui import describe, state, text, theme
from ui import figures as fg
from vqdemo import analysis, explain
from vqdemo.metrics import psnr_per_image
from vqdemo.quantize import STE_FORMS

loaded = state.current()
if loaded is None:
    st.stop()
model, data = loaded.model, loaded.data


COMPARE_TABLE = (
    "| | AE | VAE | VQ-VAE |\n"
    "|---|---|---|---|\n"
    "| **latent** | any vector (continuous) "
    "| a Gaussian: mean and variance per number, sampled by `mu + eps * std` "
    "| a grid of integers: each cell is the id of a codebook vector |\n"
    "| **loss** | reconstruction | reconstruction + KL(q(z given x) to N(0, I)) "
    "| reconstruction + codebook + beta * commitment (no KL) |\n"
    "| **generate by** | cannot: nobody knows which latents are valid | decode z ~ N(0, I) (blurry) "
    "| sample a small image of codes from a prior (PixelCNN), then decode it |\n"
    "| **bits sent per image** | unlimited (real numbers) "
    "| its KL to N(0, I), in nats / ln 2, which pays for a sampled z (not the mean); the KL weight sets it "
    "| at most h·w·log2 K, one code id per cell; coded with its prior, that prior's code length (fewer) |\n"
)

QUANTIZER_TABLE = (
    "| | VQ (van den Oord et al. 2017) | RQ (Lee et al. 2022) | FSQ (Mentzer et al. 2023) |\n"
    "|---|---|---|---|\n"
    "| **a cell becomes** | the id of its nearest codebook vector "
    "| D ids: the nearest code, then the nearest code to what is left, ... "
    "| one rounded level per channel; the id is their mixed-radix number |\n"
    "| **codebook** | K learned vectors (gradient or EMA) | one learned codebook per depth "
    "| none learned: the fixed grid of levels, e.g. 8 x 6 x 5 = 240 points |\n"
    "| **extra losses** | codebook + beta x commitment | the same, summed over depths | none |\n"
    "| **can collapse?** | yes: codes that never win never move (restarts and data init help) "
    "| yes, at every depth | no code can drift away, though some grid points may go unused |\n"
    "| **bits per cell** | log2 K | sum of log2 K_d | log2 of the product of the levels |\n"
)

st.title("Learn: an image becomes a grid of codes, and comes back")
if loaded.kind == "vae":
    st.info("This model is a plain VAE: it has no codebook to follow. Pick a VQ or RQ model in the sidebar "
            "(for example mnist-vq) to see every step of vector quantisation.")
    st.markdown(COMPARE_TABLE)
    st.stop()
if loaded.kind == "fsq":
    st.markdown(f"**{text.md(loaded.choice.label)}**: finite scalar quantisation (Mentzer et al. 2023). "
                f"The encoder gives {len(model.config.fsq.levels)} numbers per cell; each is squashed into a range "
                f"and rounded to one of {model.config.fsq.levels} levels. The codes are the points of that grid, "
                f"{model.codebook_sizes[0]} of them: nobody learns them, so there is no codebook or commitment loss.")
    x0 = data.val_x[0]
    z0 = model.encode(x0[None]).detach()
    fh, fw = model.latent_shape
    cell = explain.fsq_cell(model, z0, fh // 2, fw // 2)
    st.dataframe({"channel": list(range(1, len(cell.levels) + 1)), "z_e": [round(v, 3) for v in cell.z_e],
                  "bounded": [round(v, 3) for v in cell.bounded], "level (rounded)": cell.level,
                  "levels": cell.levels}, hide_index=True)
    st.caption(f"The centre cell ({fh // 2}, {fw // 2}) of validation image 0: bounded with tanh, rounded, and "
               f"read as one number in mixed radix: code #{cell.code}. Rounding has no gradient, so the "
               "straight-through estimator copies it past the rounding, as in VQ-VAE.")
    a, b = st.columns(2)
    x0_hat = model.decode_codes(model.encode_codes(x0[None]))
    state.image(a, x0, 140, caption="image",
                alt=describe.image(f"validation image 0{describe.label(data.class_names, data.val_y, 0)}"))
    state.image(b, x0_hat[0], 140, caption="decoded from its codes",
                alt=describe.image("validation image 0 decoded from its codes",
                                   float(psnr_per_image(x0[None], x0_hat)[0])))
    st.markdown(QUANTIZER_TABLE)
    st.stop()

key = loaded.key
cfg = model.config
K = model.codebook_sizes[0]
D = cfg.vq.dim
h, w = model.latent_shape
is_rq = loaded.kind == "rq"


@st.cache_resource(max_entries=16, show_spinner=False)
def default_image(key: tuple, _model, _x) -> int:
    _, psnr = analysis.reconstruct(_model, _x[:64])
    return explain.pick_example(_x, psnr)


@st.cache_resource(max_entries=256, show_spinner=False)
def image_view(key: tuple, index: int, _model, _x) -> dict:
    """Everything shown about one image (small tensors; shared by every session, never mutated)."""
    x = _x[index]
    tr = analysis.trace(_model, x)
    steps = explain.quantize_steps(_model, tr.z_e)
    out = {"trace": tr, "steps": steps, "terms": explain.loss_terms(_model, x[None]),
           "mosaics": [fg.channel_mosaic(z[0], 4) for z in (tr.z_e, tr.z_q)]}   # z_e, z_q: each (1, H', W')
    out["psnr"] = float(analysis.reconstruct(_model, x[None])[1][0])
    if _model.config.kind == "rq":
        out["coarse"] = analysis.coarse_to_fine(_model, x[None])
    return out


@st.cache_resource(max_entries=16, show_spinner="Measuring the residuals over the validation set...")
def model_change(key: tuple, _model, _x) -> analysis.ResidualChange:
    return analysis.residual_change(_model, _x)


@st.cache_resource(max_entries=16, show_spinner=False)
def model_view(key: tuple, _model) -> dict:
    return {"tiles": analysis.code_tiles(_model, 0),
            "random": analysis.random_code_images(_model, 6, seed=0),
            "noise": analysis.gaussian_latent_images(_model, 6, seed=0),
            "ste": explain.ste_gradients(seed=0),
            "offset": explain.offset_check(1000.0, k=min(K, 256), dim=D)}


n_val = len(data.val_x)
arch = (f"conv encoder (strided convs + {cfg.res_blocks} residual blocks, as in van den Oord et al. 2017)"
        if cfg.arch == "conv" else f"patch MLP (Conv2d with kernel = stride = {cfg.downsample})")
depth_note = f", RQ depth {cfg.rq.depth} with codebooks {model.codebook_sizes}" if is_rq else ""
st.markdown(
    f"**{text.md(loaded.choice.label)}**: {arch}; K = {K} codes of D = {D} numbers{depth_note}; "
    f"a {cfg.image_size}x{cfg.image_size} image becomes a {h}x{w} grid of codes; beta = {cfg.vq.beta}, "
    f"{'EMA' if cfg.vq.codebook == 'ema' else 'gradient-learned'} codebook, {cfg.vq.init} init, "
    f"dead-code restart {'on' if cfg.vq.restart_dead else 'off'}.")

IMG = state.Param("img", default_image(key, model, data.val_x), lo=0, hi=n_val - 1, cast=int)
ROW, COL = state.Param("row", h // 2, lo=0, hi=h - 1, cast=int), state.Param("col", w // 2, lo=0, hi=w - 1, cast=int)
state.url_value("learn_img", IMG)
state.url_value("learn_row", ROW)
state.url_value("learn_col", COL)

pick, info = st.columns([3, 2])
if n_val > 1:
    index = pick.slider("Validation image", 0, n_val - 1, key="learn_img",
                        help="Any image of the held-out set; the URL keeps your choice so you can share it.")
else:
    index = 0
    pick.caption("The validation set holds one image.")
state.to_url((IMG, index))
if data.val_y is not None and data.class_names:
    info.metric("Label", text.md(data.class_names[int(data.val_y[index])]))

view = image_view(key, index, model, data.val_x)
tr = view["trace"]
first = view["steps"][0]  # depth 1 as the quantiser compares it (equal to tr.flat / tr.dist for a plain VQ)
layer0 = model.quantizer.layer(0) if is_rq else model.quantizer
mv = model_view(key, model)

# ------------------------------------------------------------------------------- 1. the pipeline
st.header("1 · The pipeline, with this model's real tensors")
B, C, H, W = tr.x.shape
N = first.compared.shape[0]
stages = st.columns(4) + st.columns(4)[:3]   # two rows of stages: each wide enough for its figure at 1024 px
codes_np = first.codes[0].numpy()
with stages[0]:
    st.markdown("**image x**")
    st.markdown(f"`{tuple(tr.x.shape)}`  \n(B, C, H, W)")
    state.image(st, tr.x[0], 120,
                alt=describe.image(f"validation image {index}{describe.label(data.class_names, data.val_y, index)}"))
with stages[1]:
    st.markdown("**→ encoder: z_e**")
    st.markdown(f"`{tuple(tr.z_e.shape)}`  \n(B, D, h, w)")
    state.image(st, view["mosaics"][0], 120, alt=describe.channels(tr.z_e[0], "encoder output z_e"))
with stages[2]:
    st.markdown("**→ flatten**")
    st.markdown(f"`{tuple(first.compared.shape)}`  \n(B·h·w, D)")
    describe.chart(st, fg.matrix(first.compared.numpy(), "dimension", "vector", theme.scaled(190), "PuOr"),
                   config={"displayModeBar": False})
with stages[3]:
    st.markdown(f"**→ distances to {K} codes**")
    st.markdown(f"`{tuple(first.dist.shape)}`  \n(B·h·w, K)")
    describe.chart(st, fg.matrix(first.dist.numpy(), "code", "vector", theme.scaled(190), "Viridis",
                                 marks=first.codes.flatten().numpy()), config={"displayModeBar": False})
with stages[4]:
    st.markdown("**→ argmin: codes**")
    st.markdown(f"`{tuple(first.codes[0].shape)}`  \n(h, w) integers")
    describe.chart(st, fg.code_maps([codes_np], K, cell_px=theme.scaled(19)), describe.code_map(codes_np, K),
                   config={"displayModeBar": False})
with stages[5]:
    st.markdown("**→ look up: z_q**")
    st.markdown(f"`{tuple(tr.z_q.shape)}`  \n(B, D, h, w)")
    state.image(st, view["mosaics"][1], 120, alt=describe.channels(tr.z_q[0], "quantised z_q"))
with stages[6]:
    st.markdown("**→ decoder: x̂**")
    st.markdown(f"`{tuple(tr.x_hat.shape)}`  \n(B, C, H, W)")
    state.image(st, tr.x_hat[0], 120,
                alt=describe.image(f"reconstruction x̂ of validation image {index}", view["psnr"]))
    st.markdown(f"PSNR **{view['psnr']:.1f} dB**")
st.caption(f"Follow the shapes: the encoder turns {H}x{W} pixels into {h}x{w} vectors of {D} numbers; each of the "
           f"{N} rows is compared with all {K} codes (dark = close; the amber dot is each row's argmin), and the "
           f"decoder only ever sees the {h * w} chosen codes{' (summed over depths)' if is_rq else ''}.")

# --------------------------------------------------------------------- 2. one vector, snapped
st.header("2 · Snap one latent vector to its nearest code")
st.markdown("The encoder does not output a softmax over K codes to sample from (van den Oord et al. 2017): "
            "it outputs the vector itself, and quantisation replaces it with the nearest codebook entry: "
            "vector → distances to every code → argmin → that code's vector.")


def on_cell_click() -> None:
    points = st.session_state["learn_cellmap"].selection.points
    if points:
        st.session_state["learn_row"] = int(points[0]["y"])
        st.session_state["learn_col"] = int(points[0]["x"])


left, mid, right = st.columns([1.15, 1.6, 1.0])
with left:
    rc1, rc2 = st.columns(2)
    row = rc1.number_input("Row", 0, h - 1, key="learn_row", step=1)
    col = rc2.number_input("Column", 0, w - 1, key="learn_col", step=1)
    state.to_url((ROW, row), (COL, col))
    describe.chart(st, fg.clickable_code_map(codes_np, K, (row, col), theme.scaled(270)),
                   describe.code_map(codes_np, K) + f"; cell ({row}, {col}) followed", key="learn_cellmap",
                   on_select=on_cell_click, selection_mode="points",
                   config={"displayModeBar": False})
    same = int((codes_np == codes_np[row, col]).sum()) - 1
    st.caption("The code map: click a cell (or type its row and column) to follow its vector. "
               + (f"Dotted: the {same} other cell{'s' if same > 1 else ''} that picked the same code."
                  if same else "No other cell picked its code."))

cell = row * w + col
dist = first.dist[cell].numpy()
code = int(codes_np[row, col])
order = np.argsort(dist)
runner = int(order[1]) if K > 1 else code
with mid:
    st.markdown(f"Cell ({row}, {col}) → **code #{code}** at squared distance **{dist[code]:.3f}**; "
                f"runner-up #{runner} at {dist[runner]:.3f}.")
    describe.chart(st, fg.distance_bars(dist, code, theme.scaled(290)), config={"displayModeBar": False})
    st.caption("Its squared distance to every code: the shortest bar (amber) wins, and only its id is kept.")
with right:
    st.markdown(f"**Code #{code} decoded alone**")
    state.image(st, mv["tiles"][code], 150, alt=describe.tile(code, same + 1, "cells of this code map"))
    e = layer0.vectors()[code].detach()
    describe.chart(st, fg.vector_compare(first.compared[cell].numpy(), e.numpy(), code, K, theme.scaled(200)),
                   config={"displayModeBar": False})
    st.caption("What this code paints by itself (decoded alone), and the vector beside the code it snapped to.")
state.page_link("views/codebook.py", {"model": loaded.choice.id, "code": str(code), "hl": "1"}
                | ({"depth": "1"} if is_rq else {}),
                label=f"See code #{code} among all {K} codes, highlighted on the Codebook page",
                icon=":material/grid_view:")

parts = explain.distance_parts(first.compared[cell], e)
st.markdown("**The distance trick** (as in the VQ-VAE reference code of van den Oord et al. 2017): expanding "
            "|x − e|² = |x|² − 2x·e + |e|² turns all "
            f"{N}x{K} distances into one matrix multiply. For this cell and code #{code}:")
st.code(f"{explain.DISTANCE_CODE}\n"
        f"{parts.x_sq:.4f} - {-parts.cross:.4f} + {parts.e_sq:.4f} = {parts.expanded:.4f}"
        f"   # the direct sum((x - e)**2) gives {parts.direct:.4f}", language="python", wrap_lines=True)
oc = mv["offset"]
negative = f" and gives {oc.naive_negative:.0%} negative distances" if oc.naive_negative else ""
st.caption(f"The catch: the three terms can be huge and nearly cancel. In float32, with 512 vectors and "
           f"{min(K, 256)} codes all near {oc.offset:g} ± 1 (computed now), the plain expansion picks the wrong "
           f"code for {oc.naive_wrong:.0%} of them{negative}. "
           "Distances do not change when x and every code move together, so this app's `nearest_code` first "
           f"subtracts the codebook's mean from both, then expands: {oc.wrong:.0%} wrong.")

if is_rq:
    st.subheader("Residual quantisation, depth by depth (RQ-VAE, Lee et al. 2022)")
    cells = explain.cell_steps(view["steps"], row, col)
    rq = cfg.rq
    depths = len(model.codebook_sizes)
    trained_note = (f" This run stopped after {depths} of its {rq.depth} depths were switched on, so only those "
                    f"are used here." if depths < rq.depth else "")
    st.markdown(
        f"Depth 1 picks the nearest code to z_e; depth 2 quantises what is left, r₁ = z_e − q₁; and so on. "
        f"The decoder sees q₁ + q₂ + … . This model: {depths} depths, codebooks {model.codebook_sizes}"
        f"{' (one shared)' if rq.shared else ''}, {explain.residual_norm_note(model)}, "
        f"progressive training {f'every {rq.progressive_steps} steps' if rq.progressive_steps else 'off'}."
        f"{trained_note}")
    scales = [float(s_) for s_ in model.quantizer.scales[:depths]]
    table = {"depth": [c.depth for c in cells], "code": [f"#{c.code}" for c in cells],
             "residual scale s": [round(v, 4) for v in scales],
             "distance² at scale (÷ s²)": [round(c.distance, 4) for c in cells],
             "|residual| before (latent units)": [round(c.residual_norm, 4) for c in cells],
             "|residual| after (latent units)": [round(c.left_norm, 4) for c in cells]}
    st.dataframe(table, hide_index=True)
    grew_here = [c.depth for c in cells[1:] if c.left_norm > c.residual_norm]
    change = model_change(key, model, data.val_x)
    grew = ", ".join(f"at depth {d + 2} for {g:.1%}" for d, g in enumerate(change.grew))
    worse = ", ".join(f"depth {d + 2} for {w:.1%} (worst {change.worst_drop_db[d]:.2f} dB)"
                      for d, w in enumerate(change.worse_images))
    st.caption(
        f"Cell ({row}, {col}): the distance is measured where the codebook compares it, on the residual divided by "
        f"its scale s; the norms are in the latent's own units. "
        + (f"Here the residual grew at depth {', '.join(map(str, grew_here))}. " if grew_here else
           "Here every depth shortened the residual. ")
        + f"Not always so: each depth takes the nearest code, but no code need be nearer to the residual than zero "
        f"is. Over the {len(data.val_x)} validation images the residual grows {grew} of the vectors; adding a "
        f"depth lowers an image's PSNR at {worse} of the images.")
    psnrs = [float(psnr_per_image(tr.x, c)[0]) for c in view["coarse"]]
    cols = st.columns(len(view["coarse"]) + 1)
    side = state.crisp_width(tr.x[0], 110)   # one width for all: a wider caption would stretch its image
    state.image(cols[0], tr.x[0], 110, caption="original", width=side,
                alt=describe.image(f"validation image {index}"))
    for d, (c, im) in enumerate(zip(cols[1:], view["coarse"])):
        state.image(c, im[0], 110, caption=f"depths 1..{d + 1}: {psnrs[d]:.1f} dB", width=side,
                    alt=describe.image(f"validation image {index} decoded from depths 1 to {d + 1}", psnrs[d]))
    st.caption("The whole image decoded from the first d depths only: coarse shapes first, details later.")
    st.code(f"{explain.RQ_LOSS_CODE}\n# r: what depth d must explain, q: the codes it picked (Lee et al. 2022)",
            language="python", wrap_lines=True)

# -------------------------------------------------------------------------- 3. losses and STE
st.header("3 · What training minimises, and how the gradient skips the argmin")
t = view["terms"]
st.markdown("Each term in one line, with its value on this image. The argmin has no gradient, so each part "
            "of the model learns from a different term:")
ema = cfg.vq.codebook == "ema"
lines = [
    (explain.RECON_CODE,
     f"**{t['recon']:.5f}**: reconstruction, trains encoder and decoder (data_variance = {cfg.data_variance:g}; "
     "van den Oord et al. 2017's code divides by the training set's variance)"),
    (explain.CODEBOOK_CODE,
     "|sg[z_e] − e|²: pulls each code towards its vectors; " + (
         "**EMA codebook here**: codes move by running averages instead, so this term is 0" if ema
         else f"**{t['codebook']:.5f}**")),
    (explain.COMMIT_CODE,
     f"β|z_e − sg[e]|²: keeps the encoder near its codes: {cfg.vq.beta:g} x **{t['commit']:.5f}**"),
    (explain.STE_CODE["paper"],
     "straight-through (paper): forward uses z_q, backward copies the decoder's gradient onto z_e"),
    (explain.STE_CODE["both"],
     "the 'both' variant: same forward value, and a gradient-learned codebook also gets the decoder's gradient"),
]
for line, what in lines:
    code_part, text_part = st.columns([1, 1.2])
    code_part.code(line, language="python", wrap_lines=True)   # a narrow column on a projector: never cut
    text_part.markdown(what)
st.caption("sg[...] is stop-gradient, .detach() in PyTorch. " + explain.ste_summary(cfg.vq))
ste_table, ste_text = st.columns([1, 1.2])
with ste_table:
    ste = mv["ste"]
    st.markdown("**Where the decoder's gradient goes** (a toy vector, computed now):")
    st.dataframe({"form": list(STE_FORMS),
                  "output = e": [ste[f]["forward_error"] < 1e-6 for f in STE_FORMS],
                  "|grad| on z_e": [round(ste[f]["grad_z_e"], 3) for f in STE_FORMS],
                  "|grad| on e": [round(ste[f]["grad_e"], 3) for f in STE_FORMS]},
                 hide_index=True)
with ste_text:
    st.markdown("<br>", unsafe_allow_html=True)
    st.caption("Both forms decode exactly the code; the paper's sends no reconstruction gradient to the codebook "
               "(it learns from the codebook loss or EMA), the 'both' form sends it to both.")

# ------------------------------------------------------------------- 4. AE / VAE / VQ-VAE, prior
st.header("4 · A VQ-VAE is an autoencoder plus a prior over a small image of codes")
# one above the other: beside the prior, the tables' longest words need more than their column at 1024 px
tab_col, prior_col = st.container(), st.container()
with tab_col:
    st.markdown(COMPARE_TABLE)
    st.caption("Read across a row: only the VQ-VAE's latent is a small image of integers, which is what makes "
               "a separate prior possible.")
    st.markdown("**Three ways to make the integers**")
    st.markdown(QUANTIZER_TABLE)
with prior_col:
    st.markdown(
        f"1. Train the encoder and decoder (this model): a {H}x{W} image ↔ a {h}x{w} **small image** of code ids.\n"
        f"2. Train a PixelCNN on the small images: which code comes next, given the ones before.\n"
        f"3. Generate: sample a small image from the PixelCNN, decode it. Swap the PixelCNN for a transformer or "
        f"diffusion model and you are close to the recipe of today's latent image generators.")
    a, b = st.columns(2)
    state.image(a, analysis.image_grid(mv["random"], 3), 150, caption="uniformly random codes, decoded",
                alt=describe.grid(len(mv["random"]), "code maps of uniformly random codes, decoded"))
    state.image(b, analysis.image_grid(mv["noise"], 3), 150, caption="N(0, 1) noise decoded",
                alt=describe.grid(len(mv["noise"]), "latents of N(0, 1) noise, decoded"))
    st.caption("Without a prior, neither random codes nor Gaussian noise decode to a plausible image: "
               "that is the prior's job.")
    if loaded.has_prior:
        st.page_link("views/sample.py", label="Sample from this model's trained prior", icon=":material/casino:")
    else:
        st.page_link("views/sample.py", label="This model has no prior yet: train one on the Sample page",
                     icon=":material/casino:")
