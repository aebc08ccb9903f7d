"""A labelled PNG grid of synthetic faces, for a human to check that the attributes look right."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from idinvert.domains.synthetic_faces import ATTRIBUTES, SyntheticFaces

# Short tags, one per attribute value, drawn under each tile (ATTRIBUTES order: 0 / 1).
_TAGS = {
    "age": ("young", "old"),
    "gender": ("short", "long"),
    "eyeglasses": ("", "glasses"),
    "pose": ("<left", "right>"),
    "expression": ("neutral", "smile"),
}


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[n, 3, H, W] in [-1, 1] -> uint8 [n, H, W, 3]."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


def save_preview(path: str | Path, n: int = 64, seed: int = 0, resolution: int = 32,
                 scale: int = 4, columns: int = 8) -> Path:
    """Write a grid of n rendered samples (nearest-upscaled by `scale`), each labelled with its attributes.

    Returns the written path.
    """
    if n < 1:
        raise ValueError(f"save_preview: n must be >= 1, got {n}")
    images, labels = SyntheticFaces(resolution).sample(n, seed)
    tiles = to_uint8(images).numpy()
    font = ImageFont.load_default()
    tile = resolution * scale
    line_h = 11
    text_h = line_h * 3 + 4
    pad = 4
    rows = math.ceil(n / columns)
    sheet = Image.new("RGB", (columns * (tile + pad) + pad, rows * (tile + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        r, c = divmod(i, columns)
        x0, y0 = pad + c * (tile + pad), pad + r * (tile + text_h + pad)
        face = Image.fromarray(tiles[i]).resize((tile, tile), Image.NEAREST)
        sheet.paste(face, (x0, y0))
        tags = [_TAGS[a][int(v)] for a, v in zip(ATTRIBUTES, labels[i].tolist())]
        lines = [f"{tags[0]}, {tags[1]}", f"{tags[3]}, {tags[4]}", tags[2]]
        for k, line in enumerate(lines):
            draw.text((x0 + 1, y0 + tile + 2 + k * line_h), line, fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
