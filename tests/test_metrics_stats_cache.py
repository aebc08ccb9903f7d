import numpy as np

from bench.metrics import FeatureStats, StatsCache, feature_stats, stats_key


def test_stats_round_trip(tmp_path):
    cache = StatsCache(tmp_path / "cache")
    stats = feature_stats(np.random.default_rng(0).normal(size=(20, 4)))
    key = stats_key("images-abc", "embed-v1", "none")
    assert cache.get_stats(key) is None
    cache.put_stats(key, stats, meta={"n": 20}, features=np.ones((20, 4)))
    loaded = cache.get_stats(key)
    assert np.array_equal(loaded.mu, stats.mu) and np.array_equal(loaded.sigma, stats.sigma)
    arrays, meta = cache.get(key)
    assert meta == {"n": 20} and arrays["features"].shape == (20, 4)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{key}.npz"]  # no temp files left


def test_get_or_compute_computes_once(tmp_path):
    cache = StatsCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return FeatureStats(np.zeros(2), np.eye(2))

    key = stats_key("set", "extractor", "prep")
    first = cache.get_or_compute(key, compute)
    second = StatsCache(tmp_path).get_or_compute(key, compute)
    assert len(calls) == 1 and np.array_equal(first.sigma, second.sigma)


def test_key_changes_with_every_input():
    base = stats_key("images-abc", "inception-sha-1", "bilinear299", n=500)
    assert base == stats_key("images-abc", "inception-sha-1", "bilinear299", n=500)
    assert len({base,
                stats_key("images-abd", "inception-sha-1", "bilinear299", n=500),
                stats_key("images-abc", "inception-sha-2", "bilinear299", n=500),
                stats_key("images-abc", "inception-sha-1", "bicubic299", n=500),
                stats_key("images-abc", "inception-sha-1", "bilinear299", n=501),
                stats_key("images-abc", "inception-sha-1", "bilinear299")}) == 6
