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

The package is split by concern: `config` (settings, errors, defaults, which prior fits an autoencoder), `layers`
(the gated layers), `model` (the two priors), `sampling` (images from a prior), `training` (fitting one to an
autoencoder's codes) and `storage` (where a run's prior lives, and loading it). Every public name is here too.
"""

from .config import (
    DEFAULT_GUIDANCE,
    DEFAULT_LABEL_DROP,
    DEFAULT_TEMPERATURE,
    KINDS,
    PriorConfig,
    PriorError,
    prior_config_for,
)
from .model import GatedPixelCNN, RQPrior, build_prior, uniform_bits_per_image
from .sampling import sample_images, sample_with_codes
from .storage import MIRRORS, PRIOR_DIR, SHIPPED, load_prior, prior_dir, prior_figures, prior_mirror, prior_write_dir
from .training import PRIOR_VAL_EVERY, encode_codes, train_prior

__all__ = [
    "DEFAULT_GUIDANCE", "DEFAULT_LABEL_DROP", "DEFAULT_TEMPERATURE", "KINDS", "MIRRORS", "PRIOR_DIR", "PRIOR_VAL_EVERY",
    "SHIPPED", "GatedPixelCNN", "PriorConfig", "PriorError", "RQPrior", "build_prior", "encode_codes", "load_prior",
    "prior_config_for", "prior_dir", "prior_figures", "prior_mirror", "prior_write_dir", "sample_images",
    "sample_with_codes", "train_prior", "uniform_bits_per_image",
]
