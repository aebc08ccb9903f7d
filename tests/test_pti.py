"""PTI: batched per-image tuning equals tuning each image alone, tuning reconstructs, tuned weights
decode any code with the right image's generator, and what an image costs in memory."""

import copy

import pytest
import torch

from idinvert.codes import mapping_codes
from idinvert.nets.stylegan_generator import StyleGANGenerator
from idinvert.pti import (Locality, pivotal_tuning, pti_invert, tunable_names, w_space_pivots)
from idinvert.zoo import tiny_random_bundle


@pytest.fixture(scope="module")
def bundle():
    return tiny_random_bundle(seed=0, resolution=16)


@pytest.fixture(scope="module")
def double(bundle):
    """G and F in float64, so the batching itself is checked free of float32 rounding (Adam turns
    rounding-level gradient differences of near-zero gradients into lr-sized steps)."""
    return copy.deepcopy(bundle.generator).double(), copy.deepcopy(bundle.perceptual).double()


def _targets(G, n, seed=5):
    with torch.no_grad():
        return G.synthesis(mapping_codes(G, n, torch.Generator().manual_seed(seed))) * 0.9


def _plain_tuning(G, F, x, pivot, steps, lr=3e-4, lam=1.0):
    """The reference: a deep copy of G tuned with an ordinary module forward and Adam."""
    G = copy.deepcopy(G)
    names = tunable_names(G.synthesis, pivot)
    params = [p for n, p in G.synthesis.named_parameters() if n in names]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr, fused=True)     # as pivotal_tuning uses
    with torch.no_grad():
        fx = F(x)
    for _ in range(steps):
        rec = G.synthesis(pivot)
        loss = (rec - x).pow(2).mean() + lam * (F(rec) - fx).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return G


# Batched and one-image tuning sum the same terms in a different order (float64). Where a gradient is far
# below Adam's eps the step is ~grad/eps, so that rounding shows relatively (2e-10 on a 1e-9 bias delta on
# an AMD EPYC). A ten-thousandth of one Adam step at lr 3e-4 is far below any real difference: pairing an
# image's tuning with another image's differs by more on every tuned tensor.
UPDATE_ATOL = 1e-4 * 3e-4


def test_batched_tuning_equals_tuning_each_image_alone(double):
    G, F = double
    x = _targets(G, 3)
    pivots = w_space_pivots(G, x, steps=5, lr=0.01).codes
    batch = pivotal_tuning(G, x, pivots, steps=6, perceptual=F, lambda_perceptual=1.0)
    for i in range(3):
        alone = pivotal_tuning(G, x[i:i + 1], pivots[i:i + 1], steps=6, perceptual=F,
                               lambda_perceptual=1.0)
        for name, delta in batch.weights.deltas.items():
            assert torch.allclose(delta[i], alone.weights.deltas[name][0], atol=UPDATE_ATOL), name
            other = batch.weights.deltas[name][(i + 1) % 3]
            assert not torch.allclose(other, alone.weights.deltas[name][0], atol=UPDATE_ATOL), name
        plain = _plain_tuning(G, F, x[i:i + 1], pivots[i:i + 1], steps=6)
        tuned = batch.weights.params([i])
        for name, p in plain.synthesis.named_parameters():
            if name in tuned:
                assert torch.allclose(p, tuned[name][0], atol=UPDATE_ATOL), name
        assert torch.allclose(batch.loss_history[:, i], alone.loss_history[:, 0].float())


def test_batched_tuning_in_float32_reconstructs_as_one_at_a_time(bundle):
    G, F = bundle.generator, bundle.perceptual
    x = _targets(G, 3)
    pivots = mapping_codes(G, 3, torch.Generator().manual_seed(9))
    batch = pivotal_tuning(G, x, pivots, steps=5, perceptual=F, lambda_perceptual=1.0)
    rec = batch.reconstructions()
    for i in range(3):
        alone = pivotal_tuning(G, x[i:i + 1], pivots[i:i + 1], steps=5, perceptual=F,
                               lambda_perceptual=1.0)
        assert torch.allclose(rec[i], alone.reconstructions()[0], atol=2e-3)


def test_tuning_lowers_the_loss_and_leaves_g_untouched(bundle):
    G = bundle.generator
    before = {k: v.clone() for k, v in G.state_dict().items()}
    x = _targets(G, 2)
    pivots = mapping_codes(G, 2, torch.Generator().manual_seed(9))
    result = pivotal_tuning(G, x, pivots, steps=30, lr=3e-3)
    assert (result.loss_history[-1] < 0.7 * result.loss_history[0]).all()
    mse = (result.reconstructions() - x).pow(2).flatten(1).mean(1)
    with torch.no_grad():
        mse_untuned = (G.synthesis(pivots) - x).pow(2).flatten(1).mean(1)
    assert (mse < mse_untuned).all()
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert not any(p.requires_grad for p in G.parameters())


