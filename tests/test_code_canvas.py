"""vqdemo.code_canvas: the canvas and its undo, palette tiles, blank/random maps; and vqdemo.prior's sampling
with codes, the prior's NLL figures. (A prior trained in the background is a job: tests/test_jobs*.py.)"""

from __future__ import annotations

import base64
import io
import json

import pytest
import torch
from PIL import Image

from ui.painter import _TILE
from vqdemo import files
from vqdemo.code_canvas import (
    Canvas,
    PaintError,
    blank_grid,
    brightest_code,
    code_frequencies,
    layer_legend,
    most_used,
    random_grid,
    tile_urls,
)
from vqdemo.models import ModelConfig, build_model
from vqdemo.prior import (
    PriorConfig,
    PriorError,
    build_prior,
    prior_figures,
    sample_images,
    sample_with_codes,
    uniform_bits_per_image,
)
from vqdemo.quantize import QuantizerConfig, ResidualConfig


def test_tile_urls_are_pngs_the_painter_accepts() -> None:
    tiles = torch.rand(5, 1, 28, 28)
    tiles[3] = 1.0
    urls = tile_urls(tiles)
    assert len(urls) == 5 and all(_TILE.fullmatch(u) for u in urls)
    png = Image.open(io.BytesIO(base64.b64decode(urls[3].split(",", 1)[1])))
    assert png.format == "PNG" and png.size == (28, 28) and png.getpixel((0, 0)) == 255
    assert Image.open(io.BytesIO(base64.b64decode(tile_urls(torch.rand(1, 3, 8, 8))[0][22:]))).mode == "RGB"
    assert brightest_code(tiles) == 3


def test_most_used_and_frequencies_per_depth() -> None:
    vq = torch.tensor([[[1, 1], [2, 1]], [[1, 0], [1, 1]]])  # (2, 2, 2)
    assert most_used(vq, [4]) == [1]
    freqs = code_frequencies(vq, [4])[0]
    assert torch.allclose(freqs, torch.tensor([1, 6, 1, 0], dtype=torch.float64) / 8)
    rq = torch.stack([vq, torch.full_like(vq, 3)], 1)  # (2, 2, 2, 2): depth 1 is all 3s
    assert most_used(rq, [4, 5]) == [1, 3]
    assert [len(p) for p in code_frequencies(rq, [4, 5])] == [4, 5]


def test_random_grid_is_seeded_and_follows_the_frequencies() -> None:
    probs = torch.tensor([0.0, 0.5, 0.5, 0.0])
    a, b = random_grid(probs, 7, 7, seed=3), random_grid(probs, 7, 7, seed=3)
    assert a == b and len(a) == 7 and len(a[0]) == 7
    assert {v for row in a for v in row} <= {1, 2}
    assert random_grid(probs, 7, 7, seed=4) != a


def test_canvas_paint_replace_undo() -> None:
    canvas = Canvas([blank_grid(2, 3, 3)], [8])
    assert not canvas.can_undo and canvas.shape == (3, 3)
    painted = blank_grid(2, 3, 3)
    painted[1] = [7, 7, 7]
    assert canvas.paint(0, painted) and canvas.layer(0) == painted
    assert not canvas.paint(0, painted)  # the same grid again is no stroke
    assert canvas.replace([blank_grid(5, 3, 3)])
    assert canvas.undo() and canvas.layer(0) == painted
    assert canvas.undo() and canvas.layer(0) == blank_grid(2, 3, 3)
    assert not canvas.undo()
    layer = canvas.layer(0)
    layer[0][0] = 6  # a copy: the canvas only changes through paint/replace
    assert canvas.layer(0)[0][0] == 2


