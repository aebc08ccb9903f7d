"""Atomic writes for the harness, with the machine's refusals (disk full, no permission) as one clear error.

The writing itself is ``idinvert.utils.atomic_write`` (temp file in the target's folder, rename, temp
file removed on any failure, mode ``0666 & ~umask``); this module turns an OSError of the environment
into an ``EnvironmentProblem`` naming the target, which the CLI prints as one line (exit 1).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from bench.errors import environment_error, is_environment_error
from idinvert.utils import atomic_write


@contextlib.contextmanager
def translated_os_errors(path: str | Path, doing: str = "write") -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if is_environment_error(exc):
            raise environment_error(exc, path, doing) from None
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; nothing is left behind when it fails."""
    with translated_os_errors(path):
        return atomic_write(path, lambda f: f.write(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))
