"""The numbers the Learn, Reconstruct and Codebook pages put on screen, beyond `analysis`.

Each function makes one idea checkable with this model's own tensors: the expanded distance next to the
brute-force one, quantisation depth by depth (RQ-VAE, Lee et al. 2022), where the straight-through gradient
goes in both forms (van den Oord et al. 2017 and the "both" variant), the loss terms of one image.
No streamlit here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .fsq import FiniteScalarQuantizer
from .models import VQVAE
from .quantize import QuantizerConfig, ResidualQuantizer, Step, VectorQuantizer, nearest_code

# The one line of PyTorch the Learn page shows for each step. tests/test_explain.py runs every line on a real model's
# tensors and compares it with what the library computes, so a line that drifts from the computation fails there.
DISTANCE_CODE = "dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ e.T + e.pow(2).sum(1)"  # x: (N, D) rows, e: (K, D)
RECON_CODE = "recon = F.mse_loss(x_hat, x) / data_variance"
CODEBOOK_CODE = "codebook = F.mse_loss(e, z_e.detach())"
COMMIT_CODE = "commit = beta * F.mse_loss(z_e, e.detach())"
STE_CODE = {"paper": "z_q = z_e + (z_q - z_e).detach()", "both": "z_q = z_q + (z_e - z_e.detach())"}
RQ_LOSS_CODE = ("loss = recon + sum(F.mse_loss(q, r.detach()) + beta * F.mse_loss(r, q.detach())"
                " for r, q in zip(residuals, chosen))")


@dataclass
class DistanceParts:
    """|x - e|^2 two ways: expanded into |x|^2 - 2 x.e + |e|^2 (one matmul for all codes) and directly."""

    x_sq: float
    cross: float      # -2 x.e
    e_sq: float
    expanded: float   # x_sq + cross + e_sq
    direct: float     # sum((x - e)^2)


def distance_parts(x: Tensor, e: Tensor) -> DistanceParts:
    """x, e: (D,) vectors."""
    x, e = x.double(), e.double()
    x_sq, cross, e_sq = float(x @ x), float(-2 * x @ e), float(e @ e)
    return DistanceParts(x_sq, cross, e_sq, x_sq + cross + e_sq, float((x - e).pow(2).sum()))


def _layers(model: VQVAE) -> list[tuple[VectorQuantizer, Tensor]]:
    q = model.quantizer
    if isinstance(q, ResidualQuantizer):
        return [(q.layer(d), q.scales[d]) for d in range(q.trained_depth)]
    return [(q, torch.ones(()))]


@torch.no_grad()
def quantize_steps(model: VQVAE, z_e: Tensor) -> list[Step]:
    """Quantise encoder outputs (B, D, h, w) depth by depth, keeping what each depth saw and picked.

    The quantiser's own search (`depth_steps`, the one `forward` runs), so its codes equal `model.encode_codes` and the
    sum of `chosen` equals the model's z_q. Nothing is updated, whatever the model's mode.
    """
    return model.quantizer.depth_steps(z_e.detach())


@dataclass
class CellDepth:
    """One latent cell at one depth, for the Learn page's residual table."""

    depth: int
    code: int
    distance: float        # squared distance to the picked code
    residual_norm: float   # |r_{d-1}| before this depth
    left_norm: float       # |r_d| after subtracting the picked code


def cell_steps(steps: list[Step], row: int, col: int, image: int = 0) -> list[CellDepth]:
    """Follow one cell (row, col) of one image through every depth of `quantize_steps`."""
    out = []
    for i, s in enumerate(steps):
        _, _, h, w = s.residual.shape
        flat_index = image * h * w + row * w + col
        code = int(s.codes[image, row, col])
        before = s.residual[image, :, row, col]
        after = before - s.chosen[image, :, row, col]
        out.append(CellDepth(i + 1, code, float(s.dist[flat_index, code]), float(before.norm()), float(after.norm())))
    return out


@torch.no_grad()
def loss_terms(model: VQVAE, x: Tensor) -> dict[str, float]:
    """The training loss terms on a batch (B, C, H, W), in eval mode (nothing is updated)."""
    was_training = model.training
    model.eval()
    out = model(x)
    model.train(was_training)
    terms = {name: float(t) for name, t in out.terms.items()}
    terms["loss"] = float(out.loss)
    return terms


def ste_gradients(seed: int = 0, dim: int = 4) -> dict[str, dict[str, float]]:
    """Where the decoder's gradient goes under each straight-through form, on a toy vector.

    The decoder input equals e (the code) in both forms. The paper's z_e + sg(e - z_e) sends the
    gradient to the encoder output only; the "both" form e + (z_e - sg(z_e)) sends it to z_e and e,
    so the codebook also learns from the reconstruction loss.
    """
    g = torch.Generator().manual_seed(seed)
    z0, e0, w = (torch.randn(dim, generator=g) for _ in range(3))
    out = {}
    for name, form in (("paper", lambda z, e: z + (e - z).detach()), ("both", lambda z, e: e + (z - z.detach()))):
        z, e = z0.clone().requires_grad_(True), e0.clone().requires_grad_(True)
        q = form(z, e)
        (q * w).sum().backward()  # a stand-in decoder loss, linear in its input
        out[name] = {
            "forward_error": float((q.detach() - e0).abs().max()),
            "grad_z_e": float(z.grad.norm()) if z.grad is not None else 0.0,
            "grad_e": float(e.grad.norm()) if e.grad is not None else 0.0,
        }
    return out


