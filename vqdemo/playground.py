"""A 2-D codebook playground: vector quantisation where the class can see it.

A toy autoencoder maps 2-D points (rings, blobs, a spiral) to a latent space of D = 2, snaps every latent
point to its nearest code with the project's one `VectorQuantizer`, and decodes back. Because D = 2, the
encoder outputs, the codebook entries and their cells can all be drawn on one plane, step by step:
codes initialised far from the data (N(0, 1)) and learned by gradient stay stranded there (dead codes),
codes initialised on the data (k-means) or small (U(-1/K, 1/K)) spread over it. The finite-scalar grid
(FSQ, the library's `FiniteScalarQuantizer`: each latent number squashed and rounded to one of L levels) is the
contrast: its codes are fixed, drawn with their real rounding cells, so nothing drifts away.

Training is cheap (2,000 points, one full batch per step, about a millisecond), so a whole run is computed
at once and recorded as frames (`run`), then played back in the browser: no server work per frame.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from vqdemo.fsq import MIN_LEVELS, FiniteScalarQuantizer, FSQConfig
from vqdemo.quantize import CODEBOOK_UPDATES, QuantizerConfig, VectorQuantizer, perplexity_of
from vqdemo.settings import Checked, setting

DATASETS = ("rings", "blobs", "spiral")
INITS = {"data": "kmeans", "uniform": "uniform", "normal": "normal"}   # playground name -> QuantizerConfig.init


QUANTIZERS = ("vq", "fsq")


@dataclass
class PlaygroundConfig(Checked):
    """The toy's settings; each field's help, bounds and choices are its metadata (see settings.py)."""

    data: str = setting("rings", choices=DATASETS, help="the 2-D points the toy autoencoder squeezes")
    n: int = setting(2000, lo=16, hi=20_000, help="points")
    k: int = setting(64, lo=2, hi=65536, help="codebook size (FSQ: L levels per axis with L * L closest to k)")
    beta: float = setting(0.25, lo=0, hi=100, help="commitment weight")
    init: str = setting("normal", choices=tuple(INITS),
                        help="data: k-means on the first encoder outputs; uniform: U(-1/K, 1/K), tiny, around 0; "
                             "normal: N(0, 1), mostly far from the data")
    codebook: str = setting("grad", choices=tuple(CODEBOOK_UPDATES),
                            help="grad: learned by the codebook loss; ema: running k-means")
    restart_dead: bool = setting(False, help="re-seat codes nobody picked on random encoder outputs")
    quantizer: str = setting("vq", choices=QUANTIZERS, help="vq, or fsq: a fixed rounding grid, for contrast")
    steps: int = setting(400, lo=1, hi=5_000)
    every: int = setting(4, lo=1, help="record a frame every `every` steps")
    lr: float = setting(3e-3, lo=0, hi=1, lo_open=True)
    seed: int = setting(0, lo=0)

    def rules(self) -> None:
        if self.every > self.steps:
            raise ValueError(f"every must be an integer in [1, steps], got {self.every!r}")
        QuantizerConfig(k=self.k, dim=2, beta=self.beta, codebook=self.codebook)


def toy_data(name: str, n: int, seed: int = 0) -> Tensor:
    """n points (n, 2) in about [-1, 1]^2: two noisy rings, five Gaussian blobs, or a two-armed spiral."""
    g = torch.Generator().manual_seed(seed)
    if name == "rings":
        radius = torch.where(torch.rand(n, generator=g) < 0.5, 0.45, 0.95)
        angle = torch.rand(n, generator=g) * 2 * math.pi
        x = torch.stack([radius * angle.cos(), radius * angle.sin()], 1)
        return x + 0.04 * torch.randn(n, 2, generator=g)
    if name == "blobs":
        centres = torch.tensor([[-0.7, -0.6], [0.7, -0.5], [0.0, 0.75], [-0.8, 0.55], [0.6, 0.55]])
        which = torch.randint(len(centres), (n,), generator=g)
        return centres[which] + 0.12 * torch.randn(n, 2, generator=g)
    if name == "spiral":
        t = torch.rand(n, generator=g).sqrt() * 3 * math.pi                     # denser towards the centre
        arm = torch.where(torch.rand(n, generator=g) < 0.5, 0.0, math.pi)
        x = torch.stack([t * (t + arm).cos(), t * (t + arm).sin()], 1) / (3 * math.pi)
        return x + 0.03 * torch.randn(n, 2, generator=g)
    raise ValueError(f"unknown toy data {name!r}: use one of {', '.join(DATASETS)}")


def fsq_levels(k: int) -> int:
    """Levels per axis of the 2-D rounding grid with about k codes (at least FSQ's minimum of 3)."""
    return max(MIN_LEVELS, round(math.sqrt(k)))


class ToyAutoencoder(nn.Module):
    """2 -> 2 -> 2: a small MLP encoder and decoder around one quantiser (or the FSQ grid)."""

    def __init__(self, cfg: PlaygroundConfig, hidden: int = 32):
        super().__init__()
        self.cfg = cfg
        self.encoder = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))
        self.decoder = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))
        # FSQ: the library's own quantiser (the one the app's FSQ models use), one channel per axis of the plane
        self.fsq = FiniteScalarQuantizer(FSQConfig([fsq_levels(cfg.k)] * 2)) if cfg.quantizer == "fsq" else None
        self.vq = None if self.fsq is not None else VectorQuantizer(QuantizerConfig(
            k=cfg.k, dim=2, beta=cfg.beta, codebook=cfg.codebook, init=INITS[cfg.init],
            # under ~1 point per step: dead (restarts within ~10 steps)
            restart_dead=cfg.restart_dead, dead_threshold=0.9))

    def codes(self) -> Tensor:
        """The codebook as points of the latent plane, (K, 2)."""
        if self.fsq is not None:
            return self.fsq.latent_points()    # where each grid point's level is reached before the squash
        return self.vq.vectors().detach()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x (N, 2) -> (loss, z_e (N, 2), code ids (N,), counts (K,))."""
        z = self.encoder(x)
        q = (self.vq if self.fsq is None else self.fsq)(z[:, :, None, None])   # (N, 2) -> (N, 2, 1, 1)
        z_q, ids, counts, extra = q.z_q[:, :, 0, 0], q.codes.reshape(-1), q.counts, q.loss
        recon = F.mse_loss(self.decoder(z_q), x)
        return recon + extra, z.detach(), ids, counts


@dataclass
class Frames:
    """A recorded run: F frames of the latent plane and the numbers to print under it."""

    data: np.ndarray        # (N, 2) the toy data
    points: np.ndarray      # (F, N, 2) encoder outputs
    codes: np.ndarray       # (F, K, 2) codebook entries
    counts: np.ndarray      # (F, K) points that picked each code
    step: np.ndarray        # (F,)
    loss: np.ndarray        # (F,)
    ids: np.ndarray         # (F, N) the code each encoder output got (FSQ: its rounding cell)
    edges: list[np.ndarray] | None = None   # FSQ: per axis, where rounding switches level (its cells are boxes)

    @property
    def used(self) -> np.ndarray:
        return (self.counts > 0).sum(1)

    @property
    def perplexity(self) -> np.ndarray:
        return np.array([perplexity_of(torch.from_numpy(c)) for c in self.counts])


def run(cfg: PlaygroundConfig) -> Frames:
    """Train the toy autoencoder for cfg.steps full-batch steps, recording a frame before the first step and
    every cfg.every steps after it."""
    cfg.validate()
    torch.manual_seed(cfg.seed)
    x = toy_data(cfg.data, cfg.n, cfg.seed)
    model = ToyAutoencoder(cfg)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    points, codes, counts, steps, losses, ids = [], [], [], [], [], []
    for step in range(cfg.steps + 1):
        loss, z, picked, count = model(x)   # the frame shows the state the step starts from
        if step % cfg.every == 0 or step == cfg.steps:
            points.append(z.numpy().copy())
            ids.append(picked.numpy().copy())
            codes.append(model.codes().numpy().copy())
            counts.append(count.numpy().copy())
            steps.append(step)
            losses.append(float(loss.detach()))
        if step == cfg.steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    edges = None if model.fsq is None else [e.numpy() for e in model.fsq.cell_edges()]
    return Frames(x.numpy(), np.stack(points), np.stack(codes), np.stack(counts), np.array(steps),
                  np.array(losses), np.stack(ids), edges)


def view_box(frames: Frames, margin: float = 0.08) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) holding every encoder output and code of every frame (square, with a margin). FSQ: the
    outputs and the inner cell edges (its outer levels lie far out, where tanh reaches them; their discs sit on
    the border)."""
    fixed = (frames.codes.reshape(-1, 2) if frames.edges is None
             else np.stack(np.meshgrid(*frames.edges), -1).reshape(-1, 2))
    every = np.concatenate([frames.points.reshape(-1, 2), fixed])
    every = every[np.isfinite(every).all(1)]
    lo, hi = np.percentile(every, 0.2, 0), np.percentile(every, 99.8, 0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-3) * (1 + margin)
    return float(centre[0] - half), float(centre[0] + half), float(centre[1] - half), float(centre[1] + half)


