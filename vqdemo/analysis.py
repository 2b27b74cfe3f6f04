"""What the pages show, computed from a model: every step of quantising one image, each code decoded
alone, usage over a dataset, 2-D maps of the codebook, coarse-to-fine RQ reconstructions.

Pure functions of (model, images); the app caches their results. No streamlit here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from .explain import quantize_steps
from .metrics import psnr_of, psnr_per_image
from .models import VAE, VQVAE, ModelConfig, build_model
from .quantize import nearest_code


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 1, fill: float = 1.0) -> Tensor:
    """(N, C, H, W) -> one (C, H', W') image of the N tiles in rows of nrow, separated by `pad` pixels."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    out = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), fill)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        out[:, top:top + h, left:left + w] = images[i]
    return out


@dataclass
class QuantizeTrace:
    """Every tensor of one pass through a VQ-VAE, with its shape, for the Learn page."""

    x: Tensor          # (1, C, H, W) the input
    z_e: Tensor        # (1, D, h, w) encoder output
    flat: Tensor       # (h*w, D) one row per latent position, as compared with the codebook
    dist: Tensor       # (h*w, K) squared distance of each position to every code
    codes: Tensor      # (h, w) argmin over K
    z_q: Tensor        # (1, D, h, w) the codes' vectors
    x_hat: Tensor      # (1, C, H, W) decoded


@torch.no_grad()
def trace(model: VQVAE, x: Tensor) -> QuantizeTrace:
    """Run one image (C, H, W) through encoder, distances, argmin, lookup, decoder, keeping everything.

    The distances and codes are depth 1's (at its residual scale); z_q sums every depth, as the decoder sees it.
    """
    z_e = model.encode(x[None])
    steps = quantize_steps(model, z_e)
    z_q = sum(step.chosen for step in steps)
    return QuantizeTrace(x[None], z_e, steps[0].compared, steps[0].dist, steps[0].codes[0], z_q, model.decode(z_q))


@torch.no_grad()
def code_tiles(model: VQVAE, depth: int = 0) -> Tensor:
    """Each code decoded alone, to see what it learned: (K, C, H', W').

    Conv models: the code tiled over the whole latent grid (a 1x1 map would be too small for the stride
    convs); patch models: a 1x1 map, which decodes to exactly one patch.
    """
    vectors = model.code_vectors(depth)  # (K, D)
    if model.config.arch == "patch":
        z = vectors[:, :, None, None]    # (K, D) -> (K, D, 1, 1)
        return model.decoder(z).clamp(0, 1)
    h, w = model.latent_shape
    z = vectors[:, :, None, None].expand(-1, -1, h, w)  # (K, D) -> (K, D, h, w)
    return model.decode(z)


