import math

import numpy as np
import pytest
import torch

from bench.metrics import FeatureStats, feature_stats, fid, fid_domain, frechet_distance, real_floor


def random_spd(k, rng):
    a = rng.normal(size=(k, k))
    return a @ a.T + k * np.eye(k)


def test_identical_feature_sets_have_zero_distance():
    feats = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    stats = feature_stats(feats)
    assert abs(frechet_distance(stats, stats)) < 1e-6


def test_gaussians_with_equal_covariance_differ_by_squared_mean_distance():
    rng = np.random.default_rng(1)
    sigma = random_spd(6, rng)
    mu_a, mu_b = rng.normal(size=6), rng.normal(size=6)
    value = frechet_distance(FeatureStats(mu_a, sigma), FeatureStats(mu_b, sigma))
    assert math.isclose(value, float(np.sum((mu_a - mu_b) ** 2)), rel_tol=1e-6, abs_tol=1e-8)


def test_one_dimensional_gaussians_have_the_closed_form():
    a = FeatureStats(np.array([1.0]), np.array([[4.0]]))
    b = FeatureStats(np.array([-2.0]), np.array([[9.0]]))
    assert math.isclose(frechet_distance(a, b), 9.0 + (2.0 - 3.0) ** 2, rel_tol=1e-9)


def test_frechet_distance_is_symmetric():
    rng = np.random.default_rng(2)
    a = FeatureStats(rng.normal(size=5), random_spd(5, rng))
    b = FeatureStats(rng.normal(size=5), random_spd(5, rng))
    assert math.isclose(frechet_distance(a, b), frechet_distance(b, a), rel_tol=1e-8)


def test_feature_stats_shapes_and_validation():
    mu, sigma = feature_stats(torch.randn(10, 3))
    assert mu.shape == (3,) and sigma.shape == (3, 3) and mu.dtype == np.float64
    mu, sigma = feature_stats(torch.randn(10, 1))
    assert sigma.shape == (1, 1)
    with pytest.raises(ValueError):
        feature_stats(torch.randn(1, 3))


def embed(images):
    return images.mean(dim=(2, 3))  # [B, 3] toy embedding


def test_fid_domain_uses_the_given_embedding_and_accepts_cached_stats():
    g = torch.Generator().manual_seed(3)
    real = torch.rand(64, 3, 8, 8, generator=g) * 2 - 1
    assert abs(fid_domain(real, real, embed)) < 1e-6
    shifted = (real + 0.5).clamp(-1, 1)
    value = fid_domain(shifted, real, embed)
    assert value > 0.05
    cached = feature_stats(embed(real))
    assert math.isclose(fid_domain(shifted, cached, embed), value, rel_tol=1e-9)
    # with both sides given as statistics no extractor is needed at all
    assert math.isclose(fid(cached, cached), 0.0, abs_tol=1e-6)


def test_real_floor_compares_two_disjoint_subsets_of_the_evaluated_size():
    feats = torch.randn(100, 4, generator=torch.Generator().manual_seed(4))
    floor = real_floor(feats, n=30, seed=0)
    assert floor.n == 30 and floor.n_pool == 100 and floor.value > 0
    assert floor == real_floor(feats, n=30, seed=0)  # seeded
    small = real_floor(feats, n=80, seed=0)  # pool too small for 2 x 80: uses 50 + 50
    assert small.n == 50 and small.n_requested == 80
    # more samples -> smaller finite-sample bias, on average
    big = torch.randn(4000, 4, generator=torch.Generator().manual_seed(5))
    assert real_floor(big, n=2000).value < real_floor(big, n=20).value
