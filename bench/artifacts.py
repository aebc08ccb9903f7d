"""Files a run writes under the results directory: atomic saves, PNGs, safe names."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch

from bench.fileio import translated_os_errors, write_bytes_atomic

__all__ = ["safe_name", "save_atomic", "save_png"]


def safe_name(text: str) -> str:
    """A file-name-safe rendering of an image id (the id itself is kept verbatim in the store)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:120]


def save_atomic(obj: Any, path: Path) -> Path:
    """torch.save to memory, then an atomic write: a reader never sees half a file, and a failed write
    (disk full) leaves no temp file and raises an EnvironmentProblem naming ``path``."""
    buf = io.BytesIO()
    with translated_os_errors(path):
        torch.save(obj, buf)
    return write_bytes_atomic(path, buf.getvalue())


def save_png(image: torch.Tensor, path: Path) -> Path:
    """image: [3, H, W] in [-1, 1] -> 8-bit RGB PNG, written atomically."""
    from PIL import Image

    arr = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return write_bytes_atomic(path, buf.getvalue())
