"""On-disk cache of real-image features (and statistics) of real image sets, keyed by a content hash.

The key is a content hash of everything that determines the numbers: the image set's fingerprint, the
feature extractor's id (which includes a hash of its weights), and the preprocessing, plus any extra
settings. Entries are ``.npz`` files written atomically (a temporary file in the same folder, then
``os.replace``), so a killed process never leaves a half-written entry under a valid name.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from idinvert.utils import atomic_write


def stats_key(image_set_fingerprint: str, extractor_id: str, preprocessing: str, **extra) -> str:
    """sha256 (hex) of the canonical JSON of every input; any change gives a different key."""
    payload = {"images": image_set_fingerprint, "extractor": extractor_id,
               "preprocessing": preprocessing, "extra": extra}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class StatsCache:
    """``StatsCache(dir)``: named arrays (features, statistics) stored under a key from :func:`stats_key`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    key = staticmethod(stats_key)

    def path(self, key: str) -> Path:
        if not key or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"cache keys are hex digests from stats_key(), got {key!r}")
        return self.root / f"{key}.npz"

    def put(self, key: str, arrays: dict[str, np.ndarray], meta: dict | None = None) -> Path:
        """Write named arrays (and a JSON-able ``meta`` dict) under ``key``, atomically."""
        payload = {name: np.asarray(value) for name, value in arrays.items()}
        payload["__meta__"] = np.array(json.dumps(meta or {}, sort_keys=True, default=str))
        return atomic_write(self.path(key), lambda f: np.savez(f, **payload), fsync=True)

    def get(self, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
        """(arrays, meta) stored under ``key``, or None when absent."""
        target = self.path(key)
        if not target.is_file():
            return None
        with np.load(target, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files if name != "__meta__"}
            meta = json.loads(str(data["__meta__"])) if "__meta__" in data.files else {}
        return arrays, meta
