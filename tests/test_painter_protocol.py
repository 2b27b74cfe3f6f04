"""The grid painter's Python side, without a browser: which grid a rerun returns (strokes against the codes
they were painted on), malformed component state, and the inputs it refuses."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from ui.painter import (
    PainterInputError,
    _check_codes,
    _check_look,
    _Memo,
    _read_stroke,
    _resolve,
    _rev,
    _Stroke,
)

ZEROS = [[0, 0], [0, 0]]
PAINTED = [[3, 0], [0, 0]]


def test_resolve_keeps_a_stroke_painted_on_unchanged_codes() -> None:
    stroke = _Stroke(PAINTED, base=_rev(ZEROS), seq=1)
    grid, memo = _resolve(ZEROS, _rev(ZEROS), stroke, _Memo())
    assert grid == PAINTED
    grid, memo = _resolve(ZEROS, _rev(ZEROS), stroke, memo)  # an unrelated rerun
    assert grid == PAINTED


def test_resolve_accepts_strokes_on_top_of_a_fed_back_grid() -> None:
    first = _Stroke(PAINTED, base=_rev(ZEROS), seq=1)
    grid, memo = _resolve(ZEROS, _rev(ZEROS), first, _Memo())
    # The app stored the result; the browser painted again before it saw that rerun (same base).
    second = _Stroke([[3, 4], [0, 0]], base=_rev(ZEROS), seq=2)
    grid, memo = _resolve(grid, _rev(grid), second, memo)
    assert grid == [[3, 4], [0, 0]]


def test_resolve_drops_a_stroke_once_codes_change_elsewhere() -> None:
    stroke = _Stroke(PAINTED, base=_rev(ZEROS), seq=1)
    grid, memo = _resolve(ZEROS, _rev(ZEROS), stroke, _Memo())
    fresh = [[1, 1], [1, 1]]  # e.g. a new image was encoded
    grid, memo = _resolve(fresh, _rev(fresh), stroke, memo)
    assert grid == fresh
    grid, memo = _resolve(fresh, _rev(fresh), stroke, memo)  # and it does not come back later
    assert grid == fresh
    grid, memo = _resolve(ZEROS, _rev(ZEROS), stroke, memo)  # not even when the old codes return
    assert grid == ZEROS


def test_read_stroke_rejects_malformed_state_and_clamps_ids() -> None:
    assert _read_stroke(None, 2, 2, 4) is None
    assert _read_stroke({"grid": [[0, 0]], "base": "x", "seq": 1}, 2, 2, 4) is None
    assert _read_stroke({"grid": [[0, "a"], [0, 0]], "base": "x", "seq": 1}, 2, 2, 4) is None
    assert _read_stroke({"grid": ZEROS, "base": 5, "seq": 1}, 2, 2, 4) is None
    stroke = _read_stroke({"grid": [[9, -1], [2, 3]], "base": "x", "seq": 1}, 2, 2, 4)
    assert stroke is not None and stroke.grid == [[3, 0], [2, 3]]


@pytest.mark.parametrize("codes", [[], [[]], [[0, 1], [2]], [[0, 1.5]], "0101", [[True, 0]]])
def test_bad_codes_raise_a_clear_error(codes) -> None:
    with pytest.raises(PainterInputError):
        _check_codes(codes)


def test_bad_looks_raise_a_clear_error_and_k_follows_the_inputs() -> None:
    with pytest.raises(PainterInputError):
        _check_look(ZEROS, ["<img src=x onerror=alert(1)>"], None)
    with pytest.raises(PainterInputError):
        _check_look(ZEROS, None, ["red; background: url(x)"])
    with pytest.raises(PainterInputError):
        _check_look(ZEROS, ["data:image/png;base64,AAAA"], ["red", "blue"])
    assert _check_look([[0, 6]], None, None)[0] == 7
    assert _check_look([[0, 6]], None, ["red", "blue"])[0] == 2


def _painter_page() -> None:
    import streamlit as st

    from ui.painter import grid_painter

    grid = grid_painter([[0, 1], [2, 9]], colors=["red", "blue", "green"], key="p")
    st.markdown(f"GRID={grid}")


def _ragged_painter_page() -> None:
    from ui.painter import grid_painter

    grid_painter([[0, 1], [2]], key="p")


@pytest.mark.integration
def test_painter_runs_under_apptest_and_clamps_ids() -> None:
    at = AppTest.from_function(_painter_page).run(timeout=60)
    assert not at.exception
    assert at.markdown[0].value == "GRID=[[0, 1], [2, 2]]"
    at = AppTest.from_function(_ragged_painter_page).run(timeout=60)
    assert "rectangular" in at.exception[0].message