@torch.no_grad()
def encode_all(model: VQVAE, x: Tensor, batch_size: int = 256) -> Tensor:
    """Images (N, C, H, W) -> codes (N, h, w) or (N, depth, h, w), in batches."""
    return torch.cat([model.encode_codes(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def usage(codes: Tensor, k: int) -> Tensor:
    """How often each of the K codes appears in a code tensor: (K,)."""
    return torch.bincount(codes.flatten(), minlength=k)


@torch.no_grad()
def reconstruct(model: VQVAE | VAE, x: Tensor, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """(N, C, H, W) -> reconstructions and per-image PSNR (N,)."""
    model.eval()
    out = torch.cat([model(x[i:i + batch_size]).x_hat for i in range(0, len(x), batch_size)])
    return out, psnr_per_image(x, out)


@torch.no_grad()
def coarse_to_fine(model: VQVAE, x: Tensor) -> list[Tensor]:
    """RQ: reconstructions of x from depth 1, 1..2, ..., 1..N codes: N tensors (B, C, H, W)."""
    codes = model.encode_codes(x)
    return [model.decode_codes(codes, d) for d in range(1, codes.shape[1] + 1)]


def images_using(codes: Tensor, code: int, top: int = 8) -> Tensor:
    """Indices of the images whose code maps (N, h, w) use `code` most, most first."""
    hits = (codes.flatten(1) == code).sum(1)
    order = torch.argsort(hits, descending=True)
    return order[: min(top, int((hits > 0).sum()))]


def pca_2d(points: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, 2) by PCA: instant, so it is what a page shows first."""
    centred = points - points.mean(0, keepdims=True)
    if points.shape[1] < 2:
        return np.concatenate([centred, np.zeros_like(centred)], 1)
    if not np.isfinite(centred).all():
        raise ValueError("these vectors hold inf or NaN (the weights are too large for float32); no PCA map")
    try:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
    except np.linalg.LinAlgError as e:   # "SVD did not converge": values too large or degenerate
        raise ValueError(f"PCA of these vectors failed ({e}); the weights are not those of a trained model") from None
    return centred @ vt[:2].T


def umap_2d(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2) by UMAP (slow to import and first fit: run it off the first paint and cache it)."""
    import umap

    n_neighbors = max(2, min(15, len(points) - 1))
    return umap.UMAP(n_components=2, n_neighbors=n_neighbors, random_state=seed).fit_transform(points)


@torch.no_grad()
def random_code_images(model: VQVAE, n: int, seed: int = 0) -> Tensor:
    """Decode code maps drawn uniformly at random: what generating without a prior looks like."""
    g = torch.Generator().manual_seed(seed)
    h, w = model.latent_shape
    sizes = model.codebook_sizes
    if model.config.kind == "rq":
        codes = torch.stack([torch.randint(k, (n, h, w), generator=g) for k in sizes], 1)
    else:
        codes = torch.randint(sizes[0], (n, h, w), generator=g)
    return model.decode_codes(codes)


@torch.no_grad()
def gaussian_latent_images(model: VQVAE | VAE, n: int, seed: int = 0) -> Tensor:
    """Decode N(0, I) latents (the "random" generation some tutorials show). For a VAE that is its prior; for a VQ-VAE,
    noise lands far from every code and decodes to smudges: the reason a prior over codes is needed."""
    if isinstance(model, VAE):
        return model.sample(n, seed)
    g = torch.Generator().manual_seed(seed)
    h, w = model.latent_shape
    return model.decode(torch.randn(n, model.config.vq.dim, h, w, generator=g))


@dataclass
class InitGeometry:
    """Where a fresh codebook starts relative to a fresh encoder's outputs, before any training step.

    Distances are in latent units, measured from the centre (mean) of the encoder's outputs."""

    init: str                 # "normal", "uniform" or "kmeans"
    code_dist: np.ndarray     # (K,) each initial code's distance from the outputs' centre
    output_dist: np.ndarray   # (N,) each fresh encoder output's distance from that centre
    winners: int              # codes that are the nearest of at least one output at step 0
    k: int
    spread: float             # RMS of output_dist: the radius of the fresh outputs' cloud
    gap: float                # median distance from a code to its nearest output
    bunch: float              # RMS distance of the codes from their own mean: how close together they start


def _centre_dist(flat: Tensor) -> Tensor:
    return (flat - flat.mean(0)).norm(dim=1)


@torch.no_grad()
def init_geometry(cfg: ModelConfig, x: Tensor, init: str, seed: int = 0) -> InitGeometry:
    """Build the model of cfg afresh with codebook init `init` and measure its codes against its encoder's
    outputs on images x (N, C, H, W) at step 0.

    Why a gradient codebook without restarts collapses with N(0, 1) init: a code learns only from the vectors
    that pick it. A fresh encoder's outputs fill a tiny cloud (radius about 0.05 for the default MNIST model);
    trained, they fill a ball a few units wide (`output_radius`). N(0, 1) codes start on a shell of radius about
    sqrt(D), each alone in its own direction, outside both, so the few nearest take every vector and the rest
    never move. U(-1/K, 1/K) codes do not start at the outputs' centre either (about 0.28 from it, six cloud radii
    out, and only a few win at step 0), but they start bunched together (`bunch` about 0.04) well inside the ball
    the outputs grow into: once the outputs spread past the bunch, its codes are the nearest of some of them.
    k-means codes start on the outputs themselves.
    """
    torch.manual_seed(seed)
    cfg = ModelConfig.from_dict({**cfg.to_dict(), "kind": "vq"})
    cfg.vq = replace(cfg.vq, init=init)
    model = build_model(cfg).eval()
    z = model.encode(x)                                      # (N, D, h, w)
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])    # (N*h*w, D)
    q = model.quantizer
    if init == "kmeans":
        q._kmeans_init(flat)
    codebook = q.vectors()                                  # (K, D)
    codes, dist = nearest_code(flat, codebook)
    out_dist = _centre_dist(flat)
    return InitGeometry(init, (codebook - flat.mean(0)).norm(dim=1).numpy(), out_dist.numpy(),
                        int((torch.bincount(codes, minlength=q.k) > 0).sum()), q.k,
                        float(out_dist.pow(2).mean().sqrt()), float(dist.min(0).values.sqrt().median()),
                        float(_centre_dist(codebook).pow(2).mean().sqrt()))


@torch.no_grad()
def output_radius(model: VQVAE, x: Tensor) -> np.ndarray:
    """(N*h*w,) distance of each of a trained encoder's outputs on x from their centre: the ball codes must be in."""
    z = model.encode(x)
    return _centre_dist(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])).numpy()


