"""Finite scalar quantisation: its codes are exactly the rounded grid, the gradient passes the rounding, and the
model trains, saves, loads and shows on the Learn and Codebook pages like VQ and RQ."""

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from vqdemo import explain, runs
from vqdemo.data import DataConfig
from vqdemo.fit import fit
from vqdemo.fsq import FiniteScalarQuantizer, FSQConfig
from vqdemo.models import ModelConfig, build_model
from vqdemo.trainer import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def test_codes_are_exactly_the_rounded_grid():
    q = FiniteScalarQuantizer(FSQConfig([8, 6, 5]))
    z = torch.randn(4, 3, 5, 5) * 3
    out = q(z)
    half_width = torch.tensor([4.0, 3.0, 2.0])[None, :, None, None]
    levels = out.z_q * half_width
    assert torch.equal(levels, levels.round())                         # every value sits on the grid
    assert torch.equal(levels, q.bound(z).round())                     # and is the bounded value rounded
    lo, hi = -half_width, torch.tensor([3.0, 2.0, 2.0])[None, :, None, None]
    assert ((levels >= lo) & (levels <= hi)).all()                     # 8, 6 and 5 levels per channel
    assert torch.allclose(q.lookup(out.codes), out.z_q)                # code id -> grid point -> the same z_q
    assert q.vectors().shape == (240, 3) and len(set(map(tuple, q.vectors().tolist()))) == 240


def test_every_grid_point_is_reachable_and_ids_are_mixed_radix():
    q = FiniteScalarQuantizer(FSQConfig([4, 3]))
    grid = q.vectors()                                                 # (12, 2) in [-1, 1]
    level = grid * q.half_width                                        # integers: -2..1 and -1..1
    z = torch.atanh((level + q.offset) / q.half_range) - q.shift       # the latent that bounds to exactly that level
    codes = q(z.T[None, :, :, None]).codes.flatten()                  # (1, 2, 12, 1) -> 12 ids
    assert codes.tolist() == list(range(12))


def test_the_straight_through_estimator_passes_gradients_past_the_rounding():
    q = FiniteScalarQuantizer(FSQConfig([8, 5, 5, 5]))
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    w = torch.randn(2, 4, 3, 3)
    (q(z).z_q * w).sum().backward()
    zz = z.detach().clone().requires_grad_(True)
    (q.bound(zz) / q._per_channel(q.half_width) * w).sum().backward()  # the same function without rounding
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert torch.allclose(z.grad, zz.grad)


def test_fsq_has_no_codebook_or_commitment_loss_and_refuses_beta():
    model = build_model(ModelConfig(kind="fsq", hidden=16, res_hidden=8, res_blocks=1))
    out = model(torch.rand(2, 1, 28, 28))
    assert float(out.terms["codebook"]) == 0 and float(out.terms["commit"]) == 0
    assert model.codebook_sizes == [240] and out.codes.shape == (2, 7, 7)
    with pytest.raises(ValueError, match="no commitment loss"):
        model.set_beta(0.5)


def test_quantize_steps_for_fsq_match_the_model():
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="fsq", hidden=16, res_hidden=8, res_blocks=1)).eval()
    x = torch.rand(4, 1, 28, 28)
    [step] = explain.quantize_steps(model, model.encode(x))
    assert torch.equal(step.codes, model.encode_codes(x))
    cell = explain.fsq_cell(model, model.encode(x[:1]), 3, 3)
    assert cell.code == int(step.codes[0, 3, 3])


@pytest.fixture(scope="module")
def fsq_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    cfg = ModelConfig(kind="fsq", hidden=16, res_hidden=8, res_blocks=1, fsq=FSQConfig([4, 4, 4]))
    fit(cfg, DataConfig(name="mnist"), TrainConfig(steps=20, batch_size=32, val_every=20), out_dir=root / "fsq-run")
    return root


def test_an_fsq_run_reloads(fsq_run):
    model, meta = runs.load_model(fsq_run / "fsq-run")
    assert meta["kind"] == "fsq" and model.config.fsq.levels == [4, 4, 4] and model.codebook_sizes == [64]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("page", ["learn", "codebook"])
def test_learn_and_codebook_pages_show_an_fsq_model(fsq_run, monkeypatch, page):
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(fsq_run))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.query_params["model"] = "run:fsq-run"
    at.run()
    if page == "codebook":
        at.switch_page("views/codebook.py").run()
    assert not at.exception, [e.message for e in at.exception]
    text = " ".join(m.value for m in at.markdown)
    assert "Mentzer et al. 2023" in text
    if page == "learn":
        assert any("level (rounded)" in d.value.columns for d in at.dataframe)
        assert "FSQ (Mentzer et al. 2023)" in text  # the VQ / RQ / FSQ table
    else:
        assert not any(h.value.startswith("Where the codes start") for h in at.subheader)
