"""Vector quantisation: one VQ layer, and residual quantisation built from depth-many of them.

The VQ layer snaps every latent vector to its nearest codebook entry (van den Oord et al. 2017). Every
common variant is an option here: the expanded distance |x|^2 - 2 x.e + |e|^2, codebook + beta * commitment
loss, two forms of the straight-through estimator, a codebook learned by gradient or by EMA (Razavi et al.
2019), uniform(-1/K, 1/K), N(0, 1) or data (k-means) init, dead-code restart, cosine codebooks, and live
resizing of K. Residual quantisation (RQ-VAE, Lee et al. 2022) is built from depth-many of the same layer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .settings import Checked, setting

CODEBOOK_UPDATES = {"ema": "EMA (running k-means)", "grad": "gradient (codebook loss)"}
INITS = {"kmeans": "k-means on data", "uniform": "U(-1/K, 1/K)", "normal": "N(0, 1)"}
STE_FORMS = {"paper": "z_e + sg(z_q - z_e)", "both": "z_q + (z_e - sg(z_e))"}


@dataclass
class QuantizerConfig(Checked):
    """One VQ layer's settings; each field's help, bounds and choices are its metadata (see settings.py)."""

    k: int = setting(64, lo=2, hi=65536, label="codebook size K", help="codebook size K")
    dim: int = setting(16, lo=1, hi=1024, label="code dimension D",
                       help="code vector size D (the encoder's output channels)")
    beta: float = setting(0.25, lo=0, hi=100, help="commitment weight")
    codebook: str = setting("ema", choices=tuple(CODEBOOK_UPDATES),
                            help="ema: running k-means updates (Razavi et al. 2019); "
                                 "grad: learned by the codebook loss")
    decay: float = setting(0.95, lo=0, hi=1, lo_open=True, hi_open=True, help="EMA decay (ema codebook only)")
    init: str = setting("kmeans", choices=tuple(INITS),
                        help="kmeans: from the first batch of encoder outputs; uniform: U(-1/K, 1/K), the init of a "
                             "patch-MLP VQ-VAE reference implementation (the VQ-VAE paper states none); normal: "
                             "N(0, 1) like nn.Embedding")
    restart_dead: bool = setting(True, help="move codes unused for a while onto random encoder outputs")
    dead_threshold: float = setting(0.5, lo=0, hi=1e6,  # 1e300 overflowed the float32 usage buffer
                                    help="a code whose running usage (vectors per step) falls below this is dead")
    cosine: bool = setting(False, help="compare l2-normalised vectors (codes live on the unit sphere)")
    ste: str = setting("paper", choices=tuple(STE_FORMS),
                       help="straight-through form: paper, z_e + sg(z_q - z_e) (van den Oord et al. 2017); both, "
                            "z_q + (z_e - sg(z_e)), which also sends the decoder's gradient to a gradient codebook "
                            "(needs --codebook grad)")

    def __post_init__(self) -> None:
        # Configs written before the plain name say "seed004". With an EMA codebook that form never differed from
        # the paper's (the codebook has no gradient and the encoder's is the same), so it loads as what it did.
        if self.ste == "seed004":
            self.ste = "both" if self.codebook == "grad" else "paper"
        super().__post_init__()

    def rules(self) -> None:
        if self.ste == "both" and self.codebook == "ema":
            raise ValueError("ste='both' sends the decoder's gradient to the codebook, but an EMA codebook takes no "
                             "gradient: with codebook='ema' it would train exactly like ste='paper'. "
                             "Use codebook='grad' or ste='paper'")


@dataclass
class Step:
    """One depth of quantisation as the codebook saw it (a VQ layer has one). The one search that training
    (`forward`) and the teaching pages (`depth_steps`) share. Shapes for B images on an h x w grid."""

    residual: Tensor  # (B, D, h, w) what this depth must explain: z_e at depth 1, then r_d = r_{d-1} - q_d
    # (B*h*w, D) the rows compared with the codebook (divided by the depth's scale, normalised when cosine)
    compared: Tensor
    codes: Tensor     # (B, h, w) nearest code ids
    dist: Tensor | None  # (B*h*w, K) squared distance of every row to every code (None where forward drops it)
    picked: Tensor    # (B*h*w, D) the nearest code of each compared row, codebook gradient attached
    chosen: Tensor    # (B, D, h, w) q_d: the picked codes as the decoder sees them (times the depth's scale)


def rows(z: Tensor) -> Tensor:
    """A latent map as the rows a codebook compares: (B, D, h, w) -> (B*h*w, D)."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


