"""Finite scalar quantisation (FSQ, Mentzer et al. 2023): a codebook nobody learns.

Each latent channel is squashed into a bounded range and rounded to one of a few levels, say 8, 6 and 5: the
codes are the points of that fixed grid, 8 x 6 x 5 = 240 of them, an implicit codebook. There is no codebook
loss, no commitment loss, no EMA and no dead-code restart: every grid point exists from the first step, so the
codebook cannot collapse by drifting away from the data (a code can still go unused). Rounding has no gradient,
so the straight-through estimator copies the gradient past it, as in VQ-VAE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from .quantize import USAGE_DECAY, Quantized, Step, nearest_code, perplexity_of, rows
from .settings import Checked, setting


@dataclass
class FSQConfig(Checked):
    levels: list[int] = setting(factory=lambda: [8, 6, 5], lo=2, hi=64, items=8,
                                help="FSQ: levels per latent channel, e.g. 8,6,5 "
                                     "(240 codes; Mentzer et al.'s 2^8 choice)")

    def rules(self) -> None:
        if math.prod(self.levels) > 65536:
            raise ValueError(f"FSQ levels {self.levels} make {math.prod(self.levels):,} codes; at most 65,536")

    @property
    def k(self) -> int:
        return math.prod(self.levels)


class FiniteScalarQuantizer(nn.Module):
    """Round each of len(levels) channels of z_e (B, L, h, w) to its grid; code id = the mixed-radix number."""

    def __init__(self, cfg: FSQConfig, eps: float = 1e-3):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        levels = torch.tensor(cfg.levels, dtype=torch.float32)
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("basis", torch.cumprod(torch.tensor([1] + cfg.levels[:-1]), 0), persistent=False)
        self.register_buffer("half_width", torch.div(levels, 2, rounding_mode="floor"), persistent=False)
        half = (levels - 1) * (1 + eps) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)  # even counts: levels sit at half-integers, shifted to integers
        self.register_buffer("half_range", half, persistent=False)
        self.register_buffer("offset", offset, persistent=False)
        self.register_buffer("shift", torch.atanh(offset / half), persistent=False)
        self.register_buffer("usage", torch.zeros(cfg.k))  # running vectors-per-step of each code, for the live view

    @property
    def k(self) -> int:
        return self.cfg.k

    def _per_channel(self, t: Tensor) -> Tensor:
        return t[None, :, None, None]  # (L,) -> (1, L, 1, 1)

    def bound(self, z: Tensor) -> Tensor:
        """(B, L, h, w) -> the same, channel i squashed into (-levels_i / 2, levels_i / 2) so rounding gives
        levels_i values."""
        c = self._per_channel
        return torch.tanh(z + c(self.shift)) * c(self.half_range) - c(self.offset)

    def _round(self, z_e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z_e (B, L, h, w) -> bounded, rounded (both (B, L, h, w)) and the grid point's code id (B, h, w)."""
        bounded = self.bound(z_e)
        rounded = bounded.round()                               # integers in [-(n // 2), (n - 1) // 2] per channel
        digits = (rounded + self._per_channel(self.half_width)).long()  # (B, L, h, w) in [0, n)
        return bounded, rounded, (digits * self._per_channel(self.basis)).sum(1)  # (B, L, h, w) -> (B, h, w)

    def depth_steps(self, z_e: Tensor) -> list[Step]:
        """The rounding as a nearest-code search, for showing: one step, whose distances are to every grid point in
        the decoder's units (rounding each channel is the nearest grid point). Changes nothing."""
        bounded, _, codes = self._round(z_e)
        flat = rows(bounded / self._per_channel(self.half_width))  # (B*h*w, L)
        _, dist = nearest_code(flat, self.vectors())
        picked = self.vectors()[codes.flatten()]
        return [Step(z_e, flat, codes, dist, picked, self.lookup(codes))]

    def forward(self, z_e: Tensor) -> Quantized:
        bounded, rounded, codes = self._round(z_e)
        q = bounded + (rounded - bounded).detach()              # straight-through: forward rounds, backward copies
        z_q = q / self._per_channel(self.half_width)            # (B, L, h, w) in [-1, 1]
        counts = torch.bincount(codes.flatten(), minlength=self.k)
        if self.training:
            with torch.no_grad():
                self.usage.mul_(USAGE_DECAY).add_(counts.float(), alpha=1 - USAGE_DECAY)
        zero = z_e.new_zeros(())
        return Quantized(z_q=z_q, codes=codes, loss=zero, codebook_loss=zero, commit_loss=zero, counts=counts,
                         perplexity=perplexity_of(counts))

    def digits(self, codes: Tensor) -> Tensor:
        """Code ids (...) -> per-channel level indices (..., L)."""
        return torch.div(codes[..., None], self.basis, rounding_mode="floor") % self.levels.long()

    def vectors(self) -> Tensor:
        """The implicit codebook: every grid point, (K, L), in the decoder's units."""
        return (self.digits(torch.arange(self.k, device=self.levels.device)) - self.half_width) / self.half_width

    def lookup(self, codes: Tensor) -> Tensor:
        """Code ids (B, h, w) -> grid points (B, L, h, w)."""
        return self.vectors()[codes].permute(0, 3, 1, 2)
