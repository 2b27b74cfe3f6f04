"""Text alternatives (ui/describe.py) are computed from the data: they change when the picture does."""

import numpy as np
import torch

from ui import describe


def test_code_map_says_its_size_use_and_most_used_codes():
    codes = np.array([[3, 3, 3], [3, 7, 7], [1, 7, 3]])
    said = describe.code_map(codes, 64)
    assert said == "3x3 code map using 3 of 64 codes; most used: #3 (5), #7 (3), #1 (1)"
    assert describe.code_map(np.zeros((2, 3, 3), int), 8).startswith("2 3x3 code maps using 1 of 8 codes")


def test_usage_says_used_codes_and_perplexity():
    assert describe.usage(torch.tensor([5, 5, 0, 0])).startswith("2 of 4 codes used (2 dead), perplexity 2.0")
    assert "perplexity 4.0" in describe.usage(np.ones(4))


def test_pictures_tiles_and_labels():
    assert describe.image("reconstruction of validation image 3", 24.06) == \
        "reconstruction of validation image 3, PSNR 24.1 dB"
    assert describe.image("x", float("nan")) == "x"
    assert describe.grid(16, "samples", 20.0) == "grid of 16 samples, PSNR 20.0 dB"   # of the set (psnr_of)
    assert describe.tile(5, 0) == "code #5 decoded on its own; dead: no validation vectors use it"
    assert describe.tile(5, 12, "cells") == "code #5 decoded on its own; used by 12 cells"
    assert describe.label(["zero", "one"], torch.tensor([1, 0]), 0) == " (one)"
    assert describe.label(None, None, 0) == ""
    said = describe.channels(torch.arange(8.0).reshape(2, 2, 2), "z_e")
    assert said == "z_e: 2 channels of 2x2 shown side by side, values from 0.00 to 7.00"