@dataclass
class ResidualChange:
    """RQ: how often adding a depth makes things worse, measured on a set of images."""

    grew: list[float]       # per depth d >= 2: fraction of latent vectors whose residual is longer after depth d
    worse_images: list[float]  # per depth d >= 2: fraction of images whose PSNR drops when depth d is added
    worst_drop_db: list[float]  # per depth d >= 2: the largest such drop, in dB (0 when none)


@torch.no_grad()
def residual_change(model: VQVAE, x: Tensor, batch_size: int = 256) -> ResidualChange:
    """Measure, rather than assume, that each RQ depth shrinks the residual.

    Depth d picks the code nearest to the residual, but no code need be nearer to it than 0 is, so for some
    vectors |r_d| > |r_{d-1}|; and a smaller latent error does not always mean a better decoded image.
    """
    grew_n: list[float] = []
    worse_n: list[float] = []
    worst: list[float] = []
    n_vec = 0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        steps = quantize_steps(model, model.encode(xb))
        psnrs = [psnr_per_image(xb, model.decode(sum(s.chosen for s in steps[:d]))) for d in range(1, len(steps) + 1)]
        for d in range(1, len(steps)):
            before = steps[d].residual.norm(dim=1)               # (B, h, w) |r_{d-1}|
            after = (steps[d].residual - steps[d].chosen).norm(dim=1)
            drop = psnrs[d - 1] - psnrs[d]
            if len(grew_n) < d:
                grew_n.append(0.0), worse_n.append(0.0), worst.append(0.0)
            grew_n[d - 1] += float((after > before).sum())
            worse_n[d - 1] += float((drop > 0).sum())
            worst[d - 1] = max(worst[d - 1], float(drop.max().clamp_min(0)))
        n_vec += steps[0].codes.numel()
    return ResidualChange([g / max(n_vec, 1) for g in grew_n], [w / len(x) for w in worse_n], worst)


def rate_bits(model: VQVAE | VAE, stats: dict[str, float]) -> float:
    """Bits per image the bottleneck can carry, to put beside PSNR whenever models are compared.

    VQ / RQ: every cell sends one code id per depth, log2(K_d) bits (an upper bound; a prior compresses it).
    VAE: its KL to N(0, I), the rate of the bits-back code, from the validation figure `kl` (nats per pixel).
    """
    if isinstance(model, VAE):
        c, s = model.config.channels, model.config.image_size
        return float(stats.get("kl", float("nan"))) * c * s * s / math.log(2)
    h, w = model.latent_shape
    return h * w * sum(math.log2(k) for k in model.codebook_sizes)


