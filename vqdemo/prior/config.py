"""What a code prior is: its settings (`PriorConfig`), its errors, the sampling defaults, and which prior fits an
autoencoder's codes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn as nn

from ..settings import Checked, setting

KINDS = ("pixelcnn", "rq")

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
