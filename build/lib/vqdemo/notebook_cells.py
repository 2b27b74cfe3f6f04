"""Each page's notebook cells after the set-up (and model) cells: ("md" | "code", text) pairs, the first a markdown
title that goes above the set-up. They use only the public vqdemo API (docs/API.md) and plotly, and explain each step
as the page does; the last cell is the exercises.
"""

from __future__ import annotations

from collections.abc import Callable

from .notebook import Context, literal, query_text
from .train_settings import model_settings

Cells = list[tuple[str, str]]
FOOTER = ("\n\n*Exported from the vqdemo app ({page} page) with the settings `{query}`; the same notebook again: "
          "`python -m vqdemo notebook --page {page} --url \"{query}\"{run}`.*")


def _title(ctx: Context, title: str, text: str) -> tuple[str, str]:
    run = f" --run {ctx.source}" if ctx.from_run else ""
    return "md", f"# {title}\n\n{text}" + FOOTER.format(page=ctx.page, query=query_text(ctx.values), run=run)


def _exercises(items: list[str]) -> tuple[str, str]:
    return "md", "## Exercises\n\n" + "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1))


CURVES = '''\
import pandas as pd

rows = pd.DataFrame(vqdemo.read_metrics(RUN))   # metrics.jsonl: a row per logged step ("train") and validation
px.line(rows, x="step", y="psnr", color="type", markers=True, labels={"psnr": "PSNR (dB)"},
        title="PSNR on training batches and on the validation set").show()
if "perplexity" in rows:
    fig = px.line(rows, x="step", y="perplexity", color="type", markers=True,
                  title="Perplexity: how many codes are effectively used (dashed: K)")
    fig.add_hline(y=model.codebook_sizes[0], line_dash="dash")
    fig.show()'''
USAGE = '''\
codes = vqdemo.analysis.encode_all(model, data.val_x)    # (N, h, w), or (N, depth, h, w) for RQ
codes = codes[:, DEPTH - 1] if codes.dim() == 4 else codes
K = model.codebook_sizes[DEPTH - 1]
counts = vqdemo.analysis.usage(codes, K)                 # (K,) uses of each code on the validation set
used, perplexity = int((counts > 0).sum()), vqdemo.perplexity_of(counts)
print(f"K = {K}: {used} codes used, {K - used} dead, perplexity {perplexity:.1f}")
order = counts.argsort(descending=True)
fig = px.bar(x=[str(int(c)) for c in order], y=counts[order].numpy(),
             labels={"x": "code id, most used first", "y": "uses on the validation set"},
             title=f"{used} of {K} codes used; perplexity {perplexity:.1f} (K if all were used evenly)")
fig.update_xaxes(type="category", showticklabels=K <= 64)
fig.show()'''
RECON = '''\
x = data.val_x[:8]
x_hat, psnr = vqdemo.analysis.reconstruct(model, x)
picture(torch.cat([x, x_hat]), f"top: validation images; bottom: reconstructions, {psnr.mean():.1f} dB on average",
        nrow=8).show()'''


