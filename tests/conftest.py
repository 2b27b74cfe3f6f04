"""Shared test settings: one torch thread (the suite shares 2 cores), runs in a temp folder, tiny models."""

import pytest

from vqdemo.models import ModelConfig  # first: vqdemo sets OpenMP and malloc options before torch loads
from vqdemo.quantize import QuantizerConfig, ResidualConfig

import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(tmp_path / "runs"))


def tiny_config(kind: str = "vq", **vq) -> ModelConfig:
    """A model small enough to train for a few dozen steps in a test."""
    return ModelConfig(kind=kind, hidden=16, res_hidden=8, res_blocks=1,
                       vq=QuantizerConfig(k=vq.pop("k", 16), dim=vq.pop("dim", 8), **vq),
                       rq=ResidualConfig(depth=3, codebook_sizes=[16, 16, 16]))