def pack(frames: Frames) -> dict:
    """The frames as a small payload for the browser: positions as one byte per coordinate in the view box
    (base64), counts as uint16; a 2,000-point, 64-code run of 101 frames is about 0.6 MB. FSQ adds each point's
    code (uint16) and the cell edges in byte units, so the browser draws the real rounding cells."""
    x0, x1, y0, y1 = view_box(frames)

    def to_bytes(xy: np.ndarray) -> str:
        u = np.stack([(xy[..., 0] - x0) / (x1 - x0), (xy[..., 1] - y0) / (y1 - y0)], -1)
        return base64.b64encode(np.clip(np.nan_to_num(u) * 255, 0, 255).round().astype(np.uint8).tobytes()).decode()

    f, n, _ = frames.points.shape
    grid = {} if frames.edges is None else {
        "ids": base64.b64encode(frames.ids.astype("<u2").tobytes()).decode(),
        "edges": [[round(float(v), 3) for v in (e - lo) / (hi - lo) * 255] for e, lo, hi in
                  zip(frames.edges, (x0, y0), (x1, y1))]}
    return {**grid,
        "frames": f, "n": n, "k": frames.codes.shape[1], "box": [x0, x1, y0, y1],
        "points": to_bytes(frames.points), "codes": to_bytes(frames.codes),
        "counts": base64.b64encode(np.minimum(frames.counts, 65535).astype("<u2").tobytes()).decode(),
        "step": frames.step.tolist(), "loss": [round(v, 5) for v in frames.loss.tolist()],
        "perplexity": [round(v, 2) for v in frames.perplexity.tolist()],
    }