def train(ctx: Context) -> Cells:
    v = ctx.values
    vq = ctx.kind != "vae"
    if ctx.from_run:
        cells = [_title(ctx, "Train: a run, reproduced", "The figures of one training run, read from its run folder "
                        "(its `metrics.jsonl` and best checkpoint), as the Train page showed them.")]
        cells += [("code", "RUN, DEPTH = at.path, 1\nprint(RECIPE['model']['kind'], 'trained with', RECIPE['train'])")]
    else:
        budget = {"seconds": float(v["secs"]), "steps": None} if v["budget"] == "seconds" else \
            {"seconds": None, "steps": v["steps"]}
        train_cfg = {**budget, "batch_size": v["batch"], "lr": v["lr"], "seed": v["seed"]}
        cells = [_title(ctx, "Train a VQ-VAE (or RQ-VAE, FSQ, VAE) from scratch",
                        "A VQ-VAE (van den Oord et al. 2017) encodes each image to a small grid of vectors, replaces "
                        "each vector by its nearest entry of a codebook of K vectors, and decodes the image from those "
                        "entries. Training pulls three ways: the reconstruction, the codebook towards the encoder's "
                        "outputs, and the encoder towards its codes (the commitment loss, weighted by beta). "
                        "These are the Train page's settings; change one and run the notebook again.")]
        cells += [("code", f"KIND = {v['kind']!r}\n"
                           f"SETTINGS = {literal(model_settings(v))}   # fit.model_config's settings by field name\n"
                           f"DATA = vqdemo.DataConfig(name={v['data']!r})\n"
                           f"TRAIN = vqdemo.TrainConfig(**{literal(train_cfg)}, device=DEVICE)\n"
                           f"NORMALIZE_RECON = {v['var']!r}   # divide the recon loss by the data's variance\n"
                           "DEPTH = 1   # the figures show depth 1's codes (RQ has one codebook per depth)"),
                  ("md", "**Train.** `vqdemo.train` (the library's `fit`) builds the model from the settings, "
                         "trains it within the budget (steps or seconds) and writes a run folder: `config.json` "
                         "(the recipe), `metrics.jsonl` (the curves) and the best checkpoint by validation loss, "
                         "which the next cells load."),
                  ("code", "data = vqdemo.load_data(DATA)\n"
                           "config = vqdemo.model_config(KIND, data.channels, data.image_size, **SETTINGS)\n"
                           "RUN = vqdemo.new_run_dir(prefix=\"notebook-\")\n"
                           "_, result = vqdemo.train(config, DATA, TRAIN, out_dir=RUN,\n"
                           "                         normalize_recon=NORMALIZE_RECON)\n"
                           "print(f\"{result.state} after {result.steps} steps ({result.reason}); run folder {RUN}\")\n"
                           "model = vqdemo.load_model(RUN)[0]   # the best checkpoint, on the CPU for the figures")]
    cells += [("md", "**The curves.** PSNR (peak signal-to-noise ratio, in dB: higher is a closer reconstruction) "
                     "rises as the model learns. Perplexity, exp of the entropy of code use, is the number of codes "
                     "the model effectively uses: it stays far below K when the codebook collapses onto a few codes."),
              ("code", CURVES)]
    if vq:
        cells += [("md", "**Codebook usage.** Every code's uses on the validation set, most used first: a long flat "
                         "tail of zeros is dead codes, vectors no encoder output is nearest to."),
                  ("code", USAGE)]
    cells += [("md", "**Reconstructions** of held-out images by the best checkpoint."), ("code", RECON)]
    k_item = ("Change `SETTINGS['k']` to 16 and run the notebook again: compare the perplexity and the PSNR with "
              "this run. Then try 256." if not ctx.from_run else
              "Export the Train notebook (`python -m vqdemo notebook --page train --url \"k=16\"`) and compare its "
              "perplexity and PSNR with this run's.")
    return cells + [_exercises([
        k_item,
        "Codebook collapse: set `init='normal'`, `codebook='grad'`, `restart_dead=False` (N(0, 1) init, as "
        "`nn.Embedding` starts). How many codes are used now? Which of the three settings brings them back?",
        "Set beta (the commitment weight) to 0.05 and to 2.0: what happens to the codebook usage and to the PSNR?",
        "Use the same budget with a GPU (Colab: Runtime > Change runtime type): how many more steps fit?",
    ])]