def test_synthesize_decodes_any_code_with_image_is_generator(bundle):
    G = bundle.generator
    x = _targets(G, 3)
    pivots = mapping_codes(G, 3, torch.Generator().manual_seed(9))
    w = pivotal_tuning(G, x, pivots, steps=3, lr=1e-2).weights
    edits = pivots[1:2] + 0.5 * torch.randn(4, *pivots.shape[1:], generator=torch.Generator().manual_seed(1))
    images = w.synthesize(edits, [1] * 4)
    g1 = w.generator_for(1, G)
    with torch.no_grad():
        assert torch.allclose(images, g1.synthesis(edits), atol=1e-5)
        assert not torch.allclose(images, G.synthesis(edits), atol=1e-3)
        assert not torch.allclose(images, w.generator_for(0, G).synthesis(edits), atol=1e-3)
    with pytest.raises(IndexError):
        w.synthesize(edits, [3] * 4)
    with pytest.raises(ValueError, match="indices"):
        w.synthesize(edits, [1, 1])


def test_memory_per_image_and_compact_storage(bundle):
    G = bundle.generator
    x = _targets(G, 2)
    pivots = mapping_codes(G, 2, torch.Generator().manual_seed(9))
    w = pivotal_tuning(G, x, pivots, steps=3, lr=1e-2).weights
    names = tunable_names(G.synthesis, pivots[:1])
    n_params = sum(p.numel() for n, p in G.synthesis.named_parameters() if n in names)
    assert w.bytes_per_image() == 4 * n_params
    # unused coarse toRGB layers are not tuned (and cost nothing)
    assert n_params < sum(p.numel() for p in G.synthesis.parameters())
    small = w.compact()
    assert small.bytes_per_image() == 2 * n_params
    full = w.synthesize(pivots, [0, 1])
    assert torch.allclose(small.synthesize(pivots, [0, 1]), full, atol=1e-3)
    assert len(w.select([1])) == 1


def test_pivots_are_in_w_for_a_broadcasting_generator_and_whole_code_otherwise(bundle):
    G = bundle.generator
    x = _targets(G, 2)
    piv = w_space_pivots(G, x, steps=3, lr=0.01).codes
    assert torch.equal(piv, piv[:, :1].expand_as(piv))
    torch.manual_seed(0)
    G2 = StyleGANGenerator(16, z_space_dim=32, w_space_dim=32, num_mapping_layers=2,
                           repeat_w=False, final_tanh=True, truncation_psi=None,
                           truncation_layers=None, fmaps_base=256, fmaps_max=32).eval()
    piv2 = w_space_pivots(G2, x, steps=3, lr=0.01).codes
    assert (piv2 - piv2[:, :1]).abs().max() > 0


def test_locality_regulariser_is_optional_and_changes_the_result(bundle):
    G = bundle.generator
    x = _targets(G, 2)
    pivots = mapping_codes(G, 2, torch.Generator().manual_seed(9))
    plain = pivotal_tuning(G, x, pivots, steps=8, lr=1e-2, seed=0)
    local = pivotal_tuning(G, x, pivots, steps=8, lr=1e-2, seed=0,
                           locality=Locality(lambda_l2=100.0))
    again = pivotal_tuning(G, x, pivots, steps=8, lr=1e-2, seed=0,
                           locality=Locality(lambda_l2=100.0))
    assert torch.equal(local.loss_history, again.loss_history)          # seeded
    # the regulariser keeps each tuned generator closer to G away from the pivot
    far = mapping_codes(G, 8, torch.Generator().manual_seed(3))
    with torch.no_grad():
        orig = G.synthesis(far)

        def drift(result):
            return sum((result.weights.synthesize(far, [i] * 8) - orig).pow(2).mean().item()
                       for i in range(2))
        assert drift(local) < drift(plain)
    assert Locality().alpha_for(512) == 30.0 and Locality().alpha_for(128) == pytest.approx(15.0)


def test_a_failing_image_does_not_disturb_the_others(double):
    G, F = double
    x = _targets(G, 3)
    pivots = mapping_codes(G, 3, torch.Generator().manual_seed(9))
    bad = x.clone()
    bad[1, :, 0, 0] = float("nan")
    result = pivotal_tuning(G, bad, pivots, steps=4, lr=1e-2)
    clean = pivotal_tuning(G, x[[0, 2]], pivots[[0, 2]], steps=4, lr=1e-2)
    assert result.failed.tolist() == [False, True, False]
    assert "non-finite" in result.reasons[1]
    for name, d in result.weights.deltas.items():
        assert torch.allclose(d[[0, 2]], clean.weights.deltas[name], atol=UPDATE_ATOL), name
        assert torch.equal(d[1], torch.zeros_like(d[1]))          # failed at step 0: untouched


def test_pti_invert_runs_pivots_then_tuning_and_checks_inputs(bundle):
    G, F = bundle.generator, bundle.perceptual
    x = _targets(G, 2)
    result = pti_invert(G, x, perceptual=F, lambda_perceptual=1.0, pivot_steps=3, tuning_steps=3)
    assert result.pivot is not None and torch.equal(result.codes, result.pivot.codes)
    assert result.loss_history.shape == (3, 2)
    with pytest.raises(ValueError, match="pivots"):
        pivotal_tuning(G, x, result.codes[:, :2], steps=1)
    with pytest.raises(ValueError, match="perceptual"):
        pivotal_tuning(G, x, result.codes, steps=1, lambda_perceptual=1.0)
