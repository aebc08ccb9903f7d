"""Code-space metrics: known answers on a toy linear generator with an exact (or known-inexact)
inverse encoder, and on Gaussian codes of known statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.metrics.codes import (code_frechet, domain_regularizer_term, edit_step,
                                 latent_editing_consistency, layer_spread, w_scale)
from bench.metrics.frechet import FeatureStats
from idinvert.official_boundaries import Boundary
from idinvert.quality import gaussian_frechet

L, D, R = 3, 4, 2  # 3 layers of 4 dims = 12 numbers = 3 x 2 x 2 pixels: a square linear G


def toy_linear_pair(seed: int = 0):
    """G(w) = reshape(w A), E(x) = reshape(x A^{-1}): E is the exact inverse of G."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(L * D, L * D, generator=gen, dtype=torch.float64) + 3 * torch.eye(L * D, dtype=torch.float64)
    a_inv = torch.linalg.inv(a)

    def synthesis(w):
        return (w.flatten(1) @ a).reshape(-1, 3, R, R)

    def encoder(x):
        return (x.flatten(1) @ a_inv).reshape(-1, L, D)

    return synthesis, encoder


def codes(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, L, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_domain_term_is_zero_for_an_exact_inverse_and_the_bias_squared_for_a_biased_one():
    synthesis, encoder = toy_linear_pair()
    w = codes(5)
    assert domain_regularizer_term(w, synthesis, encoder, batch_size=2).abs().max() < 1e-10
    bias = torch.randn(L, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    biased = domain_regularizer_term(w, synthesis, lambda x: encoder(x) + bias)
    assert biased.shape == (5,)
    assert torch.allclose(biased, torch.full((5,), float(bias.pow(2).mean())), rtol=1e-5)


def test_lec_is_zero_when_e_exactly_inverts_g():
    synthesis, encoder = toy_linear_pair()
    w = codes(6)
    step = torch.randn(L, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    lec = latent_editing_consistency(w, synthesis, encoder, step, alpha=3.0, batch_size=4)
    assert lec.shape == (6,) and lec.abs().max() < 1e-9


def test_lec_of_a_biased_encoder_is_the_bias_norm_whatever_the_edit():
    synthesis, encoder = toy_linear_pair()
    w = codes(4)
    bias = torch.randn(L, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    step = torch.randn(D, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for alpha in (0.0, 3.0, -2.0):
        lec = latent_editing_consistency(w, synthesis, lambda x: encoder(x) + bias, step, alpha=alpha)
        assert torch.allclose(lec, torch.full((4,), float(bias.norm())), rtol=1e-5)


def test_lec_of_a_scaling_encoder_grows_with_the_edit():
    """E(x) = (1 + eps) G^{-1}(x): LEC = eps * ||w + alpha * step||_F (the edit is not undone exactly)."""
    synthesis, encoder = toy_linear_pair()
    eps = 0.1
    w = codes(4)
    step = torch.randn(L, D, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    lec = latent_editing_consistency(w, synthesis, lambda x: (1 + eps) * encoder(x), step, alpha=3.0)
    expected = eps * (w + 3.0 * step).flatten(1).norm(dim=1)
    assert torch.allclose(lec.double(), expected, rtol=1e-5)


def test_lec_alpha_zero_is_the_root_of_the_summed_domain_term():
    synthesis, encoder = toy_linear_pair()
    w = codes(3)
    noisy = lambda x: encoder(x) * 1.05 + 0.01  # noqa: E731
    lec0 = latent_editing_consistency(w, synthesis, noisy, torch.zeros(D, dtype=torch.float64), alpha=0.0)
    dom = domain_regularizer_term(w, synthesis, noisy)
    assert torch.allclose(lec0, (dom * L * D).sqrt(), rtol=1e-5)


def test_edit_step_moves_only_the_boundary_layers_along_its_normal():
    normal = torch.nn.functional.normalize(torch.randn(D), dim=0)
    b = Boundary(attribute="age", normal=normal.expand(L, D).clone(), layers=[0, 2], source="test")
    step = edit_step(b, L, D)
    assert torch.allclose(step[0], normal) and torch.allclose(step[2], normal)
    assert torch.equal(step[1], torch.zeros(D))


def test_layer_spread_of_a_broadcast_code_is_zero_and_known_otherwise():
    base = torch.randn(5, 1, D)
    assert layer_spread(base.expand(5, L, D), torch.ones(D)).abs().max() < 1e-6  # float rounding of the mean
    # Two layers at base -1 and base +1 in every dimension: deviations ±1 -> RMS 1 at unit scale.
    two = torch.cat([base - 1, base + 1], dim=1)
    assert torch.allclose(layer_spread(two, torch.ones(D)), torch.ones(5))
    assert torch.allclose(layer_spread(two, torch.full((D,), 2.0)), torch.full((5,), 0.5))
    assert torch.allclose(layer_spread(two, torch.full((2, D), 4.0)), torch.full((5,), 0.25))


def test_w_scale_is_the_per_layer_std_of_samples():
    samples = torch.randn(4000, L, D) * torch.tensor([1.0, 2.0, 3.0, 4.0])
    scale = w_scale(samples)
    assert scale.shape == (L, D)
    assert torch.allclose(scale, torch.tensor([1.0, 2.0, 3.0, 4.0]).expand(L, D), rtol=0.06)


def test_bad_shapes_and_scales_raise_clearly():
    with pytest.raises(ValueError, match=r"\[N, L, D\]"):
        layer_spread(torch.zeros(3, D), torch.ones(D))
    with pytest.raises(ValueError, match="non-positive"):
        layer_spread(torch.zeros(3, L, D), torch.zeros(D))
    with pytest.raises(ValueError, match="scale must be"):
        layer_spread(torch.zeros(3, L, D), torch.ones(D + 1))


def test_gaussian_frechet_matches_pytorch_fid_and_known_answers():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 6)), rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.5
    sa = FeatureStats(x.mean(0), np.cov(x, rowvar=False))
    sb = FeatureStats(y.mean(0), np.cov(y, rowvar=False))
    from pytorch_fid.fid_score import calculate_frechet_distance

    ours = gaussian_frechet(*(torch.from_numpy(v) for v in (*sa, *sb)))
    assert ours == pytest.approx(calculate_frechet_distance(*sa, *sb), rel=1e-6)
    cov = torch.from_numpy(sa.sigma)
    mu = torch.zeros(6)
    # equal covariances -> ||mu_a - mu_b||^2
    assert gaussian_frechet(mu, cov, mu + 2.0, cov) == pytest.approx(4.0 * 6, rel=1e-9)
    assert gaussian_frechet(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)


def test_gaussian_frechet_stays_finite_and_exact_with_fewer_samples_than_dimensions():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(10, 32)))  # rank-9 covariance in 32 dims
    mu, cov = x.mean(0), torch.cov(x.T)
    assert gaussian_frechet(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-8)
    # scaling one covariance by c^2: Tr(S + c^2 S - 2c S) = (1 - c)^2 Tr(S)
    assert gaussian_frechet(mu, cov, mu, 4 * cov) == pytest.approx(float(cov.trace()), rel=1e-7)


def test_code_frechet_of_g_samples_is_at_its_floor_and_a_shift_adds_its_square():
    gen = torch.Generator().manual_seed(0)
    scale = torch.linspace(0.5, 2.0, D)
    samples = torch.randn(3000, L, D, generator=gen) * scale
    same = torch.randn(200, L, D, generator=gen) * scale
    res = code_frechet(same, samples, seed=3)
    assert res.n == 200 and res.n_reference == 2800 and len(res.per_layer) == L
    # both are small-sample noise of the same size: same order, far below any real shift
    assert res.value < 3 * res.floor + 0.05 and res.floor < 0.2
    shifted = code_frechet(same + 1.0, samples, seed=3)
    assert shifted.value == pytest.approx(res.value + D * 1.0, abs=0.5)
    assert shifted.floor == res.floor  # the floor depends on the samples and n only


def test_code_frechet_refuses_too_few_samples_and_non_finite_codes():
    with pytest.raises(ValueError, match="N \\+ 2"):
        code_frechet(torch.randn(10, L, D), torch.randn(11, L, D))
    bad = torch.randn(10, L, D)
    bad[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        code_frechet(bad, torch.randn(100, L, D))


def test_reencoding_runs_the_encoder_in_eval_mode_and_restores_it():
    """A batch-norm encoder in train mode would make one image's value depend on its chunk."""
    synthesis, encoder = toy_linear_pair()

    class BNEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm1d(L * D).double()

        def forward(self, x):
            return encoder(x) + self.bn(encoder(x).flatten(1)).reshape(-1, L, D) * 0

    e = BNEncoder().train()
    w = codes(6)
    before = e.bn.running_mean.clone()
    together = domain_regularizer_term(w, synthesis, e, batch_size=6)
    alone = torch.cat([domain_regularizer_term(w[i:i + 1], synthesis, e) for i in range(6)])
    assert torch.allclose(together, alone)
    assert e.training and torch.equal(e.bn.running_mean, before)  # mode restored, stats untouched
