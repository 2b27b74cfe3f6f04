"""A painted code map as short URL text, so a canvas can be shared like every other page's settings.

One character per code id when K <= 64 (two when K <= 4096), from the URL-safe base-64 alphabet, row by
row; depths (RQ) joined by ".". A 7x7 VQ map is 49 characters; a depth-4 RQ map 199.
"""

from __future__ import annotations

import math

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
MAX_K = 64 ** 2

Grid = list[list[int]]


def width(k: int) -> int:
    """Characters per code id for a codebook of k codes."""
    return max(1, math.ceil(math.log(k, 64))) if k > 1 else 1


def encode(layers: list[Grid], sizes: list[int]) -> str:
    """Layers (one (h, w) grid of ids per depth) -> text. Raises ValueError on ids outside [0, K)."""
    parts = []
    for grid, k in zip(layers, sizes, strict=True):
        if not 2 <= k <= MAX_K:
            raise ValueError(f"codebook size {k} cannot go into a URL (at most {MAX_K})")
        n = width(k)
        out = []
        for row in grid:
            for v in row:
                if not 0 <= int(v) < k:
                    raise ValueError(f"code id {v} is outside [0, {k})")
                out.append("".join(ALPHABET[(int(v) // 64 ** p) % 64] for p in reversed(range(n))))
        parts.append("".join(out))
    return ".".join(parts)


def decode(text: str, sizes: list[int], h: int, w: int) -> list[Grid] | None:
    """Text -> layers, or None if it does not fit this model (wrong depth, length, characters or ids)."""
    if not isinstance(text, str) or len(text) > 8 * 64 * 64:
        return None
    parts = text.split(".")
    if len(parts) != len(sizes):
        return None
    layers = []
    for part, k in zip(parts, sizes):
        n = width(k)
        if len(part) != h * w * n or any(c not in _INDEX for c in part):
            return None
        ids = [sum(_INDEX[c] * 64 ** p for c, p in zip(part[i:i + n], reversed(range(n))))
               for i in range(0, len(part), n)]
        if any(v >= k for v in ids):
            return None
        layers.append([ids[r * w:(r + 1) * w] for r in range(h)])
    return layers