def test_canvas_history_is_capped_and_codes_have_model_shapes() -> None:
    canvas = Canvas([blank_grid(0, 2, 2), blank_grid(1, 2, 2)], [4, 4], limit=3)
    for code in range(1, 4):
        canvas.paint(0, blank_grid(code, 2, 2))
        canvas.paint(1, blank_grid(code - 1, 2, 2))
    assert len(canvas.history) == 3
    assert canvas.codes("rq").shape == (1, 2, 2, 2) and canvas.codes("rq").dtype == torch.long
    vq = Canvas([blank_grid(3, 2, 5)], [4])
    assert vq.codes("vq").shape == (1, 2, 5) and int(vq.codes("vq").max()) == 3


@pytest.mark.parametrize(
    "layers",
    [
        [blank_grid(0, 2, 2)],  # one layer for a two-depth model
        [blank_grid(0, 2, 2), blank_grid(0, 3, 2)],  # ragged depths
        [blank_grid(0, 2, 2), blank_grid(4, 2, 2)],  # code 4 is outside K=4
        [blank_grid(0, 2, 2), [[0.5, 0], [0, 0]]],  # not ints
        [[[]], [[]]],
    ],
)
def test_canvas_rejects_what_does_not_fit(layers) -> None:
    with pytest.raises(PaintError):
        Canvas(layers, [4, 4])
    canvas = Canvas([blank_grid(0, 2, 2), blank_grid(0, 2, 2)], [4, 4])
    with pytest.raises(PaintError):
        canvas.replace(layers)
    assert not canvas.can_undo


def test_layer_legend_most_used_first() -> None:
    assert layer_legend([[3, 3, 1], [3, 1, 9]], top=2) == [(3, 3), (1, 2)]


def tiny_models(kind: str):
    cfg = ModelConfig(kind=kind, hidden=16, res_blocks=0, res_hidden=4, vq=QuantizerConfig(k=16, dim=8),
                      rq=ResidualConfig(depth=2, codebook_sizes=[8, 4]))
    torch.manual_seed(0)
    ae = build_model(cfg).eval()
    sizes = ae.codebook_sizes
    prior = build_prior(PriorConfig(kind="pixelcnn" if kind == "vq" else "rq", codebook_sizes=sizes,
                                    height=7, width=7, channels=8, layers=2, num_classes=10)).eval()
    return ae, prior


@pytest.mark.parametrize("kind", ["vq", "rq"])
def test_sample_with_codes_matches_sample_images(kind) -> None:
    ae, prior = tiny_models(kind)
    codes, images = sample_with_codes(ae, prior, 3, temperature=0.8, top_k=5, seed=2, label=4)
    assert codes.shape == ((3, 7, 7) if kind == "vq" else (3, 2, 7, 7))
    assert torch.equal(images, sample_images((ae, prior), 3, 0.8, 5, 2, 4))
    assert torch.equal(images, ae.decode_codes(codes))
    with pytest.raises(PriorError):
        sample_with_codes(ae, prior, 3, label=10)


def test_prior_figures_prefer_status_then_metrics(tmp_path) -> None:
    assert prior_figures(tmp_path) is None
    prior_dir = tmp_path / "prior"
    prior_dir.mkdir()
    row = {"type": "val", "step": 9, "bits_per_code": 3.0, "bits_per_image": 147.0, "uniform_bits_per_image": 294.0}
    files.atomic_write_text(prior_dir / "metrics.jsonl", "{\"type\": \"train\", \"step\": 9}\n" + json.dumps(row))
    assert prior_figures(tmp_path) == {"bits_per_code": 3.0, "bits_per_image": 147.0,
                                       "uniform_bits_per_image": 294.0, "step": 9}
    files.write_json(prior_dir / "status.json", {"best": {**row, "bits_per_code": 2.5, "step": 5}})
    assert prior_figures(tmp_path)["bits_per_code"] == 2.5 and prior_figures(tmp_path)["step"] == 5
    files.write_json(prior_dir / "status.json", {"best": {"bits_per_code": float("nan")}})
    assert prior_figures(tmp_path)["step"] == 9  # a bad status falls back to the metrics
    assert uniform_bits_per_image([64], 7, 7) == 6 * 49
    assert uniform_bits_per_image([8, 4], 2, 2) == (3 + 2) * 4