def reconstruct(ctx: Context) -> Cells:
    v, vq, rq = ctx.values, ctx.kind in ("vq", "rq", "fsq"), ctx.kind == "rq"
    cells = [_title(ctx, "Reconstruct: what comes back through the codes",
                    "Validation images beside what the decoder rebuilds from their codes alone, the PSNR of each, "
                    "and each image's code map: the small image of code ids the model stores.")]
    cells += [("code", f"N, START, DEPTH = {v['n']}, {v['start']}, {v['depth']}   # how many images, the first one, "
                       "and (RQ) the depth whose code map is shown\n"
                       "START, DEPTH = max(0, min(START, len(data.val_x) - N)), min(DEPTH, len(model.codebook_sizes))\n"
                       "x = data.val_x[START:START + N]                    # (N, C, H, W)\n"
                       "x_hat, psnr = vqdemo.analysis.reconstruct(model, x)\n"
                       "picture(torch.cat([x, x_hat]), f\"top: validation images {START}..{START + N - 1}; bottom: "
                       "reconstructions, {psnr.mean():.2f} dB on average\", nrow=N).show()\n"
                       "print('PSNR per image (dB):', [round(p, 1) for p in psnr.tolist()])")]
    if vq:
        cells += [("md", "**Code maps.** Each image is stored as an h x w grid of code ids (one grid per depth for "
                         "RQ): far fewer bits than its pixels. Similar strokes reuse the same codes across images; "
                         "hover a cell for its id."),
                  ("code", "import math\n\n"
                           "codes = model.encode_codes(x)                    # (N, h, w), or (N, depth, h, w) for RQ\n"
                           "maps = codes[:, DEPTH - 1] if codes.dim() == 4 else codes\n"
                           "h, w = model.latent_shape\n"
                           "bits = h * w * sum(math.log2(k) for k in model.codebook_sizes)\n"
                           "pixels = data.image_size ** 2 * data.channels * 8\n"
                           "fig = px.imshow(maps.numpy(), facet_col=0, facet_col_wrap=N, color_continuous_scale="
                           "\"Turbo\",\n"
                           "                title=f\"code maps ({h}x{w} ids: {bits:,.0f} bits against {pixels:,} "
                           "bits of pixels)\")\n"
                           "fig.update_xaxes(visible=False).update_yaxes(visible=False)\n"
                           "fig.show()")]
    if rq:
        cells += [("md", "**Coarse to fine.** Residual quantisation (Lee et al. 2022): depth 1 codes the encoder's "
                         "output, each later depth the part the earlier depths left unexplained. Decoding with the "
                         "first d depths only shows what each depth adds."),
                  ("code", "coarse = vqdemo.analysis.coarse_to_fine(model, x)   # depth x (N, C, H, W)\n"
                           "gains = [float(vqdemo.psnr_per_image(x, c).mean()) for c in coarse]\n"
                           "picture(torch.cat([x, *coarse]), 'rows: the originals, then depths 1..d for d = 1, 2, "
                           "...', nrow=N).show()\n"
                           "px.line(x=list(range(1, len(gains) + 1)), y=gains, markers=True, labels={'x': 'depths "
                           "used', 'y': 'PSNR (dB)'},\n        title='PSNR as depths are added').show()")]
    return cells + [_exercises([
        "Change `START` to look at other images: which digits or shapes come back worst, and where (thin strokes, "
        "corners)?",
        "Which code appears most in these maps? Decode a map where every cell is that code "
        "(`model.decode_codes(torch.full_like(maps[:1], code))`) and describe what it draws.",
        "Export the Train notebook with K = 16 (`--url \"k=16\"`), train it, and compare the PSNR here with that "
        "model's.",
    ])]