@dataclass
class Quantized:
    """What one quantiser pass returns. Losses are scalars; stats are plain floats for logging."""

    z_q: Tensor            # (B, D, H, W) quantised latents, with the straight-through gradient attached
    codes: Tensor          # (B, H, W) int64 code ids
    loss: Tensor           # codebook_loss + beta * commit_loss (the codebook term is 0 for EMA codebooks)
    codebook_loss: Tensor  # |sg(z_e) - e|^2: pulls codes towards encoder outputs
    commit_loss: Tensor    # |z_e - sg(e)|^2: keeps the encoder near its codes
    counts: Tensor         # (K,) how many vectors picked each code in this batch
    perplexity: float      # exp(entropy of code usage): the effective number of codes in use
    step: Step | None = None  # the search behind it (VQ layers), before this pass's codebook upkeep

    @property
    def used(self) -> int:
        return int((self.counts > 0).sum())


def perplexity_of(counts: Tensor) -> float:
    """exp(H(p)) of a usage histogram: K when all codes are used evenly, 1 when one code takes everything."""
    p = counts.float() / counts.sum().clamp_min(1)
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))


def nearest_code(x: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest codebook row for each row of x by the expanded distance |x|^2 - 2 x.e + |e|^2.

    The expansion turns N*K distance computations into one matrix multiply. Its catch: in float32 the three
    terms cancel, so vectors sharing a large offset (values near 1000 +- 1) get wrong argmins and negative
    distances. Distances do not change when x and the codes move together, so both are first centred on the
    codebook's mean, which removes any shared offset; rounding left over is clamped at 0.
    Returns (codes (N,), dist (N, K)).
    """
    centre = codebook.mean(0, keepdim=True)  # (1, D)
    x, codebook = x - centre, codebook - centre
    # (N, D), (K, D) -> (N, K)
    dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ codebook.t() + codebook.pow(2).sum(1)[None, :]
    dist = dist.clamp_min(0)
    return dist.argmin(1), dist


# Running averages that others read in their units:
USAGE_DECAY = 0.99  # `usage` keeps 99% of itself and adds 1% of each step's counts: vectors per step over ~100
                    # steps, the unit of QuantizerConfig.dead_threshold and of the Train page's usage chart
SCALE_DECAY = 0.99  # norm_residual: each RQ depth's running residual RMS over ~100 steps (saved with the weights)
SPLIT_NOISE = 0.01  # resize: a new code is a busy code plus noise of 1% of the codebook's spread, so the two split
                    # that code's vectors between them instead of staying one code twice


class VectorQuantizer(nn.Module):
    """One codebook of K vectors of size D, applied to every spatial position of a latent map."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        k, d = cfg.k, cfg.dim
        if cfg.init == "normal":
            weight = torch.randn(k, d)
        else:
            weight = torch.empty(k, d).uniform_(-1.0 / k, 1.0 / k)
        self.codebook = nn.Parameter(weight, requires_grad=cfg.codebook == "grad")
        self.register_buffer("initted", torch.tensor(cfg.init != "kmeans"))
        self.register_buffer("usage", torch.ones(k))       # running vectors-per-step of each code (dead-code detection)
        self.register_buffer("ema_count", torch.ones(k))   # EMA codebook: running cluster sizes
        self.register_buffer("ema_sum", weight.clone())    # EMA codebook: running sums of assigned vectors
        # What happened to dead codes in this run (not saved with the weights): each code's state after the last
        # step, how often a code fell below dead_threshold, came back above it on its own, or was restarted.
        self.register_buffer("was_dead", torch.zeros(k, dtype=torch.bool), persistent=False)
        self.register_buffer("deaths", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("comebacks", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long), persistent=False)

    @property
    def k(self) -> int:
        return self.codebook.shape[0]

    def vectors(self) -> Tensor:
        """The codebook as it is compared against: (K, D), unit-norm rows when cosine."""
        return F.normalize(self.codebook, dim=1) if self.cfg.cosine else self.codebook

    def lookup(self, codes: Tensor) -> Tensor:
        """Code ids (B, H, W) -> code vectors (B, D, H, W)."""
        return self.vectors()[codes].permute(0, 3, 1, 2)

    def search(self, z: Tensor, scale: Tensor | None = None, keep_dist: bool = True) -> Step:
        """The nearest code of every vector of z / scale (z: (B, D, h, w)); changes nothing.

        `compared` keeps z's gradient and `chosen` the codebook's, so `forward` builds its losses on them.
        keep_dist=False drops the (B*h*w, K) distances once the argmin is taken: training does not hold them.
        """
        b, d, h, w = z.shape
        flat = self._rows(z, scale)
        codes, dist = nearest_code(flat.detach(), self.vectors().detach())  # (B*h*w,), (B*h*w, K)
        picked = self.vectors()[codes]  # (B*h*w, D) a copy: this step's EMA move and restarts do not change it
        chosen = picked.reshape(b, h, w, d).permute(0, 3, 1, 2)  # (B*h*w, D) -> (B, D, h, w)
        return Step(z, flat, codes.reshape(b, h, w), dist if keep_dist else None, picked,
                    chosen if scale is None else chosen * scale)

    def _rows(self, z: Tensor, scale: Tensor | None) -> Tensor:
        """(B, D, h, w) -> (B*h*w, D) rows as the codebook compares them: divided by scale, unit-norm when cosine."""
        flat = rows(z if scale is None else z / scale)
        return F.normalize(flat, dim=1) if self.cfg.cosine else flat

    def depth_steps(self, z_e: Tensor) -> list[Step]:
        """What `forward` compares and picks, for showing: one depth. Changes nothing."""
        return [self.search(z_e)]

    def forward(self, z_e: Tensor, scale: Tensor | None = None, learn: bool | None = None,
                keep_dist: bool = False) -> Quantized:
        """Quantise z_e (B, D, H, W) (divided by `scale` first, as a residual depth does). learn (default: in
        training) also starts the codebook on the data, moves it (EMA) and restarts dead codes. keep_dist: keep
        the distances in `.step` (for showing; at K = 1024 they outweigh everything else a pass holds)."""
        learn = self.training if learn is None else learn
        if learn and not bool(self.initted):
            self._kmeans_init(self._rows(z_e, scale).detach())
        step = self.search(z_e, scale, keep_dist)
        flat, e = step.compared, step.picked  # (B*h*w, D) each: the rows and their codes as they were compared
        codes = step.codes.flatten()
        counts = torch.bincount(codes, minlength=self.k)
        if learn:
            self._update(flat.detach(), codes, counts)

        codebook_loss = F.mse_loss(e, flat.detach()) if self.cfg.codebook == "grad" else flat.new_zeros(())
        commit_loss = F.mse_loss(flat, e.detach())
        if self.cfg.ste == "paper":
            q = flat + (e - flat).detach()
        else:
            q = e + (flat - flat.detach())
        z_q = q.reshape(step.codes.shape + (q.shape[1],)).permute(0, 3, 1, 2)  # (B*h*w, D) -> (B, D, h, w)
        return Quantized(
            z_q=z_q,
            codes=step.codes,
            loss=codebook_loss + self.cfg.beta * commit_loss,
            codebook_loss=codebook_loss,
            commit_loss=commit_loss,
            counts=counts,
            perplexity=perplexity_of(counts),
            step=step,
        )

    @torch.no_grad()
    def _kmeans_init(self, x: Tensor, iters: int = 10) -> None:
        """Start the codebook on the data: k-means++ seeding, then Lloyd steps, on one batch (x: (N, D)).

        k-means++ spreads the seeds (each picked with probability ~ squared distance to the nearest seed so
        far), so small clusters, like the few stroke vectors among MNIST's many background ones, get codes too.
        """
        g = torch.Generator(device=x.device).manual_seed(0)
        centers = x.new_empty(self.k, x.shape[1])  # (K, D), filled row by row (a growing cat costs K^2 D copies)
        centers[0] = x[torch.randint(len(x), (1,), generator=g, device=x.device)][0]
        closest = (x - centers[0]).pow(2).sum(1)
        for i in range(1, self.k):
            weights = closest if closest.sum() > 0 else torch.ones_like(closest)
            pick = x[torch.multinomial(weights, 1, generator=g)]
            centers[i] = pick[0]
            closest = torch.minimum(closest, (x - pick).pow(2).sum(1))
        for _ in range(iters):
            codes, _ = nearest_code(x, centers)
            sums = torch.zeros_like(centers).index_add_(0, codes, x)
            n = torch.bincount(codes, minlength=self.k).float()
            filled = n > 0
            centers[filled] = sums[filled] / n[filled, None]
        self.codebook.data.copy_(centers)
        self.ema_sum.copy_(centers)
        self.ema_count.fill_(1.0)
        self.initted.fill_(True)

    @torch.no_grad()
    def _update(self, x: Tensor, codes: Tensor, counts: Tensor) -> None:
        """Per-step bookkeeping: running usage, EMA codebook update, dead-code restart."""
        decay = self.cfg.decay
        self.usage.mul_(USAGE_DECAY).add_(counts.float(), alpha=1 - USAGE_DECAY)
        if self.cfg.codebook == "ema":
            sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, x)  # (K, D)
            self.ema_count.mul_(decay).add_(counts.float(), alpha=1 - decay)
            self.ema_sum.mul_(decay).add_(sums, alpha=1 - decay)
            n = self.ema_count.sum()
            # Laplace smoothing keeps empty clusters finite
            smoothed = (self.ema_count + 1e-5) / (n + self.k * 1e-5) * n
            self.codebook.data.copy_(self.ema_sum / smoothed[:, None])
        dead = self.usage < self.cfg.dead_threshold   # the one test of "dead": below the threshold, never at it
        self.deaths += (dead & ~self.was_dead).sum()
        self.comebacks += (~dead & self.was_dead).sum()
        if self.cfg.restart_dead and dead.any():
            self._restart(dead.nonzero().squeeze(1), x)
            self.restarts += dead.sum()
            dead = torch.zeros_like(dead)
        self.was_dead.copy_(dead)

    def upkeep(self) -> dict:
        """What this run's dead codes did so far, for a caption that states what was measured: the threshold
        ("dead" is running usage below it, in vectors per step), whether restarts are on, how often a code fell
        below it, came back above it without a restart, or was restarted."""
        return {"dead_below": self.cfg.dead_threshold, "restart": self.cfg.restart_dead,
                "deaths": int(self.deaths), "comebacks": int(self.comebacks), "restarts": int(self.restarts)}

    @torch.no_grad()
    def _restart(self, idx: Tensor, x: Tensor) -> None:
        """Re-seat dead codes on random encoder outputs from this batch, so every code earns its place."""
        pick = x[torch.randint(len(x), (len(idx),), device=x.device)]
        self.codebook.data[idx] = pick
        self.ema_sum[idx] = pick
        self.ema_count[idx] = 1.0
        self.usage[idx] = self.cfg.dead_threshold + 1.0

    @torch.no_grad()
    def resize(self, new_k: int) -> None:
        """Change K in the middle of training without starting over.

        Growing splits the busiest codes: each new entry is a busy code plus small noise, so it
        takes over half of that code's vectors. Shrinking keeps the most used codes. The caller must
        rebuild its optimiser state for the codebook (its shape changed), and check `new_k` first
        (`knobs.check`, the one check of a live change): this trusts it.
        """
        k = self.k
        if new_k == k:
            return
        order = torch.argsort(self.usage, descending=True)
        if new_k < k:
            keep = order[:new_k]
            tensors = {n: t[keep] for n, t in self._resizable().items()}
        else:
            src = order[torch.arange(new_k - k) % k]
            scale = self.codebook.data.std().clamp_min(1e-3) * SPLIT_NOISE
            noise = torch.randn(new_k - k, self.cfg.dim, device=self.codebook.device) * scale
            self.usage[src] /= 2
            grown = {n: t[src].clone() for n, t in self._resizable().items()}
            grown["codebook"] += noise
            grown["ema_sum"] = grown["codebook"] * grown["ema_count"][:, None]
            tensors = {n: torch.cat([t, grown[n]]) for n, t in self._resizable().items()}
        self.codebook = nn.Parameter(tensors["codebook"], requires_grad=self.cfg.codebook == "grad")
        for name in ("usage", "ema_count", "ema_sum", "was_dead"):
            setattr(self, name, tensors[name])
        self.cfg.k = new_k

    def _resizable(self) -> dict[str, Tensor]:
        return {"codebook": self.codebook.data, "usage": self.usage, "ema_count": self.ema_count,
                "ema_sum": self.ema_sum, "was_dead": self.was_dead}


