"""Image quality figures shared by training, evaluation and the app."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]: 10 log10(1 / MSE)."""
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def psnr_per_image(x: Tensor, x_hat: Tensor) -> Tensor:
    """(B, C, H, W) pairs -> (B,) PSNR of each image."""
    mse = (x - x_hat).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)