def usage_note(upkeep: dict, depth_one: bool = False) -> str:
    """The running-usage chart's caption, from what the run's own quantizer measured (`upkeep()` of the model):
    its test of "dead" and what its dead codes did, never another quantizer's settings."""
    where = " at depth 1" if depth_one else ""
    below = f"{upkeep['dead_below']:g}"
    if upkeep["restart"] is None:   # FSQ: a fixed grid
        return (f"Each bar is one grid point's running usage{where} (vectors per step, over about the last 100 "
                f"steps); red: unused, below {below}. FSQ has no restarts and needs none: its grid points are fixed, "
                "so an unused one is picked again as soon as an encoder output rounds to it.")
    head = (f"Each bar is one code's running usage{where} (vectors per step, over about the last 100 steps); red: "
            f"dead, below {below}, the quantizer's own test. ")
    if upkeep["restart"]:
        return head + (f"Restarts are on: so far {upkeep['restarts']:,} times a dead code was moved onto an encoder "
                       "output of the batch.")
    return head + (f"No restarts in this run: so far codes fell below {below} {upkeep['deaths']:,} times and came "
                   f"back above it on their own {upkeep['comebacks']:,} times (a dead code returns when the encoder's "
                   "outputs move near it).")


@dataclass
class PaidRate:
    """The bits per image a model actually pays, and how they are counted, to put beside its PSNR."""

    bits: float          # VQ / RQ / FSQ: its prior's code length when it has one, else the uniform bound; VAE: KL
    how: str             # "prior", "uniform bound" or "KL"
    bound: float | None  # codes: the uniform bound h x w x log2 K (None for a VAE)


def paid_rate(model: VQVAE | VAE, stats: dict[str, float], prior_nll: dict | None) -> PaidRate:
    """Rates measured the same way for every model: a code map costs what the model's own prior needs to code it
    (its validation NLL in bits per image), with the uniform bound beside it; a VAE costs its KL (bits-back), which
    pays for a posterior sample, so its PSNR belongs to a sample too (`posterior_sample_psnr`)."""
    bound = rate_bits(model, stats)
    if isinstance(model, VAE):
        return PaidRate(bound, "KL", None)
    if prior_nll and math.isfinite(prior_nll.get("bits_per_image", float("nan"))):
        return PaidRate(float(prior_nll["bits_per_image"]), "prior", bound)
    return PaidRate(bound, "uniform bound", bound)


def rate_line(label: str, psnr: float, rate: PaidRate, sample_psnr: float | None = None) -> str:
    """One model's quality at the rate it pays, for a comparison caption: a VAE's PSNR from a posterior sample
    (what its KL pays for; the mean's beside it), a code model's at its prior's bits (the uniform bound beside)."""
    if rate.how == "KL":
        shown = f"{sample_psnr:.2f} dB from a posterior sample ({psnr:.2f} at the mean)" if sample_psnr else \
            f"{psnr:.2f} dB at the posterior mean"
        return f"{label}: {shown} at {rate.bits:.0f} bits (its KL)"
    if rate.how == "prior":
        return (f"{label}: {psnr:.2f} dB at {rate.bits:.0f} bits (its prior's code length; uniform bound "
                f"{rate.bound:.0f})")
    return f"{label}: {psnr:.2f} dB at most {rate.bits:.0f} bits (the uniform bound; no prior to measure it)"


