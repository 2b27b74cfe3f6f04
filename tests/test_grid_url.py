"""vqdemo.grid_url: a painted canvas survives the trip through the URL; text that does not fit is refused."""

import pytest

from vqdemo import grid_url


def test_a_vq_map_is_one_character_per_cell_and_round_trips():
    grid = [[(r * 7 + c) % 64 for c in range(7)] for r in range(7)]
    text = grid_url.encode([grid], [64])
    assert len(text) == 49
    assert grid_url.decode(text, [64], 7, 7) == [grid]


def test_rq_depths_and_large_codebooks_round_trip():
    layers = [[[511, 0], [3, 200]], [[1, 2], [3, 4]]]
    text = grid_url.encode(layers, [512, 8])
    assert text.count(".") == 1 and len(text) == 2 * 4 + 1 + 4
    assert grid_url.decode(text, [512, 8], 2, 2) == layers


@pytest.mark.parametrize("text", ["", "A" * 48, "A" * 49 + ".", "A" * 48 + "!", "A" * 48 + "/", None, 5])
def test_text_that_does_not_fit_the_model_is_ignored(text):
    assert grid_url.decode(text, [64], 7, 7) is None


def test_ids_beyond_k_are_refused_both_ways():
    assert grid_url.decode("J" * 4, [8], 2, 2) is None          # J = 9 >= K = 8
    with pytest.raises(ValueError):
        grid_url.encode([[[8, 0], [0, 0]]], [8])