def codebook(ctx: Context) -> Cells:
    v = ctx.values
    cells = [_title(ctx, "Codebook: what every code learned, and which ones are used",
                    "Codebook collapse, a few codes taking every vector, happens when a codebook learned by gradient "
                    "without restarts starts far from the encoder's outputs (N(0, 1) init). Here: every code's use, "
                    "perplexity against K, every code decoded alone, and the codebook among the encoder's outputs.")]
    cells += [("code", f"DEPTH, CODE, PROJ = {v['depth']}, {v['code']!r}, {v['proj']!r}   # the codebook's depth "
                       "(RQ), the code to look at (None: the most used), the 2-D map (PCA or UMAP)\n"
                       "DEPTH = min(DEPTH, len(model.codebook_sizes))\n"
                       "print(model.config.vq if model.config.kind != 'fsq' else model.config.fsq)"),
              ("md", "**Usage.** How often each code is the nearest one, over the validation set."),
              ("code", USAGE),
              ("md", "**Every code decoded alone** (the code at every cell of the grid), most used first: what each "
                     "code draws. Dead codes often decode to grey noise."),
              ("code", "tiles = vqdemo.analysis.code_tiles(model, DEPTH - 1)   # (K, C, H, W)\n"
                       "picture(tiles[order], 'every code decoded alone, most used first (left to right, top to "
                       "bottom)', nrow=16, scale=2).show()"),
              ("md", "**The codebook among the encoder's outputs**, projected to 2-D: dots are encoder outputs "
                     "coloured by their code, crosses are the codes. A code far from every dot is never picked: it "
                     "is dead."),
              ("code", "import numpy as np\n\n"
                       "pts = vqdemo.explain.encoder_points(model, data.val_x, data.val_y, depth=DEPTH - 1, "
                       "max_points=2000, seed=0)\n"
                       "both = np.concatenate([pts['codebook'], pts['points']])   # one projection for both\n"
                       "xy = vqdemo.analysis.pca_2d(both) if PROJ == 'PCA' else vqdemo.analysis.umap_2d(both, seed=0)\n"
                       "fig = px.scatter(x=xy[K:, 0], y=xy[K:, 1], color=pts['codes'].astype(str), opacity=0.5,\n"
                       "                 title=f'{PROJ} of {len(pts[\"points\"])} encoder outputs (dots) and the {K} "
                       "codes (crosses)')\n"
                       "dead = counts.numpy() == 0\n"
                       "fig.add_scatter(x=xy[:K][~dead, 0], y=xy[:K][~dead, 1], mode='markers', name='used codes',\n"
                       "                marker={'symbol': 'x', 'color': 'black', 'size': 9})\n"
                       "fig.add_scatter(x=xy[:K][dead, 0], y=xy[:K][dead, 1], mode='markers', name='dead codes',\n"
                       "                marker={'symbol': 'x', 'color': 'red', 'size': 9})\n"
                       "fig.update_layout(showlegend=False)\n"
                       "fig.show()"),
              ("md", "**One code**: the validation images that use it most."),
              ("code", "CODE = int(order[0]) if CODE is None else min(CODE, K - 1)\n"
                       "top = vqdemo.analysis.images_using(codes, CODE, top=8)\n"
                       "picture(torch.cat([tiles[CODE:CODE + 1], data.val_x[top]]), f'code {CODE} alone, then the "
                       "images that use it most', nrow=9).show()")]
    return cells + [_exercises([
        "Set `CODE` to a dead code (a red cross) and to the most used one: what does each draw alone?",
        "Export the Train notebook with `init=normal&cb=grad&restart=0` (N(0, 1) init, gradient codebook, no "
        "restarts), train it, and load its run here: how many codes are used, and where do the dead ones sit "
        "on the map?",
        "Change K to 16 in the Train notebook and compare the perplexity with this model's.",
    ])]


