"""Autoregressive priors over discrete code maps: what turns a VQ-VAE (an autoencoder) into a generator.

A VQ-VAE squeezes an image into a small map of integer codes (the "small image"). Sampling new images
means sampling new code maps, so we fit p(codes) = prod_i p(code_i | codes before i) in raster order:

- `GatedPixelCNN` for one code per position (VQ-VAE), after van den Oord et al. 2016,
  "Conditional Image Generation with PixelCNN Decoders".
- `RQPrior` for a stack of D codes per position (RQ-VAE): the same gated conv body summarises all
  earlier positions, then a small depth head predicts the D codes of a position one after another
  (the RQ-Transformer idea, in miniature).

Both share `GatedStack`; sampling reuses it incrementally (one row of the vertical stack per row, one
column of the horizontal stack per position) so 64 maps of 7x7 take a fraction of a second on a CPU.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from . import runs
from .data import data_config, load_data
from .settings import Checked, is_int, setting
from .trainer import Control, Store, TrainConfig, run_training

KINDS = ("pixelcnn", "rq")
PRIOR_DIR = "prior"  # an autoencoder run keeps its prior in <run>/prior/
SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"  # the repository's models: read-only to the app
MIRRORS = "priors"   # <runs>/priors/<name>-<hash>/: priors the app trained for models in folders it must not write
# A prior's run is short (a minute from the Sample page): validating, and keeping the best, every 100 steps
# rather than the autoencoder's 250 gives it enough checkpoints to pick from.
PRIOR_VAL_EVERY = 100

# What the Sample page and the CLI start at. 1.0 samples the prior's own distribution; below 1 favours its likelier
# codes. Measured with bench/prior_quality.py on the shipped class-conditional MNIST priors (README): lower
# temperatures make more samples read as the requested digit, with every code map still distinct.
DEFAULT_TEMPERATURE = 0.7
# Classifier-free guidance (Ho & Salimans 2022) for priors trained with label dropout: 1 is the plain conditional
# prior, above 1 pushes each draw further from what the "no class" prior expects, towards the requested class.
DEFAULT_GUIDANCE = 2.0
# The share of training code maps whose label is swapped for the "no class" label, so that one network learns
# both p(codes | class) and p(codes): what guidance needs. New class-conditional priors get it by default.
DEFAULT_LABEL_DROP = 0.1


class PriorError(ValueError):
    """Bad configuration or arguments for a prior; the message says what to change."""


@dataclass
class PriorConfig(Checked):
    """Shape of the code maps the prior models and the size of its network."""

    error = PriorError

    kind: str = setting("pixelcnn", choices=KINDS,
                        help="pixelcnn: one code per position; rq: D codes per position (an RQ model's stack)")
    codebook_sizes: list[int] = setting(factory=lambda: [64], lo=2, hi=65536, items=16,
                                        help="K per depth; one entry for pixelcnn")
    height: int = setting(7, lo=1, hi=64, help="latent grid rows")
    width: int = setting(7, lo=1, hi=64, help="latent grid columns")
    channels: int = setting(64, lo=1, hi=1024, help="hidden width of every stack")
    layers: int = setting(8, lo=1, hi=32, help="gated layers; layer 0 is mask type A")
    kernel: int = setting(3, lo=3, hi=15, help="odd; each layer sees kernel // 2 rows up and columns left/right")
    num_classes: int | None = setting(None, lo=1, hi=10_000,
                                      help="class-conditional prior (e.g. 10 digits); none = unconditional")
    dropout: float = setting(0.0, lo=0, hi=1, hi_open=True,
                             help="dropout in the PixelCNN's gated layers: keeps a long run from overfitting")
    label_drop: float = setting(0.0, lo=0, hi=1, hi_open=True,
                                help="classifier-free guidance (Ho & Salimans 2022): during training each label is "
                                     "replaced by an extra 'no class' label with this probability; 0 = no such label "
                                     "(what priors saved before guidance hold)")

    def __post_init__(self) -> None:
        if isinstance(self.codebook_sizes, tuple):
            self.codebook_sizes = list(self.codebook_sizes)
        super().__post_init__()

    def rules(self) -> None:
        if self.kind == "pixelcnn" and len(self.codebook_sizes) != 1:
            raise PriorError(
                f"a pixelcnn prior models one code per position, so codebook_sizes needs one entry, got "
                f"{self.codebook_sizes}; use kind='rq' for residual code stacks."
            )
        if self.kernel % 2 == 0:
            raise PriorError(f"PriorConfig.kernel must be odd, got {self.kernel!r}.")
        if self.label_drop and self.num_classes is None:
            raise PriorError("label_drop drops class labels, so it needs a class-conditional prior (num_classes).")

    @property
    def guided(self) -> bool:
        """True when the prior has a "no class" label, so it can sample with classifier-free guidance."""
        return self.num_classes is not None and self.label_drop > 0

    @property
    def label_count(self) -> int | None:
        """Rows of the class embedding: the classes, plus the "no class" label of a guided prior."""
        return None if self.num_classes is None else self.num_classes + int(self.guided)

    @property
    def depth(self) -> int:
        return len(self.codebook_sizes)

    def to_dict(self) -> dict:
        return asdict(self)


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


# A prior for a trained autoencoder run: codes from its encoder, the one training loop, images from its decoder.


def prior_config_for(ae: nn.Module, num_classes: int | None = None, **overrides) -> PriorConfig:
    """The prior that fits an autoencoder's codes: pixelcnn for VQ, rq for RQ; overrides size the network.
    A class-conditional one drops DEFAULT_LABEL_DROP of its labels in training, so it can sample with guidance."""
    kind = _code_kind(ae)
    h, w = ae.latent_shape
    overrides.setdefault("label_drop", DEFAULT_LABEL_DROP if num_classes is not None else 0.0)
    return PriorConfig(kind=kind, codebook_sizes=list(ae.codebook_sizes), height=h, width=w,
                       num_classes=num_classes, **overrides)


def _code_kind(ae: nn.Module) -> str:
    if ae.config.kind not in ("vq", "rq"):
        raise PriorError(f"a {ae.config.kind!r} model has no discrete codes, so it has no code prior; "
                         "pick a VQ-VAE or RQ-VAE run (a VAE samples from its own N(0, I) prior).")
    return "rq" if ae.config.kind == "rq" else "pixelcnn"


def _check_fits(cfg: PriorConfig, ae: nn.Module) -> None:
    want = prior_config_for(ae)
    have = (cfg.kind, cfg.codebook_sizes, cfg.height, cfg.width)
    need = (want.kind, want.codebook_sizes, want.height, want.width)
    if have != need:
        raise PriorError(f"the prior models (kind, codebook sizes, height, width) = {have} but the autoencoder "
                         f"makes {need}; train a new prior for this autoencoder.")


def encode_codes(ae: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """Images (N, C, H, W) -> codes on the CPU, (N, h, w) for VQ or (N, D, h, w) for RQ, in batches."""
    device = next(ae.parameters()).device
    return torch.cat([ae.encode_codes(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def train_prior(
    ae_dir: Path,
    *,
    seconds: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    prior_cfg: PriorConfig | None = None,
    control: Control | None = None,
    on_event: Callable[[dict], None] | None = None,
    batch_size: int = 64,
    lr: float = 1e-3,
    out_dir: Path | None = None,
    store: Store | None = None,
) -> Path:
    """Fit a prior to the codes an autoencoder run gives its own dataset; write it to out_dir, by default
    prior_write_dir(ae_dir) (<ae_dir>/prior/, or the runs-folder mirror for a shipped checkpoint).

    The default prior is class-conditional when the dataset has labels. Training goes through the one loop
    of trainer.py (seeds, pause/stop via `control`, events, best checkpoint by bits per code); how it ended
    is in <out_dir>/status.json and the final "end" event. Returns out_dir. With `store`, the run's files go there
    instead (a job's worker sends them back to the app).
    """
    train_cfg = TrainConfig(steps=steps, seconds=seconds, batch_size=batch_size, lr=lr, seed=seed,
                            val_every=PRIOR_VAL_EVERY, schedule="constant")   # as the shipped priors were trained
    train_cfg.budgeted()  # no budget is refused before the dataset is loaded and encoded (bad values on construction)
    ae_dir = Path(ae_dir)
    ae, ae_meta = runs.load_model(ae_dir)
    _code_kind(ae)
    if not isinstance(ae_meta.get("data"), dict):
        raise PriorError(f"{ae_dir} records no data config, so its dataset cannot be encoded; retrain the autoencoder.")
    data = load_data(data_config(ae_meta, str(ae_dir)))
    labelled = data.train_y is not None and data.val_y is not None
    cfg = prior_cfg or prior_config_for(ae, data.num_classes if labelled else None)
    _check_fits(cfg, ae)
    if cfg.num_classes is not None:
        if not labelled:
            raise PriorError(f"the prior is conditioned on {cfg.num_classes} classes but {data.name} has no labels; "
                             "set num_classes=None.")
        top = int(max(data.train_y.max(), data.val_y.max()))
        if top >= cfg.num_classes:
            raise PriorError(f"{data.name} has labels up to {top}, more than num_classes={cfg.num_classes} allows.")
    train_y, val_y = (data.train_y, data.val_y) if cfg.num_classes is not None else (None, None)

    torch.manual_seed(seed)  # the prior's initial weights
    prior = build_prior(cfg)
    out_dir = Path(out_dir) if out_dir is not None else prior_write_dir(ae_dir)
    meta = {"role": "prior", "autoencoder": ae_meta.get("model"), "data": ae_meta["data"]}
    run_training(
        prior,
        (encode_codes(ae, data.train_x), train_y),  # (N, C, H, W) -> (N, [D,] h, w)
        (encode_codes(ae, data.val_x), val_y),
        train_cfg,
        out_dir=None if store else out_dir,
        store=store,
        meta=meta,
        control=control,
        on_event=on_event,
    )
    return out_dir


def prior_mirror(ae_dir: Path | str, runs_root: Path | str | None = None) -> Path:
    """The runs-folder twin of <ae_dir>/prior/: <runs>/priors/<folder name>-<hash of its full path>/."""
    ae_dir = Path(ae_dir).resolve()
    key = hashlib.sha256(str(ae_dir).encode()).hexdigest()[:10]
    return Path(runs_root or runs.default_runs_dir()) / MIRRORS / f"{ae_dir.name}-{key}"


def prior_write_dir(ae_dir: Path | str, runs_root: Path | str | None = None) -> Path:
    """Where a new prior for the autoencoder in ae_dir is written: <ae_dir>/prior/, except for the shipped
    checkpoints/ (read-only to the app, a student's prior must not change the repository), whose priors go to
    the runs-folder mirror, as do those of a run whose prior/ is a link (it could point anywhere). The command
    line writes where it is told instead (`prior train` passes out_dir)."""
    ae_dir = Path(ae_dir)
    own = ae_dir / PRIOR_DIR
    elsewhere = ae_dir.resolve().is_relative_to(SHIPPED) or own.is_symlink()   # a planted link would lead the write
    return prior_mirror(ae_dir, runs_root) if elsewhere else own


def prior_dir(ae_dir: Path | str, runs_root: Path | str | None = None) -> Path:
    """Where the prior of the autoencoder in ae_dir is read from: its own prior/ when that holds weights, else the
    runs-folder mirror when that does, else where one would be written (prior_write_dir)."""
    for folder in (Path(ae_dir) / PRIOR_DIR, prior_mirror(ae_dir, runs_root)):
        if (folder / runs.WEIGHTS).is_file():
            return folder
    return prior_write_dir(ae_dir, runs_root)


def load_prior(ae_dir: Path, which: str = runs.WEIGHTS) -> tuple[_CodePrior, dict]:
    """prior_dir(ae_dir) -> (prior in eval mode, meta). Safetensors only; the config is checked before building."""
    file = prior_dir(ae_dir) / which
    if not file.is_file():
        raise runs.CheckpointError(f"{ae_dir} has no trained prior yet ({file} is missing): train one first.")
    tensors, meta = runs.read_weights(file)
    if not meta:
        meta = runs.read_json(file.parent / "config.json")
    if meta.get("role") != "prior":
        raise runs.CheckpointError(f"{file} is not a prior checkpoint.")
    try:
        cfg = PriorConfig(**meta["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise runs.CheckpointError(f"{file} has no usable prior config ({e}).") from None
    with torch.device("meta"):  # count parameters without allocating them
        size = sum(p.numel() for p in build_prior(cfg).parameters())
    if size > runs.MAX_PARAMS:
        raise runs.CheckpointError(f"{file} describes a prior of {size:,} parameters: too large for this app.")
    prior = build_prior(cfg)
    runs.load_state(prior, tensors, str(file))
    return prior.eval(), meta


def sample_images(
    source: Path | str | tuple[nn.Module, _CodePrior],
    n: int = 16,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    label: int | None = None,
    guidance: float = 1.0,
) -> Tensor:
    """Sample n code maps from the prior and decode them: (n, C, H, W) images in [0, 1].

    source is an autoencoder run folder (loads both models) or an (autoencoder, prior) pair, which is what
    a page that samples repeatedly should cache and pass. label None: random classes if conditional.
    """
    if isinstance(source, (str, Path)):
        ae, prior = runs.load_model(source)[0], load_prior(source)[0]
    else:
        ae, prior = source
    return sample_with_codes(ae, prior, n, temperature, top_k, seed, label, guidance)[1]


@torch.no_grad()
def sample_with_codes(
    ae: nn.Module,
    prior: _CodePrior,
    n: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    label: int | None = None,
    guidance: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """`sample_images` that also returns the sampled code maps (the Sample page shows them): (codes (n, [D,] h, w),
    images (n, C, H, W)). Same seed, same draws."""
    _check_fits(prior.config, ae)
    if label is not None and not is_int(label):
        raise PriorError(f"label must be None or an int class index, got {label!r}.")
    labels = None if label is None else torch.tensor(label)
    codes = prior.sample(n, temperature=temperature, top_k=top_k, seed=seed, labels=labels, guidance=guidance)
    return codes, ae.decode_codes(codes.to(next(ae.parameters()).device)).cpu()


def uniform_bits_per_image(sizes: list[int], h: int, w: int) -> float:
    """log2(K) bits per code summed over depths, times h*w codes: what a prior that learned nothing pays."""
    return sum(math.log2(k) for k in sizes) * h * w


def prior_figures(run_dir: Path | str) -> dict[str, float] | None:
    """The prior's validation NLL (bits per code, bits per image, uniform bits per image, step), or None.

    Prefers status.json's best checkpoint (the weights that are loaded), else the last good val row.
    """
    folder = prior_dir(run_dir)
    keys = ("bits_per_code", "bits_per_image", "uniform_bits_per_image")

    def usable(row: dict) -> bool:
        return all(isinstance(row.get(k), (int, float)) and math.isfinite(row[k]) for k in keys)

    rows = [runs.read_status(folder).get("best", {})]   # cleaned: a planted status.json is a dict of floats here
    rows += reversed([r for r in runs.read_metrics(folder) if r.get("type") == "val"])
    best = next((r for r in rows if usable(r)), None)
    if best is None:
        return None
    return {**{k: float(best[k]) for k in keys}, "step": int(best.get("step", 0))}