@dataclass
class ResidualConfig(Checked):
    depth: int = setting(4, lo=1, hi=16, label="RQ depth", help="RQ depth")
    codebook_sizes: list[int] = setting(
        factory=lambda: [64, 64, 64, 64], lo=2, hi=65536, items=16, flag="--ks",
        help="RQ codebook size per depth, e.g. 512,256,128 (default: K at every depth)")
    shared: bool = setting(False, flag="--shared-codebook",
                           help="one codebook used at every depth instead of one per depth")
    norm_residual: bool = setting(False, help="divide each depth's residual by its running RMS so every codebook "
                                              "works at unit scale")
    progressive_steps: int = setting(0, lo=0, hi=10_000_000,
                                     help="> 0: switch depth d on after d * progressive_steps training steps")

    def rules(self) -> None:
        if not self.shared and len(self.codebook_sizes) != self.depth:
            raise ValueError(f"give one codebook size per depth: depth {self.depth} but sizes {self.codebook_sizes}")


@dataclass
class ResidualQuantized:
    z_q: Tensor             # (B, D, H, W) sum of the active depths' codes, straight-through gradient attached
    codes: Tensor           # (B, N, H, W) code ids, one map per depth
    loss: Tensor            # sum over depths of |sg(r) - q|^2 + beta |r - sg(q)|^2 (Lee et al. 2022)
    codebook_loss: Tensor
    commit_loss: Tensor
    layers: list[Quantized]

    @property
    def perplexity(self) -> float:
        return self.layers[0].perplexity


