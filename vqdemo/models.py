"""The autoencoders: VQ-VAE (one codebook), RQ-VAE (a residual stack of codebooks), FSQ (a fixed grid of codes)
and a plain VAE.

All three share the encoder/decoder of `nets.py`, so comparing them compares the bottleneck alone.
Each implements the training protocol of `trainer.py`: `training_loss(batch)` and `evaluate(x, y, batch_size)`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .fsq import FiniteScalarQuantizer, FSQConfig
from .metrics import psnr
from .nets import ConvDecoder, ConvEncoder, PatchDecoder, PatchEncoder
from .quantize import QuantizerConfig, ResidualConfig, ResidualQuantizer, VectorQuantizer, perplexity_of
from .settings import Checked, setting

KINDS = {"vq": "VQ-VAE", "rq": "RQ-VAE", "fsq": "FSQ", "vae": "VAE"}
ARCHS = ("conv", "patch")
CONV_DOWNSAMPLE = (2, 4, 8)


@dataclass
class ModelConfig(Checked):
    """The autoencoder's settings; each field's help, bounds and choices are its metadata (see settings.py)."""

    kind: str = setting("vq", choices=tuple(KINDS), flag="--model", label="model kind",
                        help="vq: VQ-VAE (van den Oord et al. 2017); rq: RQ-VAE (Lee et al. 2022); fsq: finite scalar "
                             "quantisation (Mentzer et al. 2023); vae: a Gaussian VAE")
    arch: str = setting("conv", choices=ARCHS, label="architecture",
                        help="conv: strided convs + residual blocks (van den Oord et al. 2017); patch: a patch MLP")
    channels: int = setting(1, choices=(1, 3), flag="", help="image channels C")
    image_size: int = setting(28, lo=4, hi=256, flag="", label="image size")
    hidden: int = setting(64, lo=4, hi=1024, help="hidden width of the encoder and decoder")
    res_blocks: int = setting(2, lo=0, hi=8, flag="")
    res_hidden: int = setting(32, lo=4, hi=1024, flag="")
    downsample: int = setting(4, lo=1, label="downsampling", help="conv: 2, 4 or 8; patch: the patch size")
    vq: QuantizerConfig = field(default_factory=QuantizerConfig)
    rq: ResidualConfig = field(default_factory=ResidualConfig)
    fsq: FSQConfig = field(default_factory=FSQConfig)  # kind "fsq": the latent has len(levels) channels
    kl_weight: float = setting(1.0, lo=0, hi=1e4,
                               help="VAE: weight of the KL term (KL summed over latents, divided by the pixel count "
                                    "like the MSE); lower sends more bits per image")
    # recon loss is divided by this (van den Oord et al. 2017's code divides by the training set's variance)
    data_variance: float = setting(1.0, lo=1e-12, hi=1e12, flag="")

    def rules(self) -> None:
        """The architecture's downsampling, and the parts this kind uses (checked again: they may have changed in
        place since they were built)."""
        if self.arch == "conv" and self.downsample not in CONV_DOWNSAMPLE:
            raise ValueError(f"conv downsampling must be 2, 4 or 8, got {self.downsample!r}")
        if self.arch == "patch" and not (1 <= self.downsample <= self.image_size):
            raise ValueError(f"patch size must be in [1, image size], got {self.downsample!r}")
        self.vq.validate()
        if self.kind == "rq":
            self.rq.validate()
        if self.kind == "fsq":
            self.fsq.validate()

    @property
    def code_dim(self) -> int:
        """Channels of the quantised latent the decoder reads: D, or one per FSQ level."""
        return len(self.fsq.levels) if self.kind == "fsq" else self.vq.dim

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        vq = QuantizerConfig(**d.pop("vq", {}))
        rq = ResidualConfig(**d.pop("rq", {}))
        fsq = FSQConfig(**d.pop("fsq", {}))
        return cls(vq=vq, rq=rq, fsq=fsq, **d)

    @property
    def latent_size(self) -> int:
        return math.ceil(self.image_size / self.downsample)


@dataclass
class Output:
    x_hat: Tensor              # (B, C, H, W) in [0, 1]
    z_e: Tensor                # (B, D, h, w) encoder output (the VAE's mean)
    loss: Tensor
    terms: dict[str, Tensor]   # every loss term, for logging
    codes: Tensor | None       # (B, h, w) for VQ, (B, N, h, w) for RQ, None for the VAE
    counts: list[Tensor]       # per depth: (K_d,) usage of each code in this batch


class Autoencoder(nn.Module):
    """Encoder -> bottleneck -> decoder. Subclasses say what the bottleneck is."""

    def __init__(self, cfg: ModelConfig, latent_channels: int):
        super().__init__()
        cfg.validate()
        self.config = cfg
        d = cfg.code_dim
        if cfg.arch == "conv":
            self.encoder = ConvEncoder(cfg.channels, cfg.hidden, cfg.res_blocks, cfg.res_hidden, cfg.downsample,
                                       latent_channels)
            self.decoder = ConvDecoder(cfg.channels, cfg.hidden, cfg.res_blocks, cfg.res_hidden, cfg.downsample, d)
        else:
            self.encoder = PatchEncoder(cfg.channels, cfg.hidden, cfg.downsample, latent_channels)
            self.decoder = PatchDecoder(cfg.channels, cfg.hidden, cfg.downsample, d)

    @property
    def latent_shape(self) -> tuple[int, int]:
        s = self.config.latent_size
        return s, s

    def encode(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, D', h, w); images are zero-padded to a multiple of the downsampling."""
        pad = self.config.latent_size * self.config.downsample - x.shape[-1]
        if pad:
            x = F.pad(x, (0, pad, 0, pad))
        return self.encoder(x)

    def decode_raw(self, z: Tensor) -> Tensor:
        """(B, D, h, w) -> (B, C, H, W), unbounded, cropped back to the image size.

        The loss is taken on this linear output (as in the VQ-VAE reference code): a sigmoid here saturates on MNIST's
        black background within a few dozen steps and its gradient dies, freezing the decoder.
        """
        s = self.config.image_size
        return self.decoder(z)[..., :s, :s]

    def decode(self, z: Tensor) -> Tensor:
        """(B, D, h, w) -> (B, C, H, W) images in [0, 1]."""
        return self.decode_raw(z).clamp(0, 1)

    def recon_terms(self, x: Tensor, x_raw: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The images in [0, 1], and the reconstruction loss on the raw output (over data variance)."""
        x_hat = x_raw.clamp(0, 1)
        terms = {"recon": F.mse_loss(x_raw, x) / self.config.data_variance, "mse": F.mse_loss(x_hat.detach(), x)}
        return x_hat, terms

    def training_loss(self, batch: tuple[Tensor, Tensor | None]) -> tuple[Tensor, dict[str, float]]:
        out = self(batch[0])
        stats = {name: float(t.detach()) for name, t in out.terms.items()}
        stats["loss"] = float(out.loss.detach())
        stats["psnr"] = psnr(stats["mse"])
        stats.update(self._usage_stats(out.counts))
        return out.loss, stats

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor | None, batch_size: int) -> dict[str, float]:
        """Validation figures over the whole set; "score" (recon MSE) picks the best checkpoint."""
        sums: dict[str, float] = {}
        counts: list[Tensor] | None = None
        for i in range(0, len(x), batch_size):
            out = self(x[i:i + batch_size])
            n = len(x[i:i + batch_size])
            for name, t in out.terms.items():
                sums[name] = sums.get(name, 0.0) + float(t) * n
            sums["loss"] = sums.get("loss", 0.0) + float(out.loss) * n
            counts = out.counts if counts is None else [a + b for a, b in zip(counts, out.counts)]
            for name, value in self._extra_val(x[i:i + batch_size], out).items():
                sums[name] = sums.get(name, 0.0) + value * n
        stats = {name: v / len(x) for name, v in sums.items()}
        stats["psnr"] = psnr(stats["mse"])
        stats.update({"psnr@" + k[4:]: psnr(v) for k, v in list(stats.items()) if k.startswith("mse@")})
        stats.update(self._usage_stats(counts or []))
        stats["score"] = stats["mse"]
        return stats

    def _extra_val(self, x: Tensor, out: Output) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def snapshot(self, x: Tensor) -> dict:
        """Live view for the app while training: a few reconstructions and the codebook usage (CPU tensors)."""
        was_training = self.training
        self.eval()
        out = self(x)
        self.train(was_training)
        return {"x": x.cpu(), "x_hat": out.x_hat.cpu(), "codes": None if out.codes is None else out.codes.cpu(),
                "usage": self._running_usage(), "upkeep": self.upkeep()}

    def _running_usage(self) -> Tensor | None:
        return None

    def upkeep(self) -> dict | None:
        """What the quantizer's own dead-code test and upkeep did in this run (None: no codebook)."""
        return None

    def _usage_stats(self, counts: list[Tensor]) -> dict[str, float]:
        if not counts:
            return {}
        c = counts[0]
        return {
            "perplexity": perplexity_of(c),
            "used": float((c > 0).sum()),
            "dead": float((c == 0).sum()),
            "usage": float((c > 0).float().mean()),
            "k": float(len(c)),
        }


class VQVAE(Autoencoder):
    """VQ-VAE (kind "vq"), RQ-VAE (kind "rq") or FSQ (kind "fsq"): the bottleneck snaps latents to codes."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, cfg.code_dim)
        self.quantizer: VectorQuantizer | ResidualQuantizer | FiniteScalarQuantizer = (
            ResidualQuantizer(cfg.vq, cfg.rq) if cfg.kind == "rq"
            else FiniteScalarQuantizer(cfg.fsq) if cfg.kind == "fsq" else VectorQuantizer(cfg.vq)
        )

    @property
    def codebook_sizes(self) -> list[int]:
        q = self.quantizer
        return q.codebook_sizes if isinstance(q, ResidualQuantizer) else [q.k]

    def forward(self, x: Tensor) -> Output:
        z_e = self.encode(x)                    # (B, C, H, W) -> (B, D, h, w)
        q = self.quantizer(z_e)                 # nearest codes, (B, D, h, w)
        x_hat, terms = self.recon_terms(x, self.decode_raw(q.z_q))  # (B, D, h, w) -> (B, C, H, W)
        terms.update(codebook=q.codebook_loss.detach(), commit=q.commit_loss.detach())
        counts = [o.counts for o in q.layers] if self.config.kind == "rq" else [q.counts]
        return Output(x_hat, z_e, terms["recon"] + q.loss, terms, q.codes, counts)

    @torch.no_grad()
    def encode_codes(self, x: Tensor) -> Tensor:
        """Images -> code ids: (B, h, w) for VQ, (B, N, h, w) for RQ."""
        return self.quantizer(self.encode(x)).codes

    @torch.no_grad()
    def decode_codes(self, codes: Tensor, depth: int | None = None) -> Tensor:
        """Code ids -> images. For RQ, `depth` keeps only the first depths (coarse to fine)."""
        if isinstance(self.quantizer, ResidualQuantizer):
            return self.decode(self.quantizer.lookup(codes, depth))
        return self.decode(self.quantizer.lookup(codes))

    def code_vectors(self, depth: int = 0) -> Tensor:
        """The codebook at a depth as the decoder sees it: (K, D)."""
        q = self.quantizer
        return (q.layer(depth).vectors() * q.scales[depth]) if isinstance(q, ResidualQuantizer) else q.vectors()

    def _first_layer(self) -> VectorQuantizer | FiniteScalarQuantizer:
        q = self.quantizer
        return q.layer(0) if isinstance(q, ResidualQuantizer) else q

    def _running_usage(self) -> Tensor:
        """(K,) vectors per step each code has taken lately (depth 0 for RQ)."""
        return self._first_layer().usage.detach().cpu().clone()

    def upkeep(self) -> dict:
        """The quantizer's own dead-code facts (depth 1 for RQ): VectorQuantizer.upkeep or FiniteScalarQuantizer's."""
        return self._first_layer().upkeep()

    def set_beta(self, beta: float) -> None:
        """Live beta, already checked where it came in (`knobs.check`)."""
        if isinstance(self.quantizer, FiniteScalarQuantizer):
            raise ValueError("FSQ has no commitment loss, so beta does nothing; its grid of codes is fixed")
        layers = self.quantizer.layers if isinstance(self.quantizer, ResidualQuantizer) else [self.quantizer]
        for layer in layers:
            layer.cfg.beta = beta
        self.config.vq.beta = beta

    def resize_codebook(self, k: int) -> None:
        """Live K change (VQ only): grow by splitting busy codes, shrink by dropping idle ones."""
        if not isinstance(self.quantizer, VectorQuantizer):
            raise ValueError("live resizing of K is for VQ models; an RQ model has one K per depth")
        self.quantizer.resize(k)
        self.config.vq.k = k

    def _extra_val(self, x: Tensor, out: Output) -> dict[str, float]:
        """RQ: the reconstruction error using only the first d depths, for the coarse-to-fine curve."""
        if self.config.kind != "rq":
            return {}
        return {f"mse@{d}": float(F.mse_loss(self.decode_codes(out.codes, d), x))
                for d in range(1, out.codes.shape[1] + 1)}


class VAE(Autoencoder):
    """A plain Gaussian VAE with the same encoder/decoder, for the "why discrete codes" comparison."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, 2 * cfg.vq.dim)

    @property
    def codebook_sizes(self) -> list[int]:
        return []

    def forward(self, x: Tensor) -> Output:
        mu, logvar = self.encode(x).chunk(2, dim=1)  # (B, 2D, h, w) -> 2 x (B, D, h, w)
        logvar = logvar.clamp(-10, 10)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        x_hat, terms = self.recon_terms(x, self.decode_raw(z))
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum() / x.numel()
        terms["kl"] = kl.detach()
        return Output(x_hat, mu, terms["recon"] + self.config.kl_weight * kl, terms, None, [])

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> Tensor:
        """Decode latents drawn from the N(0, I) prior: the VAE's own way to generate."""
        h, w = self.latent_shape
        g = torch.Generator().manual_seed(seed)
        return self.decode(torch.randn(n, self.config.vq.dim, h, w, generator=g))


def build_model(cfg: ModelConfig) -> VQVAE | VAE:
    return VAE(cfg) if cfg.kind == "vae" else VQVAE(cfg)


def parameter_count(cfg: ModelConfig) -> int:
    """Parameters the model of cfg would have, counted on the meta device: nothing is allocated, so an
    absurd config (from a user's file or flags) can be refused before it eats the server's memory."""
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(cfg).parameters())
