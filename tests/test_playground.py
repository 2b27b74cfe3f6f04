"""vqdemo.playground: the 2-D toy that the Playground page plays, and its packed frames."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch

from helpers import open_page
from vqdemo import playground as pg
from vqdemo.fsq import FiniteScalarQuantizer


@pytest.mark.parametrize("name", pg.DATASETS)
def test_toy_data_is_2d_and_in_view(name):
    x = pg.toy_data(name, 500, seed=1)
    assert x.shape == (500, 2)
    assert x.abs().max() < 1.5
    assert torch.equal(x, pg.toy_data(name, 500, seed=1))


def test_the_playground_fsq_is_the_librarys_and_its_cells_are_its_rounding_cells():
    """The picture must be the real FSQ: the toy rounds with vqdemo.fsq's quantiser, each point's code is the one
    it rounded to, and the boxes drawn from the cell edges give exactly those codes (not the nearest grid point)."""
    cfg = pg.PlaygroundConfig(n=400, k=16, steps=10, every=5, quantizer="fsq")
    model = pg.ToyAutoencoder(cfg)
    assert isinstance(model.fsq, FiniteScalarQuantizer) and model.fsq.cfg.levels == [4, 4]
    f = pg.run(cfg)
    z = torch.from_numpy(f.points[-1])
    real = model.fsq(z[:, :, None, None]).codes.flatten().numpy()
    assert (f.ids[-1] == real).all()
    boxes = sum(np.searchsorted(e, f.points[-1][:, c]) * (1 if c == 0 else len(f.edges[0]) + 1)
                for c, e in enumerate(f.edges))
    assert (boxes == real).all()
    nearest = ((f.points[-1][:, None] - f.codes[-1][None]) ** 2).sum(-1).argmin(1)
    assert (nearest != real).any() or len(set(real)) == 1   # the nearest grid point is not what FSQ picks


def test_the_smallest_playground_grid_has_three_levels_per_axis():
    assert pg.fsq_levels(4) == 3


def test_run_records_frames_of_the_latent_plane():
    cfg = pg.PlaygroundConfig(n=300, k=16, steps=20, every=5)
    f = pg.run(cfg)
    assert f.points.shape == (5, 300, 2) and f.codes.shape == (5, 16, 2) and f.counts.shape == (5, 16)
    assert f.step.tolist() == [0, 5, 10, 15, 20]
    assert (f.counts.sum(1) == 300).all()
    assert f.loss[-1] < f.loss[0]


def test_far_init_strands_codes_and_restarts_bring_them_back():
    """The picture the page exists for: N(0, 1) codes learned by gradient stay dead far from the data;
    codes started on the data, updated by EMA and restarted, are all in use."""
    base = dict(n=1000, k=32, steps=200, every=50)
    collapsed = pg.run(pg.PlaygroundConfig(**base, init="normal", codebook="grad", restart_dead=False))
    healthy = pg.run(pg.PlaygroundConfig(**base, init="data", codebook="ema", restart_dead=True))
    assert collapsed.used[-1] < 32
    assert healthy.used[-1] > collapsed.used[-1]


def test_fsq_codes_are_fixed():
    f = pg.run(pg.PlaygroundConfig(n=200, k=16, steps=10, every=5, quantizer="fsq"))
    assert f.codes.shape[1] == 16
    assert np.allclose(f.codes[0], f.codes[-1])


def test_pack_is_compact_and_decodes_to_the_frames():
    f = pg.run(pg.PlaygroundConfig(n=400, k=8, steps=10, every=5))
    p = pg.pack(f)
    pts = np.frombuffer(base64.b64decode(p["points"]), np.uint8).reshape(p["frames"], p["n"], 2)
    x0, x1, y0, y1 = p["box"]
    back = x0 + pts[..., 0] / 255 * (x1 - x0)
    inside = (f.points[..., 0] >= x0) & (f.points[..., 0] <= x1)      # the box leaves out the farthest 0.2 %
    assert inside.mean() > 0.99
    assert np.abs(back - f.points[..., 0])[inside].max() <= (x1 - x0) / 255 / 2 + 1e-6
    counts = np.frombuffer(base64.b64decode(p["counts"]), "<u2").reshape(p["frames"], p["k"])
    assert (counts == f.counts).all()


def test_fsq_pack_carries_each_points_code_and_the_cell_edges():
    f = pg.run(pg.PlaygroundConfig(n=300, k=16, steps=10, every=5, quantizer="fsq"))
    p = pg.pack(f)
    ids = np.frombuffer(base64.b64decode(p["ids"]), "<u2").reshape(p["frames"], p["n"])
    assert (ids == f.ids).all() and [len(e) for e in p["edges"]] == [3, 3]
    assert "ids" not in pg.pack(pg.run(pg.PlaygroundConfig(n=300, k=16, steps=10, every=5)))


@pytest.mark.integration
def test_the_playground_page_draws_with_its_settings_from_the_url():
    at = open_page("playground", {"beta": "0.5", "k": "16", "steps": "200"})
    assert at.slider(key="pg_beta").value == 0.5
    assert at.select_slider(key="pg_k").value == 16
    assert at.caption, "the page states what the run shows"