class ResidualQuantizer(nn.Module):
    """RQ: quantise z, then quantise what is left, depth after depth; the sum of the codes approximates z.

    Built from the same VectorQuantizer (one idea, one place). With `shared`, every depth uses one codebook.
    """

    def __init__(self, vq: QuantizerConfig, rq: ResidualConfig):
        super().__init__()
        rq.validate()
        self.rq = rq
        sizes = [vq.k] if rq.shared else list(rq.codebook_sizes)
        self.layers = nn.ModuleList(VectorQuantizer(replace(vq, k=k)) for k in sizes)
        self.register_buffer("scales", torch.ones(rq.depth))  # running RMS of each depth's residual (norm_residual)
        self.register_buffer("scale_seen", torch.zeros(rq.depth, dtype=torch.bool))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.active_depth = rq.depth

    def layer(self, depth: int) -> VectorQuantizer:
        return self.layers[0 if self.rq.shared else depth]

    @property
    def trained_depth(self) -> int:
        """How many depths have been switched on in training. A progressive run stopped early (say at step 700 of
        depth 4 with a depth every 500 steps) has trained 2; the later codebooks never saw a residual, so
        evaluating, showing, painting and priors use only the trained ones. `steps` is saved with the weights."""
        if not self.rq.progressive_steps:
            return self.rq.depth
        return min(self.rq.depth, 1 + max(int(self.steps) - 1, 0) // self.rq.progressive_steps)

    @property
    def codebook_sizes(self) -> list[int]:
        """K of each depth in use (the trained ones)."""
        return [self.layer(d).k for d in range(self.trained_depth)]

    def forward(self, z_e: Tensor) -> ResidualQuantized:
        if self.training and self.rq.progressive_steps:
            self.active_depth = min(self.rq.depth, 1 + int(self.steps) // self.rq.progressive_steps)
            self.steps += 1
        elif not self.training:
            self.active_depth = self.trained_depth
        outs = self._depths(z_e, self.active_depth, learn=self.training, keep_dist=False)
        codebook_losses, commit_losses = [], []
        grad_codebook = self.layers[0].cfg.codebook == "grad"
        for layer_out in outs:
            r, e = layer_out.step.residual, layer_out.step.chosen  # (B, D, H, W) each; e has the codebook's gradient
            # Losses in the latent's own units: at unit scale a late, tiny residual would get its gradient blown up
            # by 1/scale.
            codebook_losses.append(F.mse_loss(e, r.detach()) if grad_codebook else e.new_zeros(()))
            commit_losses.append(F.mse_loss(r, e.detach()))
        total = sum(o.step.chosen for o in outs)
        if self.layers[0].cfg.ste == "paper":
            z_q = z_e + (total - z_e).detach()
        else:
            z_q = total + (z_e - z_e.detach())
        codebook_loss, commit_loss = sum(codebook_losses), sum(commit_losses)
        return ResidualQuantized(
            z_q=z_q,
            codes=torch.stack([o.codes for o in outs], 1),  # N x (B, H, W) -> (B, N, H, W)
            loss=codebook_loss + self.layers[0].cfg.beta * commit_loss,  # summed over depths (Lee et al. 2022)
            codebook_loss=codebook_loss,
            commit_loss=commit_loss,
            layers=outs,
        )

    def depth_steps(self, z_e: Tensor) -> list[Step]:
        """What `forward` compares and picks at every trained depth, for showing. Changes nothing."""
        return [out.step for out in self._depths(z_e, self.trained_depth, learn=False, keep_dist=True)]

    def _depths(self, z_e: Tensor, n: int, learn: bool, keep_dist: bool) -> list[Quantized]:
        """Quantise z_e (B, D, H, W) depth by depth, each depth the nearest codes to what the earlier ones left.
        learn: move each depth's scale and codebook on the way (training); keep_dist: as in VectorQuantizer."""
        residual = z_e
        outs: list[Quantized] = []
        for d in range(n):
            out = self.layer(d)(residual, self._scale(d, residual, learn), learn, keep_dist)  # compared at unit scale
            outs.append(out)
            residual = residual - out.step.chosen.detach()   # r_d = r_{d-1} - q_d: what is still left to explain
        return outs

    def _scale(self, d: int, residual: Tensor, learn: bool) -> Tensor:
        if not self.rq.norm_residual:
            return self.scales[d].clone()
        if learn:
            with torch.no_grad():
                rms = residual.pow(2).mean().sqrt().clamp_min(1e-6)
                self.scales[d] = (SCALE_DECAY * self.scales[d] + (1 - SCALE_DECAY) * rms
                                  if self.scale_seen[d] else rms)
                self.scale_seen[d] = True
        return self.scales[d].clone()  # a copy: the buffer changes in place on the next step

    def lookup(self, codes: Tensor, depth: int | None = None) -> Tensor:
        """Code stacks (B, N, H, W) -> summed latents (B, D, H, W) from the first `depth` depths (coarse to fine)."""
        n = codes.shape[1] if depth is None else min(depth, codes.shape[1])
        return sum(self.layer(d).lookup(codes[:, d]) * self.scales[d] for d in range(n))
