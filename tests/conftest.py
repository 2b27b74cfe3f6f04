"""Shared test settings: one torch thread (the suite shares 2 cores) and runs in a temp folder."""

import pytest

from vqdemo import runtime

runtime.configure()  # first: OpenMP and malloc options before torch loads
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(tmp_path / "runs"))