def ste_summary(cfg: QuantizerConfig) -> str:
    """What the straight-through estimator of a model with this quantiser config actually does, in one sentence."""
    if cfg.codebook == "ema":
        return ("This model's codebook is updated by EMA (Razavi et al. 2019), so no gradient reaches it: its encoder "
                "learns through the paper's form z_e + sg(z_q - z_e), and the codebook by running averages.")
    if cfg.ste == "both":
        return ("This model learns its codebook by gradient and uses z_q + (z_e - sg(z_e)): its codebook learns from "
                "the codebook loss and from the decoder's gradient.")
    return ("This model learns its codebook by gradient and uses the paper's form z_e + sg(z_q - z_e): its codebook "
            "learns from the codebook loss alone.")


@dataclass
class OffsetCheck:
    """The expanded distance on vectors sharing a large offset, float32, against exact float64 distances."""

    offset: float
    naive_wrong: float     # fraction of argmins the plain expansion gets wrong
    naive_negative: float  # fraction of plain expanded distances below 0
    wrong: float           # fraction `nearest_code` (centred first) gets wrong


def offset_check(offset: float = 1000.0, n: int = 512, k: int = 64, dim: int = 16, seed: int = 0) -> OffsetCheck:
    """Why `nearest_code` centres before expanding: latents and codes near `offset` +- 1, in float32."""
    g = torch.Generator().manual_seed(seed)
    x = offset + torch.randn(n, dim, generator=g)
    e = offset + torch.randn(k, dim, generator=g)
    exact = torch.cdist(x.double(), e.double()).argmin(1)
    naive = x.pow(2).sum(1, keepdim=True) - 2 * x @ e.t() + e.pow(2).sum(1)[None, :]
    codes, _ = nearest_code(x, e)
    return OffsetCheck(offset, float((naive.argmin(1) != exact).float().mean()), float((naive < 0).float().mean()),
                       float((codes != exact).float().mean()))


@dataclass
class FSQCell:
    """One latent cell through finite scalar quantisation, channel by channel."""

    z_e: list[float]       # the encoder's numbers
    bounded: list[float]   # squashed into each channel's range
    level: list[int]       # rounded: which of the channel's levels (0 .. levels - 1)
    levels: list[int]
    code: int              # the mixed-radix id of the grid point


@torch.no_grad()
def fsq_cell(model: VQVAE, z_e: Tensor, row: int, col: int) -> FSQCell:
    """z_e (1, L, h, w) of an FSQ model -> what happens to cell (row, col)."""
    q = model.quantizer
    if not isinstance(q, FiniteScalarQuantizer):
        raise ValueError("fsq_cell needs an FSQ model")
    bounded = q.bound(z_e)[0, :, row, col]
    level = (bounded.round() + q.half_width).long()
    code = int((level * q.basis).sum())
    return FSQCell(z_e[0, :, row, col].tolist(), bounded.tolist(), level.tolist(), list(q.cfg.levels), code)


def pick_example(x: Tensor, score: Tensor, first: int = 64) -> int:
    """A good default to show: among the first `first` images, the best scoring (PSNR, uses, ...) of the
    quarter with the most structure (pixel variance), so it is neither blank nor trivial (a thin "1",
    the code that paints black background)."""
    n = min(first, len(x))
    if n == 0:
        raise ValueError("no images to pick from; the set is empty")
    var = x[:n].flatten(1).var(1)
    structured = var >= torch.quantile(var, 0.75)
    score = torch.where(structured, torch.as_tensor(score[:n]).float(), torch.tensor(float("-inf")))
    return int(score.argmax())


@torch.no_grad()
def encoder_points(model: VQVAE, x: Tensor, labels: Tensor | None = None, depth: int = 0,
                   max_points: int = 2000, seed: int = 0, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Encoder outputs as seen by the codebook at `depth`, beside that codebook, for a 2-D map.

    Returns "points" (N, D) (a seeded subsample of every latent vector of x, residuals for depth > 0),
    their "codes" (N,), their images' "labels" (N,) (or -1), and "codebook" (K, D), all in the space
    where distances are taken (times the depth's scale, so codes and points are comparable).
    """
    steps = [quantize_steps(model, model.encode(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    if not 0 <= depth < len(steps[0]):
        raise ValueError(f"depth must be in [0, {len(steps[0]) - 1}], got {depth}")
    layer, scale = _layers(model)[depth]
    compared = torch.cat([s[depth].compared for s in steps]) * scale  # (N*h*w, D)
    codes = torch.cat([s[depth].codes.flatten() for s in steps])
    h, w = steps[0][depth].codes.shape[1:]
    lab = labels.repeat_interleave(h * w) if labels is not None else torch.full_like(codes, -1)
    g = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(codes), generator=g)[:max_points]
    return {"points": compared[keep].numpy(), "codes": codes[keep].numpy(), "labels": lab[keep].numpy(),
            "codebook": (layer.vectors() * scale).detach().numpy()}