def paint(ctx: Context) -> Cells:
    cells = [_title(ctx, "Paint with codes",
                    "The code map is a small image: each cell is one codebook vector, and the decoder turns the grid "
                    "back into a picture. Change cells and decode again.")]
    cells += [("code", f"GRID = {ctx.values['grid']!r}   # the page's painting (?grid=); empty: start from an image's "
                       "codes\n"
                       "h, w = model.latent_shape\n"
                       "sizes = model.codebook_sizes\n"
                       "layers = vqdemo.grid_url.decode(GRID, sizes, h, w)\n"
                       "codes = (torch.tensor(layers) if layers else model.encode_codes(data.val_x[:1])[0]"
                       ".reshape(-1, h, w))   # (depth, h, w)\n"
                       "codes = codes if model.config.kind == 'rq' else codes[0]       # VQ: (h, w)\n"
                       "picture(model.decode_codes(codes[None]), 'the code map, decoded', scale=6).show()\n"
                       "fig = px.imshow((codes[0] if codes.dim() == 3 else codes).numpy(), text_auto=True, "
                       "color_continuous_scale='Turbo', title='its code ids')\n"
                       "fig.show()"),
              ("md", "**Paint.** Take the code whose tile is brightest (the 'white ink' of an MNIST model) and paint "
                     "a vertical stroke with it, then decode."),
              ("code", "tiles = vqdemo.analysis.code_tiles(model, 0)\n"
                       "ink = vqdemo.code_canvas.brightest_code(tiles)\n"
                       "painted = codes.clone()\n"
                       "layer = painted[0] if painted.dim() == 3 else painted   # depth 1 for RQ\n"
                       "layer[1:h - 1, w // 2] = ink\n"
                       "before, after = model.decode_codes(codes[None]), model.decode_codes(painted[None])\n"
                       "picture(torch.cat([before, after]), f'before and after a stroke of code {ink}', "
                       "scale=6).show()")]
    return cells + [_exercises([
        "Paint a horizontal stroke too: does the decoder draw a cross, or something that looks like a digit it "
        "knows?",
        "Fill the whole grid with one code (`torch.full_like(codes, c)`) for a few values of c: which codes are "
        "background, which are ink?",
        "Change one cell at a time: how far does a single code's influence reach in the decoded image (the "
        "decoder's receptive field)?",
    ])]


def sample(ctx: Context) -> Cells:
    v = ctx.values
    cells = [_title(ctx, "Sample new images with a prior",
                    "A VQ-VAE is an autoencoder, not a generator: a PixelCNN prior (van den Oord et al. 2016) learns "
                    "which code maps are likely, draws new ones cell by cell, and the decoder turns them into images. "
                    "Beside it, the two ways that do not work: uniformly random codes, and Gaussian noise through the "
                    "decoder.")]
    cells += [("code", f"N, TEMPERATURE, TOP_K, SEED = {v['n']}, {v['temperature']!r}, {v['top_k']}, {v['seed']}\n"
                       f"LABEL, GUIDANCE = {v['label']}, {v['guidance']!r}   # LABEL -1: any class\n"
                       "PRIOR_SECONDS = 60   # used only when this model has no prior yet\n"
                       "if not (vqdemo.prior.prior_dir(at.path) / vqdemo.runs.WEIGHTS).is_file():\n"
                       "    vqdemo.prior.train_prior(at.path, seconds=PRIOR_SECONDS, seed=0)\n"
                       "the_prior = vqdemo.prior.load_prior(at.path)[0]\n"
                       "classes = the_prior.config.num_classes\n"
                       "label = LABEL if classes and 0 <= LABEL < classes else None\n"
                       "guidance = GUIDANCE if the_prior.config.guided else 1.0\n"
                       "top_k = min(TOP_K, max(model.codebook_sizes)) or None\n"
                       "codes, images = vqdemo.prior.sample_with_codes(model, the_prior, N, TEMPERATURE, top_k, SEED, "
                       "label, guidance)\n"
                       "picture(images, f'{N} samples from the prior (temperature {TEMPERATURE}, '\n"
                       "        f\"{'any class' if label is None else f'class {label}'})\").show()"),
              ("md", "**Without a prior.** Uniformly random code maps decode to patchwork: most maps are nothing the "
                     "decoder saw. Gaussian noise fed to the decoder (the 'random' images some tutorials show) lands "
                     "far from every code and decodes to smudges."),
              ("code", "with torch.no_grad():\n"
                       "    picture(vqdemo.analysis.random_code_images(model, N, SEED), 'uniformly random codes')"
                       ".show()\n"
                       "    picture(vqdemo.analysis.gaussian_latent_images(model, N, SEED), "
                       "'Gaussian noise through the decoder').show()")]
    return cells + [_exercises([
        "Set `TEMPERATURE` to 0.3 and to 1.5 with the same `SEED`: which samples look more alike, which more "
        "varied, and why (the temperature divides the prior's logits)?",
        "Keep only the 5 likeliest codes at each cell (`TOP_K = 5`): what changes?",
        "Ask for one class (`LABEL = 3`) with `GUIDANCE` 0, 1 and 3 (classifier-free guidance, Ho & Salimans 2022): "
        "how often is the digit the one asked for?",
    ])]


