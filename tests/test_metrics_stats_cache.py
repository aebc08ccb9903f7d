from types import SimpleNamespace

import numpy as np
import torch

from bench.metrics import StatsCache, stats_key
from bench.metrics.context import EvalResources
from idinvert.zoo import tiny_random_bundle


def test_arrays_round_trip_atomically(tmp_path):
    cache = StatsCache(tmp_path / "cache")
    key = stats_key("images-abc", "embed-v1", "none")
    assert cache.get(key) is None
    cache.put(key, {"features": np.ones((20, 4))}, meta={"n": 20})
    arrays, meta = cache.get(key)
    assert meta == {"n": 20} and arrays["features"].shape == (20, 4)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{key}.npz"]  # no temp files left


def test_real_features_are_computed_once_per_harness_run_and_reused_from_disk(tmp_path):
    opts = SimpleNamespace(seed=0, data=None)
    calls = []

    def extract(images):
        calls.append(images.shape[0])
        return images.flatten(1)[:, :3]

    images = torch.randn(6, 3, 4, 4)
    first = EvalResources(tiny_random_bundle(), opts, torch.device("cpu"), tmp_path)
    a = first.real_features(extract, "net-1", "data-1", lambda: images)
    assert torch.equal(a, first.real_features(extract, "net-1", "data-1", lambda: images))
    b = EvalResources(tiny_random_bundle(), opts, torch.device("cpu"), tmp_path).real_features(
        extract, "net-1", "data-1", lambda: images)  # a later harness run: read from disk
    assert calls == [6] and torch.equal(a, b)
    first.real_features(extract, "net-2", "data-1", lambda: images)  # another network: another key
    assert calls == [6, 6] and len(list((tmp_path / "cache" / "features").glob("*.npz"))) == 2


def test_key_changes_with_every_input():
    base = stats_key("images-abc", "inception-sha-1", "bilinear299", n=500)
    assert base == stats_key("images-abc", "inception-sha-1", "bilinear299", n=500)
    assert len({base,
                stats_key("images-abd", "inception-sha-1", "bilinear299", n=500),
                stats_key("images-abc", "inception-sha-2", "bilinear299", n=500),
                stats_key("images-abc", "inception-sha-1", "bicubic299", n=500),
                stats_key("images-abc", "inception-sha-1", "bilinear299", n=501),
                stats_key("images-abc", "inception-sha-1", "bilinear299")}) == 6
