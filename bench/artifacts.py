"""Files a run writes under the results directory: PNGs and safe names (atomic writes: idinvert.utils)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from idinvert.utils import atomic_save, atomic_write

__all__ = ["safe_name", "save_atomic", "save_png"]

save_atomic = atomic_save


def safe_name(text: str) -> str:
    """A file-name-safe rendering of an image id (the id itself is kept verbatim in the store)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:120]


def save_png(image: torch.Tensor, path: Path) -> None:
    """image: [3, H, W] in [-1, 1] -> 8-bit RGB PNG, written atomically."""
    from PIL import Image

    arr = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    atomic_write(path, lambda f: Image.fromarray(arr.permute(1, 2, 0).numpy()).save(f, format="PNG"))
