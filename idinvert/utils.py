"""Small helpers every layer uses: the device of a module, freezing, file hashing, atomic writes and
"did you mean" suggestions. One home each, so that no module keeps its own copy.

Imports only the standard library at import time (torch when a torch helper is called), so that torch-free
readers such as the report can use it."""

from __future__ import annotations

import difflib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["device_of", "freeze", "file_sha256", "atomic_write", "atomic_save", "atomic_write_text",
           "suggest"]


def device_of(module: Any) -> torch.device:
    """The device of a module's first parameter or buffer; CPU for a module that holds neither."""
    import torch

    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


def freeze(*modules: Optional["nn.Module"]) -> None:
    """Eval mode and no gradients for each module given (None entries are skipped)."""
    for m in modules:
        if m is not None:
            m.eval()
            m.requires_grad_(False)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb",
                 fsync: bool = False) -> Path:
    """Call ``write(file)`` on a temporary file in ``path``'s folder, then rename it over ``path``: a
    reader never sees half a file and a killed process never leaves one under the real name. The file is
    readable as ``open()`` would make it, ``0666 & ~umask`` (mkstemp would make it 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it, then put it back
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: str | os.PathLike, fsync: bool = False) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f), "wb", fsync)


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """A text file written atomically."""
    return atomic_write(path, lambda f: f.write(text), "w")


def suggest(name: str, known: Iterable[str], n: int = 3, cutoff: float = 0.5) -> str:
    """``"; did you mean 'a' or 'b'?"`` for the known names close to ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=n, cutoff=cutoff)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
