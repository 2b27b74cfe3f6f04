"""Pictures and chart dicts shared by every session (ui/shared.py, ui/state.image): encoded once for the whole server,
never stale after a checkpoint is rewritten, never another student's."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from PIL import Image
from plotly.basedatatypes import BaseFigure

from helpers import open_page, shipped, tiny_config
from ui import shared, state, theme
from vqdemo import runs


class Where:
    """Stands for st or a column: records what `image` was asked to draw."""

    def __init__(self):
        self.drawn: list[tuple[object, dict]] = []

    def image(self, pic, **kwargs) -> None:
        self.drawn.append((pic, kwargs))


@pytest.fixture
def encodes(monkeypatch) -> list[int]:
    """Fresh shared stores for this test, and a list that grows by one per PNG encoded and per figure dict made."""
    made: list[int] = []
    monkeypatch.setattr(shared, "PICTURES", shared.SharedCache(shared.MAX_PNG_BYTES, weigh=len))
    monkeypatch.setattr(shared, "CACHE", shared.SharedCache(shared.MAX_FIGURES))
    plain_png, plain_dict = shared.png_bytes, BaseFigure.to_dict

    def png(image: np.ndarray) -> bytes:
        made.append(1)
        return plain_png(image)

    def to_dict(self) -> dict:
        made.append(2)
        return plain_dict(self)

    monkeypatch.setattr(shared, "png_bytes", png)
    monkeypatch.setattr(BaseFigure, "to_dict", to_dict)
    return made


def test_the_same_pixels_are_encoded_once_and_other_pixels_or_sizes_never_reuse_them(encodes, monkeypatch):
    x = torch.rand(1, 8, 8)
    a, b = Where(), Where()
    state.image(a, x, 64)
    state.image(b, x.clone(), 64)                       # another session, the same pixels
    assert encodes.count(1) == 1 and a.drawn[0][0] is b.drawn[0][0]
    assert a.drawn[0][1]["output_format"] == "PNG"      # bytes Streamlit passes on as they are
    state.image(b, (x + 0.01).clamp(0, 1), 64)          # one pixel level differs: its own picture
    assert encodes.count(1) == 2 and b.drawn[1][0] != b.drawn[0][0]
    monkeypatch.setattr(theme, "presenter", lambda: True)
    state.image(b, x, 64)                               # presenter mode draws it larger: never the small one
    assert encodes.count(1) == 3
    assert Image.open(io.BytesIO(b.drawn[2][0])).width > Image.open(io.BytesIO(a.drawn[0][0])).width
    state.image(b, torch.rand(2, 1, 8, 8), 64)          # a row of images: one picture each
    assert encodes.count(1) == 5 and len(b.drawn[3][0]) == 2


def test_a_shared_figure_makes_its_dict_once_and_the_picture_store_stays_bounded(encodes):
    fig = shared.figure("k", lambda: go.Figure(go.Bar(y=[1, 2])))
    assert fig.to_dict() is fig.to_dict() and encodes.count(2) == 1
    assert go.Figure(go.Bar(y=[1])).to_dict() is not None and encodes.count(2) == 2   # a session's own: not kept
    store = shared.SharedCache(1000, weigh=len)
    for i in range(20):
        store.get(i, lambda: bytes(300))
    assert store.weight <= 1000 and len(store) == 3


@pytest.mark.integration
def test_a_second_student_on_learn_reuses_every_picture_and_chart_dict(encodes):
    shipped("mnist-vq")
    open_page("learn", {"model": "shipped:mnist-vq"})
    first = len(encodes)
    assert encodes.count(1) >= 5 and encodes.count(2) >= 5, encodes   # the pipeline's pictures and charts
    open_page("learn", {"model": "shipped:mnist-vq"})                    # a fresh session: another student
    assert len(encodes) == first


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from vqdemo.data import DataConfig
    from vqdemo.fit import fit
    from vqdemo.trainer import TrainConfig

    out = tmp_path_factory.mktemp("shared") / "20260101-000000-mine00"
    fit(tiny_config(), DataConfig(name="digits", max_images=64), TrainConfig(steps=1, batch_size=4), out_dir=out)
    return out


def rewrite(run: Path, shift: float) -> None:
    """Retrain in place, as far as the pages can tell: the decoder's last bias moved by `shift` (every pixel of a
    reconstruction brighter by that much), saved atomically, a later mtime."""
    model, meta = runs.load_model(run)
    with torch.no_grad():
        list(model.decoder.parameters())[-1].add_(shift)
    runs.save_weights(run / runs.WEIGHTS, model, meta)
    later = (run / runs.WEIGHTS).stat().st_mtime + 10
    os.utime(run / runs.WEIGHTS, (later, later))


def pictures(run_id: str) -> tuple[list[str], list[str]]:
    """(originals, reconstructions) of the Reconstruct page in a fresh session, as the media URLs Streamlit serves
    them from (its file id is a hash of the bytes: equal URLs, equal pictures)."""
    at = open_page("reconstruct", {"model": f"run:{run_id}", "n": 4})
    shown = [im.proto.imgs[0] for im in at.image]
    originals = [i.url for i in shown if i.caption.startswith("#")]
    rebuilt = [i.url for i in shown if i.caption.endswith(" dB")]
    assert len(originals) == len(rebuilt) == 4, [i.caption for i in shown]
    return originals, rebuilt


@pytest.mark.integration
def test_a_rewritten_checkpoint_shows_new_pictures_and_two_students_runs_share_none(tmp_path, tiny_run, encodes):
    root = Path(os.environ["VQDEMO_RUNS_DIR"])
    mine, theirs = root / tiny_run.name, root / "20260101-000001-them00"
    shutil.copytree(tiny_run, mine)
    shutil.copytree(tiny_run, theirs)
    rewrite(theirs, 0.6)                                    # another student's run: other weights
    originals, before = pictures(mine.name)
    assert pictures(mine.name) == (originals, before)       # a second session reuses them
    rewrite(mine, 0.3)
    same_originals, after = pictures(mine.name)
    assert same_originals == originals                      # the data did not change
    assert not set(after) & set(before)                     # every reconstruction is the new model's
    _, other = pictures(theirs.name)
    assert not set(other) & set(after) and not set(other) & set(before)
