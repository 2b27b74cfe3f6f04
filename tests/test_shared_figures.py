"""Figures shared by every session: one build per key, never a stale or foreign figure."""

from __future__ import annotations

import threading
import time

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from ui import charts, shared
from ui import figures as fg


def test_same_arguments_share_one_figure_and_different_ones_do_not():
    counts = np.array([5.0, 0.0, 3.0, 1.0])
    a = fg.distance_bars(counts, 2, 300)
    assert fg.distance_bars(counts.copy(), 2, 300) is a               # equal values, another array: the same figure
    assert fg.distance_bars(np.array([5.0, 0.0, 3.0, 2.0]), 2, 300) is not a  # one count differs: its own figure
    assert fg.distance_bars(counts, 2, 301) is not a
    assert fg.code_maps([np.zeros((2, 2), int)], 4) is not fg.code_maps([np.zeros((2, 2), int) + 1], 4)
    rows = [{"step": 1, "type": "val", "psnr": 20.0}]
    assert charts.metric_curve(rows, "psnr", "PSNR", "dB") is charts.metric_curve([dict(rows[0])], "psnr", "PSNR", "dB")


def test_the_digest_tells_dtypes_shapes_and_tensors_apart():
    assert shared.digest(np.zeros(4)) != shared.digest(np.zeros((2, 2)))
    assert shared.digest(np.zeros(4, np.float32)) != shared.digest(np.zeros(4, np.float64))
    assert shared.digest(torch.arange(3)) == shared.digest(np.arange(3))
    assert shared.digest([1, 2]) != shared.digest((1, 2)) and shared.digest("1") != shared.digest(1)
    assert shared.digest({"a": 1, "b": 2}) == shared.digest({"b": 2, "a": 1})
    with pytest.raises(shared.Unkeyable):
        shared.digest(lambda: 0)


def test_presenter_mode_gets_its_own_figure(monkeypatch):
    counts = np.array([1.0, 2.0, 3.0])
    normal = fg.distance_bars(counts, 1, 250)
    monkeypatch.setattr(shared.theme, "presenter", lambda: True)
    monkeypatch.setattr(fg.theme, "presenter", lambda: True)
    big = fg.distance_bars(counts, 1, 250)
    assert big is not normal and big.layout.xaxis.tickfont.size > normal.layout.xaxis.tickfont.size


def test_an_unkeyable_argument_builds_for_this_call_alone():
    calls = []

    @shared.shared
    def build(fn) -> go.Figure:
        calls.append(fn)
        return go.Figure()

    build(len)
    build(len)
    assert len(calls) == 2


def test_many_sessions_asking_at_once_build_once():
    cache = shared.SharedCache(size=4)
    builds = []

    def build() -> go.Figure:
        builds.append(1)
        time.sleep(0.2)   # the first builder is still at work while the others ask
        return go.Figure()

    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("k", build))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and all(g is got[0] for g in got)


def test_a_failed_build_is_not_stored_and_the_cache_stays_bounded():
    cache = shared.SharedCache(size=3)

    def fail() -> go.Figure:
        raise ValueError("no")

    with pytest.raises(ValueError):
        cache.get("bad", fail)
    assert cache.get("bad", go.Figure) is not None
    for i in range(10):
        cache.get(i, go.Figure)
    assert len(cache) == 3


def test_a_builder_inside_a_named_figure_is_stored_once_under_the_name():
    rows = [{"step": s, "type": "val", "psnr": 20.0 + s} for s in range(3)]
    before = len(shared.CACHE)
    fig = shared.figure(("job", "j-named", 3, "psnr"), lambda: charts.metric_curve(rows, "psnr", "PSNR", "dB"))
    assert len(shared.CACHE) == before + 1                                    # not a second copy under a digest
    assert shared.figure(("job", "j-named", 3, "psnr"), lambda: None) is fig
    assert charts.metric_curve(rows, "psnr", "PSNR", "dB") is not fig          # outside a name: keyed by its digest
