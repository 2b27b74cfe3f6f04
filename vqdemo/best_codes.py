"""The best code map for one image: what the encoder's nearest-code choice leaves on the table.

A VQ-VAE encodes an image by taking, cell by cell, the code nearest to the encoder's output. That is the best
code in latent space, not necessarily the best for the decoded image: the decoder mixes neighbouring cells, so a
different code in one cell can give a smaller pixel error. This module searches for such a code map by greedy
coordinate descent: visit the cells in a seeded random order, and at each cell decode all K codes at once (one
decoder batch with only that cell changed), keep the code with the smallest pixel error; repeat sweeps until one
changes nothing, or the sweep or time budget ends. Every step can only lower the error, so the result is at least
as good as the encoder's codes, at the same number of bits (the same h x w code ids).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .metrics import psnr
from .models import VQVAE
from .quantize import ResidualQuantizer
from .settings import Checked, setting


@dataclass
class SearchConfig(Checked):
    """How long the search may run: whichever budget ends first."""

    sweeps: int = setting(4, lo=1, hi=100, help="passes over every cell (stops early when a pass changes nothing)")
    seconds: float = setting(20.0, lo=0, hi=600, lo_open=True, help="time budget in seconds")
    seed: int = setting(0, lo=0, hi=2**63 - 1, help="seeds the order in which cells are visited")


@dataclass
class BestCodes:
    """The encoder's code map and the searched one for one image, with their PSNRs (of that image)."""

    encoder_codes: Tensor   # (N, h, w) code ids the encoder picks, one map per depth (N = 1 for VQ and FSQ)
    codes: Tensor           # (N, h, w) the searched map
    encoder_psnr: float
    psnr: float
    image: Tensor           # (C, H, W) decoded from the searched map
    encoder_image: Tensor   # (C, H, W) decoded from the encoder's map
    sweeps: int             # sweeps run
    seconds: float
    history: list[float] = field(default_factory=list)   # PSNR after each sweep

    @property
    def changed(self) -> Tensor:
        """(h, w) cells whose code differs from the encoder's at any depth."""
        return (self.codes != self.encoder_codes).any(0)


def _decode(model: VQVAE, stack: Tensor) -> Tensor:
    """Code maps (B, N, h, w) -> images (B, C, H, W); a VQ or FSQ model takes its single map as (B, h, w)."""
    return model.decode_codes(stack if isinstance(model.quantizer, ResidualQuantizer) else stack[:, 0])


@torch.no_grad()
def search(model: VQVAE, x: Tensor, cfg: SearchConfig | None = None) -> BestCodes:
    """Greedy coordinate descent over the cells of x's code map (x: (C, H, W) in [0, 1]) to minimise the pixel
    MSE of the decoded image. Each cell tries all K codes of its depth in one decoder batch of K images."""
    cfg = cfg or SearchConfig()
    cfg.validate()
    model.eval()
    start = time.monotonic()
    codes = model.encode_codes(x[None])
    stack = (codes if codes.dim() == 4 else codes[:, None]).clone()       # (1, N, h, w)
    encoder = stack.clone()
    _, n, h, w = stack.shape

    def error(images: Tensor) -> Tensor:
        return (images - x[None]).pow(2).flatten(1).mean(1)                 # (B,) pixel MSE of each image

    best = float(error(_decode(model, stack))[0])
    first = best
    g = torch.Generator().manual_seed(cfg.seed)
    history: list[float] = []
    sweeps = 0
    while sweeps < cfg.sweeps and time.monotonic() - start < cfg.seconds:
        sweeps += 1
        moved = False
        for cell in torch.randperm(n * h * w, generator=g).tolist():
            d, i, j = cell // (h * w), (cell // w) % h, cell % w
            k = model.codebook_sizes[d]
            trial = stack.repeat(k, 1, 1, 1)                                 # (K, N, h, w), one candidate per code
            trial[:, d, i, j] = torch.arange(k)
            errs = error(_decode(model, trial))                              # (K,)
            pick = int(errs.argmin())
            if float(errs[pick]) < best and pick != int(stack[0, d, i, j]):
                stack[0, d, i, j], best, moved = pick, float(errs[pick]), True
            if time.monotonic() - start >= cfg.seconds:
                break
        history.append(psnr(best))
        if not moved:
            break
    return BestCodes(encoder[0], stack[0], psnr(first), psnr(best), _decode(model, stack)[0],
                     _decode(model, encoder)[0], sweeps, time.monotonic() - start, history)
