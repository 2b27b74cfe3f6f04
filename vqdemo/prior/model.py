"""The two priors over code maps: `GatedPixelCNN` (one code per position, VQ-VAE) and `RQPrior` (a stack of D codes
per position, RQ-VAE), their shared body, training loss, evaluation and position-by-position sampling."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..settings import is_int
from .config import PriorConfig, PriorError
from .layers import GatedStack


def uniform_bits_per_image(sizes: list[int], h: int, w: int) -> float:
    """log2(K) bits per code summed over depths, times h*w codes: what a prior that learned nothing pays."""
    return sum(math.log2(k) for k in sizes) * h * w


class _CodePrior(nn.Module):
    """What both priors share: per-depth code embeddings, the gated body, the trainer protocol, sampling.

    Internally codes are stacks (B, D, H, W); a pixelcnn prior is the D = 1 case with (B, H, W) outside.
    """

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.ModuleList(nn.Embedding(k, cfg.channels) for k in cfg.codebook_sizes)
        self.stack = GatedStack(cfg)

    # Subclasses: logits per depth from teacher-forced codes, and the codes of one position from features.
    def depth_logits(self, codes: Tensor, labels: Tensor | None) -> list[Tensor]:
        raise NotImplementedError

    def _sample_position(self, feat: Tensor, pick) -> Tensor:
        raise NotImplementedError

    def _embed_sum(self, codes: Tensor) -> Tensor:
        """Sum of per-depth embeddings: (..., D) -> (..., C)."""
        return sum(emb(codes[..., d]) for d, emb in enumerate(self.embed))

    def _body(self, codes: Tensor, labels: Tensor | None) -> Tensor:
        """(B, D, H, W) codes -> (B, H, W, C) features that see only earlier positions."""
        x = self._embed_sum(codes.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, H, W, D) -> (B, C, H, W)
        return self.stack(x, labels).permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C)

    # Input checks.
    def _as_stack(self, codes: Tensor) -> Tensor:
        cfg = self.config
        shape = (cfg.height, cfg.width) if cfg.kind == "pixelcnn" else (cfg.depth, cfg.height, cfg.width)
        what = "(B, H, W) code maps" if cfg.kind == "pixelcnn" else "(B, D, H, W) code stacks"
        if not isinstance(codes, Tensor) or codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise PriorError(f"the prior expects integer {what}, got {getattr(codes, 'dtype', type(codes))}.")
        if codes.dim() != len(shape) + 1 or tuple(codes.shape[1:]) != shape:
            want = ", ".join(map(str, shape))
            raise PriorError(f"the prior expects {what} of shape (B, {want}), got {tuple(codes.shape)}.")
        codes = codes.long()
        codes = codes[:, None] if cfg.kind == "pixelcnn" else codes
        for d, k in enumerate(cfg.codebook_sizes):
            if codes.numel() and (codes[:, d].min() < 0 or codes[:, d].max() >= k):
                raise PriorError(f"codes at depth {d} must lie in [0, {k}); got values in "
                                 f"[{int(codes[:, d].min())}, {int(codes[:, d].max())}]. Check the codebook sizes.")
        return codes

    def _labels(self, labels: Tensor | None, n: int, required: bool) -> Tensor | None:
        k = self.config.num_classes
        if k is None:
            return None
        if labels is None:
            if required:
                raise PriorError(f"this prior is conditioned on {k} classes: pass labels with the codes.")
            return None
        labels = torch.as_tensor(labels)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise PriorError(f"labels must be integers, got {labels.dtype}.")
        labels = labels.long().reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(n)
        if labels.numel() != n:
            raise PriorError(f"expected 1 or {n} labels, got {labels.numel()}.")
        if labels.min() < 0 or labels.max() >= k:
            raise PriorError(f"labels must lie in [0, {k}), got values in [{int(labels.min())}, {int(labels.max())}].")
        return labels

    # Trainer protocol.
    def training_loss(self, batch: tuple[Tensor, Tensor | None]) -> tuple[Tensor, dict[str, float]]:
        """Mean negative log-likelihood in nats per code (teacher forcing); metrics in bits per code."""
        codes, labels = batch
        codes = self._as_stack(codes)
        labels = self._labels(labels, codes.shape[0], required=True)
        cfg = self.config
        if cfg.guided and self.training:  # classifier-free guidance: some maps learn p(codes) under "no class"
            drop = torch.rand(labels.shape, device=labels.device) < cfg.label_drop  # the trainer's seeded RNG
            labels = labels.masked_fill(drop, cfg.num_classes)
        loss = self._nll_sum(codes, labels) / codes.numel()
        return loss, {"nll_bits": loss.item() / math.log(2)}

    def _nll_sum(self, codes: Tensor, labels: Tensor | None) -> Tensor:
        logits = self.depth_logits(codes, labels)
        return sum(F.cross_entropy(lg, codes[:, d], reduction="sum") for d, lg in enumerate(logits))

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor | None, batch_size: int) -> dict[str, float]:
        """Bits per code over a whole set; "score" (lower is better) is bits per code."""
        if not is_int(batch_size) or batch_size < 1:
            raise PriorError(f"batch_size must be an int >= 1, got {batch_size!r}.")
        codes = self._as_stack(x)
        labels = self._labels(y, codes.shape[0], required=True)
        if codes.shape[0] == 0:
            raise PriorError("evaluate needs at least one code map.")
        was_training, total = self.training, 0.0
        self.eval()
        try:
            for start in range(0, codes.shape[0], batch_size):
                part = slice(start, start + batch_size)
                total += self._nll_sum(codes[part], None if labels is None else labels[part]).item()
        finally:
            self.train(was_training)
        cfg = self.config
        per_image = cfg.depth * cfg.height * cfg.width
        bits = total / codes.numel() / math.log(2)
        return {
            "score": bits,
            "bits_per_code": bits,
            "bits_per_image": bits * per_image,
            "uniform_bits_per_image": uniform_bits_per_image(cfg.codebook_sizes, cfg.height, cfg.width),
        }

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
        labels: Tensor | None = None,
        guidance: float = 1.0,
    ) -> Tensor:
        """Draw n code maps at once, position by position (depth by depth within a position for rq).

        temperature scales the logits (-> 0 is greedy argmax), top_k keeps the k likeliest codes.
        A conditional prior given no labels draws a random class per sample from the same seed.
        guidance w (classifier-free guidance, Ho & Salimans 2022; only for a prior trained with label_drop) draws
        from logits_none + w * (logits_class - logits_none): 1 is the conditional prior, 0 the "no class" prior.
        Returns (n, H, W) for pixelcnn, (n, D, H, W) for rq, int64.
        """
        if not is_int(n) or n < 1:
            raise PriorError(f"n must be an int >= 1, got {n!r}.")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not math.isfinite(temperature) or temperature <= 0:
            raise PriorError(f"temperature must be a finite number > 0, got {temperature!r}.")
        if top_k is not None and (not is_int(top_k) or top_k < 1):
            raise PriorError(f"top_k must be None or an int >= 1, got {top_k!r}.")
        if not is_int(seed):
            raise PriorError(f"seed must be an int, got {seed!r}.")
        cfg = self.config
        if labels is not None and cfg.num_classes is None:
            raise PriorError("this prior is unconditional: sample without labels, or train a class-conditional prior.")
        guided = self._check_guidance(guidance)
        gen = torch.Generator().manual_seed(seed)
        labels = self._labels(labels, n, required=False)
        if labels is None and cfg.num_classes is not None:
            labels = torch.randint(cfg.num_classes, (n,), generator=gen)
        if guided:  # the batch runs twice: rows n.. ask the same network for the "no class" prior
            labels = torch.cat([labels, torch.full_like(labels, cfg.num_classes)])  # (2n,)

        def pick(logits: Tensor) -> Tensor:  # (n, K) -> (n,), Gumbel-max: exact argmax as temperature -> 0
            logits = logits.double()
            if guided:  # (2n, K) -> (n, K) guided logits; the n codes drawn are fed to both halves
                cond, none = logits.chunk(2)
                logits = none + guidance * (cond - none)
            if top_k is not None and top_k < logits.shape[-1]:
                kth = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, -math.inf)
            u = torch.rand(logits.shape, generator=gen, dtype=torch.float64).clamp_min(1e-300)
            drawn = (logits - temperature * torch.log(-torch.log(u))).argmax(-1)
            return torch.cat([drawn, drawn]) if guided else drawn

        rows = 2 * n if guided else n
        codes = torch.zeros(rows, cfg.depth, cfg.height, cfg.width, dtype=torch.long)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                state = self.stack.start(rows, cfg.height, cfg.width, labels)
                for i in range(cfg.height):
                    self.stack.begin_row(state, i)
                    for j in range(cfg.width):
                        codes[:, :, i, j] = self._sample_position(self.stack.step(state, j), pick)  # (rows, D)
                        self.stack.write(state, i, j, self._embed_sum(codes[:, :, i, j]))
        finally:
            self.train(was_training)
        codes = codes[:n]  # a guided draw's second half holds the same codes
        return codes[:, 0] if cfg.kind == "pixelcnn" else codes

    def _check_guidance(self, guidance: float) -> bool:
        """Refuse a guidance this prior cannot apply; True when the draw needs the "no class" half."""
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance) \
                or not 0 <= guidance <= 20:
            raise PriorError(f"guidance must be a number in [0, 20], got {guidance!r}.")
        if guidance == 1:
            return False
        if not self.config.guided:
            raise PriorError("this prior was trained without label dropout, so it has no 'no class' prior to guide "
                             "with: sample with guidance 1, or train it with label_drop > 0.")
        return True

    def guided_logits(self, codes: Tensor, labels: Tensor, guidance: float) -> list[Tensor]:
        """Teacher-forced logits per depth with classifier-free guidance: none + w * (class - none), each
        (B, K_d, H, W). What `sample` draws from at each position; for tests and teaching."""
        codes = self._as_stack(codes)
        labels = self._labels(labels, codes.shape[0], required=True)
        if not self._check_guidance(guidance):
            return self.depth_logits(codes, labels)
        none = self.depth_logits(codes, torch.full_like(labels, self.config.num_classes))
        return [u + guidance * (c - u) for c, u in zip(self.depth_logits(codes, labels), none)]


class GatedPixelCNN(_CodePrior):
    """Gated PixelCNN over (B, H, W) code maps with K codes; logits (B, K, H, W)."""

    def __init__(self, cfg: PriorConfig):
        if cfg.kind != "pixelcnn":
            raise PriorError(f"GatedPixelCNN needs PriorConfig(kind='pixelcnn'), got kind={cfg.kind!r}.")
        super().__init__(cfg)
        c = cfg.channels
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(c, c), nn.ReLU(), nn.Linear(c, cfg.codebook_sizes[0]))

    def forward(self, codes: Tensor, labels: Tensor | None = None) -> Tensor:
        codes = self._as_stack(codes)
        return self.depth_logits(codes, self._labels(labels, codes.shape[0], required=True))[0]

    def depth_logits(self, codes: Tensor, labels: Tensor | None) -> list[Tensor]:
        return [self.head(self._body(codes, labels)).permute(0, 3, 1, 2)]  # (B, H, W, K) -> (B, K, H, W)

    def _sample_position(self, feat: Tensor, pick) -> Tensor:
        return pick(self.head(feat))[:, None]  # (n, C) -> (n, 1)


class RQPrior(_CodePrior):
    """Prior over RQ-VAE code stacks (B, D, H, W): a gated body over positions, a small head over depths.

    The body reads the sum of the D code embeddings at each earlier position (like the RQ-VAE decoder reads
    the sum of the D quantized vectors) and gives a context h_ij. Depth d at (i, j) is predicted from
    h_ij + e_d + sum of the embeddings of depths < d at (i, j), the running partial sum mirroring the
    residual quantizer, through one residual MLP shared by all depths and a linear read-out per depth.
    """

    def __init__(self, cfg: PriorConfig):
        if cfg.kind != "rq":
            raise PriorError(f"RQPrior needs PriorConfig(kind='rq'), got kind={cfg.kind!r}.")
        super().__init__(cfg)
        c = cfg.channels
        self.context = nn.Sequential(nn.ReLU(), nn.Linear(c, c))
        self.depth_pos = nn.Parameter(torch.randn(cfg.depth, c) * 0.02)
        self.depth_mlp = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))
        self.depth_out = nn.ModuleList(nn.Sequential(nn.LayerNorm(c), nn.Linear(c, k)) for k in cfg.codebook_sizes)

    def forward(self, codes: Tensor, labels: Tensor | None = None) -> list[Tensor]:
        """(B, D, H, W) codes -> D logits tensors (B, K_d, H, W), depth d conditioned on depths < d."""
        codes = self._as_stack(codes)
        return self.depth_logits(codes, self._labels(labels, codes.shape[0], required=True))

    def _depth_step(self, x: Tensor, d: int) -> Tensor:
        """(..., C) context plus partial sum -> (..., K_d) logits for depth d."""
        x = x + self.depth_pos[d]
        return self.depth_out[d](x + self.depth_mlp(x))

    def depth_logits(self, codes: Tensor, labels: Tensor | None) -> list[Tensor]:
        x = self.context(self._body(codes, labels))  # (B, H, W, C)
        logits = []
        for d, emb in enumerate(self.embed):
            logits.append(self._depth_step(x, d).permute(0, 3, 1, 2))  # (B, H, W, K_d) -> (B, K_d, H, W)
            x = x + emb(codes[:, d])  # teacher forcing: add the true code of depth d
        return logits

    def _sample_position(self, feat: Tensor, pick) -> Tensor:
        x, out = self.context(feat), []  # (n, C)
        for d, emb in enumerate(self.embed):
            out.append(pick(self._depth_step(x, d)))
            x = x + emb(out[-1])
        return torch.stack(out, dim=1)  # (n, D)


def build_prior(cfg: PriorConfig) -> _CodePrior:
    """The prior for cfg.kind: GatedPixelCNN for VQ-VAE code maps, RQPrior for RQ-VAE code stacks."""
    if not isinstance(cfg, PriorConfig):
        raise PriorError(f"build_prior needs a PriorConfig, got {type(cfg).__name__}.")
    return GatedPixelCNN(cfg) if cfg.kind == "pixelcnn" else RQPrior(cfg)
