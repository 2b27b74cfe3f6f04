"""Small builders shared by the tests."""

from vqdemo.models import ModelConfig
from vqdemo.quantize import QuantizerConfig, ResidualConfig


def tiny_config(kind: str = "vq", **vq) -> ModelConfig:
    """A model small enough to train for a few dozen steps in a test."""
    return ModelConfig(kind=kind, hidden=16, res_hidden=8, res_blocks=1,
                       vq=QuantizerConfig(k=vq.pop("k", 16), dim=vq.pop("dim", 8), **vq),
                       rq=ResidualConfig(depth=3, codebook_sizes=[16, 16, 16]))