@torch.no_grad()
def posterior_sample_psnr(model: VAE, x: Tensor, seed: int = 0, batch_size: int = 256) -> float:
    """PSNR of a VAE's reconstructions from one posterior sample z ~ N(mu, sigma^2) per image, the latent its KL
    pays for (the usual reported figure decodes the mean mu, which the rate does not pay for)."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    outs = []
    for i in range(0, len(x), batch_size):
        mu, logvar = model.encode(x[i:i + batch_size]).chunk(2, dim=1)   # (B, 2D, h, w) -> 2 x (B, D, h, w)
        noise = torch.randn(mu.shape, generator=g).to(mu.device)
        outs.append(model.decode(mu + noise * torch.exp(0.5 * logvar.clamp(-10, 10))))
    return psnr_of(x, torch.cat(outs))


WEAK_PRIOR = 0.20  # a prior that saves less than this share of the uniform code length has learned little


def sample_note(nll: dict | None, uniform_bits: float, temperature: float) -> str:
    """What can honestly be said of prior samples, from the prior's validation NLL (bits per image) and the
    sampling temperature; never "they look like the data" unless the numbers say the prior learned something."""
    if not nll or not uniform_bits:
        return "This prior records no validation NLL, so nothing is claimed about its samples."
    saved = 1 - nll["bits_per_image"] / uniform_bits
    if saved < WEAK_PRIOR:
        return (f"Careful: this prior describes an image in only {saved:.0%} fewer bits than uniform codes: it has "
                "learned little, so its samples are close to random codes. Train it longer.")
    note = (f"The prior describes an image in {saved:.0%} fewer bits than uniformly random codes: it has learned which "
            "codes go together, which the random codes beside it lack.")
    if temperature > 1.05:
        note += (f" At temperature {temperature:g} it samples from a flattened distribution, drifting towards "
                 "random codes.")
    elif temperature < 0.95:
        note += f" At temperature {temperature:g} it favours its most likely codes: cleaner, less varied samples."
    return note



def guidance_note(guidance: float) -> str:
    """What classifier-free guidance (Ho & Salimans 2022) does at this setting, for the Sample page's caption.

    The prior was trained with some labels replaced by "no class", so one network gives both logits; each code is
    drawn from logits_none + w * (logits_class - logits_none).
    """
    paper = "Classifier-free guidance (Ho & Salimans 2022): the prior was trained with some labels hidden, so it " \
            "also knows the codes' odds with no class."
    if guidance == 0:
        return f"{paper} At guidance 0 every code is drawn from those 'no class' odds: the requested class is ignored."
    if guidance == 1:
        return f"{paper} At guidance 1 it is not used: the class-conditional prior exactly as trained."
    mix = f"no-class logits + {guidance:g} x (class logits - no-class logits)"
    if guidance < 1:
        return f"{paper} At guidance {guidance:g} each code is drawn from {mix}: a weaker pull towards the class."
    return (f"{paper} At guidance {guidance:g} each code is drawn from {mix}: codes that the class makes likelier "
            "than no class does are favoured further, trading variety for samples typical of the class.")


def perplexity_dip_note(rows: list[dict], k: float | None) -> str:
    """What an early perplexity dip means for this run, read off its batches: a healthy run often drops to 1-3
    codes in its first 10-50 steps while the encoder's outputs spread out; collapse is a dip that stays."""
    ppl = [(r["step"], r["perplexity"]) for r in rows
           if r.get("type") == "train" and isinstance(r.get("perplexity"), (int, float))]
    early = [(s, p) for s, p in ppl if s <= 50]
    if not early or not k or k < 8:
        return ""
    step, low = min(early, key=lambda sp: sp[1])
    if low >= 4:
        return ""
    last_step, last = ppl[-1]
    if last_step <= 100:
        return (f" It dipped to {low:.1f} at step {step}: healthy runs often do in their first 10-50 steps, while the "
                "encoder's outputs spread out. Collapse is a dip that stays; watch the next hundred steps.")
    if last >= 3 * low and last >= 4:
        return (f" It dipped to {low:.1f} at step {step} and recovered to {last:.1f}: the first steps' dip, "
                "not collapse.")
    return f" It fell to {low:.1f} at step {step} and is still {last:.1f} at step {last_step:,}: that is collapse."
