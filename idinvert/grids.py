"""Image strips and grids for figures: tiles [3, H, W] in [-1, 1] laid out with white gaps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from typing import Sequence


def image_row(tiles: Sequence[Tensor], min_tile: int = 64, gap: int = 2) -> Tensor:
    """Tiles side by side, each nearest-upscaled to at least ``min_tile`` px -> [3, H', W']."""
    side = tiles[0].shape[-1]
    scale = max(1, -(-min_tile // side))
    big = [F.interpolate(t[None].float().cpu(), scale_factor=scale, mode="nearest")[0] if scale > 1
           else t.float().cpu() for t in tiles]
    return _join(big, gap, dim=2)


def stack_rows(rows: Sequence[Tensor], gap: int = 2) -> Tensor:
    """Rows [3, h, W] (equal widths) one above the other -> [3, H', W]."""
    return _join(list(rows), gap, dim=1)


def _join(parts: list[Tensor], gap: int, dim: int) -> Tensor:
    shape = list(parts[0].shape)
    shape[dim] = gap
    sep = torch.ones(shape)  # white in [-1, 1]
    out: list[Tensor] = []
    for i, p in enumerate(parts):
        if i:
            out.append(sep)
        out.append(p)
    return torch.cat(out, dim=dim)
