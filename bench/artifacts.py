"""Files a run writes under the results directory: atomic saves, PNGs, safe names."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch


def safe_name(text: str) -> str:
    """A file-name-safe rendering of an image id (the id itself is kept verbatim in the store)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:120]


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_png(image: torch.Tensor, path: Path) -> None:
    """image: [3, H, W] in [-1, 1] -> 8-bit RGB PNG, written atomically."""
    from PIL import Image

    arr = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}.png")
    Image.fromarray(arr.permute(1, 2, 0).numpy()).save(tmp)
    os.replace(tmp, path)
