"""What the pages show, computed from a model: every step of quantising one image, each code decoded
alone, usage over a dataset, 2-D maps of the codebook, coarse-to-fine RQ reconstructions.

Pure functions of (model, images); the app caches their results. No streamlit here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .explain import quantize_steps
from .metrics import psnr_per_image
from .models import VAE, VQVAE


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 1, fill: float = 1.0) -> Tensor:
    """(N, C, H, W) -> one (C, H', W') image of the N tiles in rows of nrow, separated by `pad` pixels."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    out = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), fill)
    for i in range(n):
        r, col = divmod(i, nrow)
        out[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = images[i]
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
    """Each code decoded alone (seed 004's trick): (K, C, H', W').

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
    """Decode N(0, I) latents (seed 003's "random" generation). For a VAE that is its prior; for a VQ-VAE,
    noise lands far from every code and decodes to smudges: the reason a prior over codes is needed."""
    if isinstance(model, VAE):
        return model.sample(n, seed)
    g = torch.Generator().manual_seed(seed)
    h, w = model.latent_shape
    return model.decode(torch.randn(n, model.config.vq.dim, h, w, generator=g))
