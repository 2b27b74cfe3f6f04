"""Encoders and decoders: the conv stack with residual blocks (van den Oord et al. 2017) and a patch MLP."""

from __future__ import annotations

import math

import torch.nn as nn
from torch import Tensor


class ResidualBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))): lets the stack deepen without losing the signal."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def residual_stack(channels: int, hidden: int, n: int) -> nn.Sequential:
    return nn.Sequential(*[ResidualBlock(channels, hidden) for _ in range(n)], nn.ReLU())


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> (B, D, H/f, W/f): log2(f) stride-2 4x4 convs, a 3x3 conv, residual blocks, 1x1 to D."""

    def __init__(self, in_channels: int, hidden: int, res_blocks: int, res_hidden: int, downsample: int, out_dim: int):
        super().__init__()
        n_down = int(math.log2(downsample))
        layers: list[nn.Module] = []
        ch = in_channels
        for i in range(n_down):
            nxt = hidden // 2 if i < n_down - 1 else hidden
            layers += [nn.Conv2d(ch, nxt, 4, stride=2, padding=1), nn.ReLU()]
            ch = nxt
        layers += [nn.Conv2d(ch, hidden, 3, padding=1), residual_stack(hidden, res_hidden, res_blocks)]
        layers += [nn.Conv2d(hidden, out_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """(B, D, h, w) -> (B, C, h*f, w*f) logits: the encoder mirrored with transposed convs."""

    def __init__(self, out_channels: int, hidden: int, res_blocks: int, res_hidden: int, downsample: int, in_dim: int):
        super().__init__()
        n_up = int(math.log2(downsample))
        layers: list[nn.Module] = [nn.Conv2d(in_dim, hidden, 3, padding=1),
                                   residual_stack(hidden, res_hidden, res_blocks)]
        ch = hidden
        for i in range(n_up):
            last = i == n_up - 1
            nxt = out_channels if last else hidden // 2
            layers += [nn.ConvTranspose2d(ch, nxt, 4, stride=2, padding=1)]
            if not last:
                layers += [nn.ReLU()]
            ch = nxt
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class PatchEncoder(nn.Module):
    """A patch MLP: Conv2d with kernel = stride = patch, ReLU, then a per-position linear layer.

    No spatial prior at all: each patch is encoded on its own, which is why its codes look like patches.
    """

    def __init__(self, in_channels: int, hidden: int, patch: int, out_dim: int):
        super().__init__()
        self.patchify = nn.Conv2d(in_channels, hidden, patch, stride=patch)
        self.proj = nn.Conv2d(hidden, out_dim, 1)  # a Linear over channels at every position

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.patchify(x).relu())  # (B, C, H, W) -> (B, D, H/p, W/p)


class PatchDecoder(nn.Module):
    """The mirror: ConvTranspose2d with kernel = stride = patch, ReLU, per-pixel linear to C logits."""

    def __init__(self, out_channels: int, hidden: int, patch: int, in_dim: int):
        super().__init__()
        self.unpatchify = nn.ConvTranspose2d(in_dim, hidden, patch, stride=patch)
        self.proj = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, z: Tensor) -> Tensor:
        return self.proj(self.unpatchify(z).relu())  # (B, D, h, w) -> (B, C, h*p, w*p)