def playground(ctx: Context) -> Cells:
    v = ctx.values
    cfg = {"data": v["data"], "k": v["k"], "beta": v["beta"], "init": v["init"], "codebook": v["cb"],
           "restart_dead": v["restart"], "quantizer": v["q"], "steps": v["steps"], "every": max(1, v["steps"] // 100)}
    cells = [_title(ctx, "Playground: a codebook you can see",
                    "A toy autoencoder squeezes 2-D points through a latent space of D = 2, so every encoder output, "
                    "every code and the region each code owns fit on one picture. Change one setting, run again, and "
                    "watch the codes move.")]
    cells += [("code", f"CONFIG = vqdemo.PlaygroundConfig(**{literal(cfg)}, seed=0)\n"
                       "frames = vqdemo.run_playground(CONFIG)   # points (F, N, 2), codes (F, K, 2), counts (F, K)\n"
                       "print(f\"{frames.used[0]} of {frames.codes.shape[1]} codes picked at step 0, {frames.used[-1]} "
                       "after {frames.step[-1]} steps; perplexity {frames.perplexity[-1]:.1f}\")"),
              ("md", "**The latent plane** at the start, half way and at the end: dots are encoder outputs coloured by "
                     "the code they snap to, black crosses the codes, red crosses the dead codes (no dot picks them)."),
              ("code", "import numpy as np\n"
                       "import pandas as pd\n"
                       "from plotly.subplots import make_subplots\n\n"
                       "shown = sorted({0, len(frames.step) // 2, len(frames.step) - 1})\n"
                       "fig = make_subplots(1, len(shown), subplot_titles=[f'step {frames.step[f]}' for f in shown])\n"
                       "for col, f in enumerate(shown, 1):\n"
                       "    pts, codes = frames.points[f], frames.codes[f]\n"
                       "    nearest = ((pts[:, None] - codes[None]) ** 2).sum(-1).argmin(1)   # each dot's code\n"
                       "    dead = frames.counts[f] == 0\n"
                       "    fig.add_scatter(x=pts[:, 0], y=pts[:, 1], mode='markers', row=1, col=col,\n"
                       "                    marker={'color': nearest, 'colorscale': 'Turbo', 'size': 3, "
                       "'opacity': 0.5})\n"
                       "    fig.add_scatter(x=codes[~dead, 0], y=codes[~dead, 1], mode='markers', row=1, col=col,\n"
                       "                    marker={'symbol': 'x', 'color': 'black', 'size': 7})\n"
                       "    fig.add_scatter(x=codes[dead, 0], y=codes[dead, 1], mode='markers', row=1, col=col,\n"
                       "                    marker={'symbol': 'x', 'color': 'red', 'size': 7})\n"
                       "fig.update_layout(showlegend=False, height=380, title='encoder outputs and codes')\n"
                       "fig.show()\n"
                       "curve = pd.DataFrame({'step': frames.step, 'codes used': frames.used, "
                       "'perplexity': frames.perplexity})\n"
                       "px.line(curve, x='step', y=['codes used', 'perplexity'], title='codes used and perplexity "
                       "during training').show()")]
    return cells + [_exercises([
        "Change `k` to 16 and compare the perplexity at the end with this run's.",
        "With `init='normal'` (codes far from the dots) and no restart, why do far codes never move? Now set "
        "`restart_dead=True`.",
        "Switch `codebook` between 'grad' and 'ema' with `init='data'`: does every code keep its dots?",
        "Set `quantizer='fsq'`: the grid is fixed, so no code can die. What does the encoder have to do instead?",
    ])]


CELLS: dict[str, Callable[[Context], Cells]] = {"train": train, "reconstruct": reconstruct, "codebook": codebook,
                                                "paint": paint, "sample": sample, "playground": playground}
