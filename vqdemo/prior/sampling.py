"""Images from a prior: sample code maps, decode them with the autoencoder they belong to."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from .. import runs
from ..settings import is_int
from .config import PriorError, _check_fits
from .model import _CodePrior
from .storage import load_prior


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
