"""On-disk cache of feature statistics (and optionally raw features) of real image sets.

The key is a content hash of everything that determines the numbers: the image set's fingerprint, the
feature extractor's id (which includes a hash of its weights), and the preprocessing, plus any extra
settings. Entries are ``.npz`` files written atomically (a temporary file in the same folder, then
``os.replace``), so a killed process never leaves a half-written entry under a valid name.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .frechet import FeatureStats


def stats_key(image_set_fingerprint: str, extractor_id: str, preprocessing: str, **extra) -> str:
    """sha256 (hex) of the canonical JSON of every input; any change gives a different key."""
    payload = {"images": image_set_fingerprint, "extractor": extractor_id,
               "preprocessing": preprocessing, "extra": extra}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class StatsCache:
    """``StatsCache(dir)``: ``get_or_compute(key, compute)`` for FeatureStats; ``put/get`` for arrays."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    key = staticmethod(stats_key)

    def path(self, key: str) -> Path:
        if not key or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"cache keys are hex digests from stats_key(), got {key!r}")
        return self.root / f"{key}.npz"

    def put(self, key: str, arrays: dict[str, np.ndarray], meta: dict | None = None) -> Path:
        """Write named arrays (and a JSON-able ``meta`` dict) under ``key``, atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.path(key)
        payload = {name: np.asarray(value) for name, value in arrays.items()}
        payload["__meta__"] = np.array(json.dumps(meta or {}, sort_keys=True, default=str))
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{key[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return target

    def get(self, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
        """(arrays, meta) stored under ``key``, or None when absent."""
        target = self.path(key)
        if not target.is_file():
            return None
        with np.load(target, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files if name != "__meta__"}
            meta = json.loads(str(data["__meta__"])) if "__meta__" in data.files else {}
        return arrays, meta

    def get_stats(self, key: str) -> FeatureStats | None:
        entry = self.get(key)
        if entry is None or "mu" not in entry[0] or "sigma" not in entry[0]:
            return None
        return FeatureStats(entry[0]["mu"], entry[0]["sigma"])

    def put_stats(self, key: str, stats: FeatureStats, meta: dict | None = None,
                  features: np.ndarray | None = None) -> Path:
        arrays = {"mu": np.asarray(stats[0], np.float64), "sigma": np.asarray(stats[1], np.float64)}
        if features is not None:
            arrays["features"] = np.asarray(features)
        return self.put(key, arrays, meta)

    def get_or_compute(self, key: str, compute: Callable[[], FeatureStats],
                       meta: dict | None = None) -> FeatureStats:
        """Cached stats under ``key``; on a miss, ``compute()`` them and store them first."""
        cached = self.get_stats(key)
        if cached is not None:
            return cached
        stats = FeatureStats(*compute())
        self.put_stats(key, stats, meta)
        return stats
