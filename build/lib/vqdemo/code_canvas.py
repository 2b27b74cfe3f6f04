"""What the Paint page computes: a student's own code canvas with undo, palette tiles as PNG data URLs,
sensible blank and random code maps. (Sampling with the codes kept and the prior's NLL figures, for the
Sample page, are in `vqdemo.prior`.)

No streamlit here: the pages hold the widgets, this file holds the state and the math.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .analysis import usage
from .images import png_data_url, to_uint8

Grid = list[list[int]]  # h rows of w code ids


class PaintError(ValueError):
    """A code map that does not fit the model being painted; the message says what was expected."""


def tile_urls(tiles: Tensor) -> list[str]:
    """(K, C, H, W) images in [0, 1] -> K `data:image/png;base64,...` URLs for the grid painter's palette."""
    return [png_data_url(to_uint8(tile)) for tile in tiles]


def brightest_code(tiles: Tensor) -> int:
    """The code whose decoded tile is brightest: on MNIST the "white ink" a student wants to paint with."""
    return int(tiles.flatten(1).mean(1).argmax())


def as_stack(codes: Tensor) -> Tensor:
    """Code maps (N, h, w) (VQ) or (N, D, h, w) (RQ) -> (N, D, h, w), so both kinds are handled alike."""
    return codes[:, None] if codes.dim() == 3 else codes


def most_used(codes: Tensor, sizes: list[int]) -> list[int]:
    """The most frequent code at each depth of (N, [D,] h, w) maps: the "background" of a dataset."""
    stack = as_stack(codes)
    return [int(usage(stack[:, d], k).argmax()) for d, k in enumerate(sizes)]


def code_frequencies(codes: Tensor, sizes: list[int]) -> list[Tensor]:
    """Per depth, how often each code appears, as probabilities (K_d,)."""
    stack = as_stack(codes)
    return [usage(stack[:, d], k).double() / stack[:, d].numel() for d, k in enumerate(sizes)]


def blank_grid(code: int, h: int, w: int) -> Grid:
    return [[int(code)] * w for _ in range(h)]


def random_grid(probs: Tensor, h: int, w: int, seed: int) -> Grid:
    """h x w codes drawn independently from `probs` (K,): the real code frequencies, but no structure."""
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(probs.double(), h * w, replacement=True, generator=g).reshape(h, w).tolist()


class Canvas:
    """One student's code stack (D layers of h x w ids) with an undo history of whole stacks.

    D is 1 for a VQ model and the RQ depth otherwise. It is plain lists, so it lives in a session's
    state and never in a shared cache.
    """

    def __init__(self, layers: list[Grid], sizes: list[int], limit: int = 50):
        self.sizes = list(sizes)
        self.limit = limit
        self.layers = self._checked(layers)
        self.history: list[list[Grid]] = []

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.layers[0]), len(self.layers[0][0])

    @property
    def can_undo(self) -> bool:
        return bool(self.history)

    def layer(self, d: int) -> Grid:
        return [row[:] for row in self.layers[d]]

    def _checked(self, layers: list[Grid]) -> list[Grid]:
        if len(layers) != len(self.sizes):
            raise PaintError(f"expected {len(self.sizes)} layers of codes (one per depth), got {len(layers)}")
        arr = [np.asarray(layer) for layer in layers]
        shape = arr[0].shape
        for d, (a, k) in enumerate(zip(arr, self.sizes)):
            if a.ndim != 2 or a.shape != shape or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
                raise PaintError(f"layer {d} must be a non-empty h x w grid of ints shaped like layer 0 {shape}, "
                                 f"got {a.shape}")
            if a.min() < 0 or a.max() >= k:
                raise PaintError(f"layer {d} holds codes outside [0, {k}): {int(a.min())}..{int(a.max())}")
        return [a.astype(int).tolist() for a in arr]

    def _push(self) -> None:
        self.history.append([self.layer(d) for d in range(self.depth)])
        del self.history[: -self.limit]

    def paint(self, d: int, grid: Grid) -> bool:
        """Replace layer d with a painted grid; True (and one undo step) if anything changed."""
        layers = [self.layer(i) for i in range(self.depth)]
        layers[d] = grid
        return self.replace(layers)

    def replace(self, layers: list[Grid]) -> bool:
        """A new whole stack (reset, load an image, random fill); undoable like a stroke."""
        layers = self._checked(layers)
        if layers == self.layers:
            return False
        self._push()
        self.layers = layers
        return True

    def undo(self) -> bool:
        if not self.history:
            return False
        self.layers = self.history.pop()
        return True

    def codes(self, kind: str) -> Tensor:
        """(1, h, w) for a VQ model, (1, D, h, w) for RQ: what `decode_codes` takes."""
        stack = torch.tensor(self.layers, dtype=torch.long)[None]  # (1, D, h, w)
        return stack[:, 0] if kind == "vq" else stack


def layer_legend(grid: Grid, top: int = 8) -> list[tuple[int, int]]:
    """The codes a grid uses most, as (code, count), most used first, at most `top`."""
    ids, counts = np.unique(np.asarray(grid), return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top]
    return [(int(ids[i]), int(counts[i])) for i in order]
