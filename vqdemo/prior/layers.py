"""The gated PixelCNN layers both priors are built from (van den Oord et al. 2016, "Conditional Image Generation
with PixelCNN Decoders"), with the incremental form that sampling steps through one position at a time."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .config import PriorConfig


class Conv(nn.Conv2d):
    """Unpadded ("valid") convolution, optionally with a fixed 0/1 mask multiplied into its weights.

    When the input is exactly one kernel window (one output position, as in incremental sampling) it is
    computed as a matmul: the same numbers, several times faster than a CPU convolution call that small.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], mask: Tensor | None = None):
        super().__init__(in_channels, out_channels, kernel_size)
        self.register_buffer("mask", None if mask is None else mask.view(1, 1, *kernel_size), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight if self.mask is None else self.weight * self.mask
        if x.shape[-2:] == weight.shape[-2:]:
            return F.linear(x.flatten(1), weight.flatten(1), self.bias)[:, :, None, None]  # (B, C_out, 1, 1)
        return F.conv2d(x, weight, self.bias)


def gate(x: Tensor) -> Tensor:
    """Gated activation tanh(a) * sigmoid(b) over the two channel halves: (B, 2C, ...) -> (B, C, ...)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated PixelCNN layer with a vertical and a horizontal stack (van den Oord et al. 2016, fig. 2).

    With r = kernel // 2 the vertical conv covers rows i-r..i and columns j-r..j+r, the horizontal conv
    row i and columns j-r..j. Mask type A (first layer only) drops the current row from the vertical
    kernel and the current column from the horizontal kernel, so no output sees the code it predicts.
    That mask is the "shift down" of the vertical stack: its features at row i depend only on rows < i,
    which lets them feed the horizontal stack at every column of row i, including those to the right
    of j. Hence no blind spot: (i, j) sees every position above it and every position to its left.
    """

    def __init__(self, channels: int, kernel: int, mask_a: bool, num_classes: int | None, dropout: float):
        super().__init__()
        r = kernel // 2
        self.r, self.residual = r, not mask_a  # type A must not pass the current code through
        v_mask, h_mask = torch.ones(r + 1, kernel), torch.ones(1, r + 1)
        if mask_a:
            v_mask[-1] = 0  # current row
            h_mask[:, -1] = 0  # current column
        self.v_conv = Conv(channels, 2 * channels, (r + 1, kernel), v_mask)
        self.h_conv = Conv(channels, 2 * channels, (1, r + 1), h_mask)
        self.v_to_h = Conv(2 * channels, 2 * channels, (1, 1))  # the vertical -> horizontal link
        self.h_out = Conv(channels, channels, (1, 1))
        self.drop = nn.Dropout(dropout)
        self.class_bias = nn.Embedding(num_classes, 2 * channels) if num_classes else None

    def cond(self, labels: Tensor | None) -> Tensor | float:
        """Per-class bias added inside both gates: (B,) -> (B, 2C, 1, 1); 0 when unconditional."""
        if self.class_bias is None:
            return 0.0
        return self.class_bias(labels)[:, :, None, None]

    def vertical(self, v_pad: Tensor, cond: Tensor | float) -> tuple[Tensor, Tensor]:
        """v_pad (B, C, H+r, W+2r), padded top/left/right -> v_out (B, C, H, W), link (B, 2C, H, W)."""
        pre = self.v_conv(v_pad)  # (B, 2C, H, W)
        return gate(pre + cond), self.v_to_h(pre)

    def horizontal(self, h_pad: Tensor, h_in: Tensor, link: Tensor, cond: Tensor | float) -> Tensor:
        """h_pad (B, C, H, W+r), padded left; h_in (B, C, H, W) unpadded; link (B, 2C, H, W) -> (B, C, H, W)."""
        out = self.h_out(self.drop(gate(self.h_conv(h_pad) + link + cond)))
        return out + h_in if self.residual else out

    def forward(self, v: Tensor, h: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        r, cond = self.r, self.cond(labels)
        v_out, link = self.vertical(F.pad(v, (r, r, r, 0)), cond)
        return v_out, self.horizontal(F.pad(h, (r, 0, 0, 0)), h, link, cond)


@dataclass
class _StackState:
    """Padded per-layer inputs kept during incremental sampling (one entry per layer, plus the output)."""

    v_in: list[Tensor]  # layer l's vertical input, (n, C, H+r, W+2r); v_in[0] holds the code embeddings
    h_in: list[Tensor]  # layer l's horizontal input for the current row, (n, C, 1, W+r)
    links: list[Tensor]  # vertical -> horizontal link of the current row, (n, 2C, 1, W)
    conds: list[Tensor | float]


class GatedStack(nn.Module):
    """Gated layers over an embedded code map: (B, C, H, W) -> (B, C, H, W), where the output at (i, j)
    depends only on inputs at positions before (i, j) in raster order."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.channels, self.r = cfg.channels, cfg.kernel // 2
        self.layers = nn.ModuleList(
            GatedLayer(cfg.channels, cfg.kernel, i == 0, cfg.label_count, cfg.dropout) for i in range(cfg.layers)
        )

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, labels)
        return h

    # Incremental evaluation for sampling: same weights and functions as forward, computed only where new.
    def start(self, n: int, height: int, width: int, labels: Tensor | None) -> _StackState:
        r, c, z = self.r, self.channels, torch.zeros
        depth = len(self.layers)
        return _StackState(
            v_in=[z(n, c, height + r, width + 2 * r) for _ in range(depth)],
            h_in=[z(n, c, 1, width + r) for _ in range(depth + 1)],
            links=[z(0)] * depth,
            conds=[layer.cond(labels) for layer in self.layers],
        )

    def begin_row(self, s: _StackState, i: int) -> None:
        """Vertical stack of row i for every layer (it only needs rows < i, already written)."""
        r = self.r
        for k, layer in enumerate(self.layers):
            v_out, s.links[k] = layer.vertical(s.v_in[k][:, :, i : i + r + 1], s.conds[k])  # (n, C, 1, W)
            if k + 1 < len(self.layers):
                s.v_in[k + 1][:, :, r + i : r + i + 1, r:-r] = v_out
        for h in s.h_in:
            h.zero_()

    def step(self, s: _StackState, j: int) -> Tensor:
        """Horizontal stack at column j of the current row -> features (n, C) that predict the code there."""
        r = self.r
        for k, layer in enumerate(self.layers):
            h_pad = s.h_in[k][:, :, :, j : j + r + 1]  # (n, C, 1, r+1)
            h_in = s.h_in[k][:, :, :, r + j : r + j + 1]  # (n, C, 1, 1)
            link = s.links[k][..., j : j + 1]  # (n, 2C, 1, 1)
            s.h_in[k + 1][:, :, :, r + j : r + j + 1] = layer.horizontal(h_pad, h_in, link, s.conds[k])
        return s.h_in[-1][:, :, 0, r + j]

    def write(self, s: _StackState, i: int, j: int, x: Tensor) -> None:
        """Record the embedding (n, C) of the codes just sampled at (i, j)."""
        s.v_in[0][:, :, self.r + i, self.r + j] = x
        s.h_in[0][:, :, 0, self.r + j] = x
