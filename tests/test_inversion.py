"""The batched optimisation loop of idinvert.inversion: batch-invariance, descent, failure isolation."""

from __future__ import annotations

import math
import pytest
import torch
import torch.nn as nn

from idinvert.inversion import LoopOptions, encode, optimize_codes
from idinvert.loss_terms import DomainLoss, PerceptualLoss, PixelLoss
from idinvert.zoo import tiny_random_bundle



def tiny_parts(seed: int = 0):
    """Random tiny generator / encoder / F (16 px); plumbing only, nothing trained."""
    return tiny_random_bundle(seed=seed)


def targets_and_start(parts, n: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = parts.generator.synthesis(parts.generator.sample_wp(n, gen)).clamp(-1, 1)
        x = x + 0.05 * torch.randn(x.shape, generator=gen)
        start = parts.encoder.eval()(x)
    return x, start


def full_terms(parts, lambda_perceptual: float = 1e-2):
    return [PixelLoss(), PerceptualLoss(parts.perceptual, lambda_perceptual), DomainLoss(parts.encoder, 2.0)]


def test_batched_inversion_equals_one_at_a_time():
    parts = tiny_parts()
    x, start = targets_and_start(parts, 3)
    kw = dict(steps=20, lr=0.01)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        batched = optimize_codes(parts.generator, x, start, full_terms(parts), **kw).codes
        single = torch.cat([optimize_codes(parts.generator, x[i:i + 1], start[i:i + 1], full_terms(parts),
                                           **kw).codes
                            for i in range(x.shape[0])])
    finally:
        torch.use_deterministic_algorithms(prev)
    assert batched.shape == start.shape
    assert (batched - start).abs().max() > 1e-3  # the codes did move
    assert (batched - single).abs().max().item() <= 1e-4


def test_batched_inversion_is_exactly_batch_independent_in_float64():
    """The full loss at the tiny bundle's own lambda_vgg (1.0) in float64: any coupling between the
    images of a batch would show far above rounding. (In float32 this setting is not a fair test:
    Adam's per-coordinate normalisation amplifies rounding -- a 1e-7 change of the start moves the
    codes by ~3e-2 within 10 steps -- so the float32 test above uses a smaller F weight.)"""
    parts = tiny_parts()
    x, start = targets_and_start(parts, 3)
    for m in (parts.generator, parts.encoder, parts.perceptual):
        m.double()
    kw = dict(steps=20, lr=0.01)
    terms = full_terms(parts, lambda_perceptual=1.0)
    batched = optimize_codes(parts.generator, x, start, terms, **kw).codes
    single = torch.cat([optimize_codes(parts.generator, x[i:i + 1], start[i:i + 1], terms, **kw).codes
                        for i in range(x.shape[0])])
    assert batched.dtype == torch.float64
    assert (batched - start.double()).abs().max() > 1e-3
    assert (batched - single).abs().max().item() <= 1e-9


def test_loss_decreases():
    parts = tiny_parts()
    x, start = targets_and_start(parts, 3)
    res = optimize_codes(parts.generator, x, start, full_terms(parts), steps=30, lr=0.01)
    assert res.loss_history.shape == (30, 3)
    assert not res.failed.any() and res.reasons == [None] * 3
    assert (res.loss_history[-1] < res.loss_history[0]).all()


def test_nan_in_one_target_fails_only_that_image():
    parts = tiny_parts()
    x, start = targets_and_start(parts, 3)
    clean = optimize_codes(parts.generator, x[[0, 2]], start[[0, 2]], full_terms(parts), steps=10)
    bad = x.clone()
    bad[1, 0, 0, 0] = float("nan")
    res = optimize_codes(parts.generator, bad, start, full_terms(parts), steps=10)
    assert res.failed.tolist() == [False, True, False]
    assert res.reasons[1] == "loss became nan at step 0" and res.reasons[0] is None
    assert torch.equal(res.codes[1], start[1])  # frozen at the (finite) start
    assert torch.isfinite(res.codes).all()
    assert torch.isnan(res.loss_history[:, 1]).all()
    # The other images went on exactly as without the bad one.
    assert (res.codes[[0, 2]] - clean.codes).abs().max() <= 1e-4


class _BlowsUp(nn.Module):
    """F that returns inf for image ``index`` from step ``after`` on (a loss that diverges mid-run)."""

    def __init__(self, inner, index: int, after: int):
        super().__init__()
        self.inner, self.index, self.after, self.calls = inner, index, after, 0

    def forward(self, images):
        out = self.inner(images)
        if images.requires_grad:  # calls on reconstructions, one per step
            if self.calls >= self.after:
                scale = torch.ones(out.shape[0], 1, 1, 1)
                scale[self.index] = float("inf")
                out = out * scale
            self.calls += 1
        return out


def test_loss_becoming_inf_mid_run_freezes_that_image_at_last_finite_code():
    parts = tiny_parts()
    x, start = targets_and_start(parts, 2)
    f = _BlowsUp(parts.perceptual, index=0, after=5)
    res = optimize_codes(parts.generator, x, start, [PixelLoss(), PerceptualLoss(f, 1e-2)], steps=12, lr=0.01)
    assert res.failed.tolist() == [True, False]
    assert res.reasons[0] == "loss became inf at step 5"
    plain = [PixelLoss(), PerceptualLoss(parts.perceptual, 1e-2)]
    ref = optimize_codes(parts.generator, x, start, plain, steps=5, lr=0.01)
    # Step 5 was evaluated at the code after 5 updates; the last finite loss was at step 4, i.e.
    # after 4 updates.
    ref4 = optimize_codes(parts.generator, x, start, plain, steps=4, lr=0.01)
    assert (res.codes[0] - ref4.codes[0]).abs().max() <= 1e-5
    assert not torch.allclose(res.codes[0], ref.codes[0])
    assert math.isfinite(res.loss_history[-1, 1].item())


def test_w_space_result_has_identical_layers():
    parts = tiny_parts()
    x, _ = targets_and_start(parts, 2)
    init = parts.w_avg.reshape(1, 1, -1).expand(2, parts.num_layers, -1)
    res = optimize_codes(parts.generator, x, init, steps=5, space="w")
    assert res.codes.shape == (2, parts.num_layers, parts.w_dim)
    assert torch.equal(res.codes, res.codes[:, :1].expand_as(res.codes))
    assert not torch.equal(res.codes, init)


def test_networks_stay_frozen_and_modes_restored():
    parts = tiny_parts()
    x, start = targets_and_start(parts, 2)
    parts.encoder.train()
    optimize_codes(parts.generator, x, start, full_terms(parts), steps=2)
    assert parts.encoder.training  # mode restored
    for m in (parts.generator, parts.encoder, parts.perceptual):
        for p in m.parameters():
            assert p.grad is None


def test_mask_restricts_pixel_loss():
    parts = tiny_parts()
    x, start = targets_and_start(parts, 1)
    r = parts.resolution
    mask = torch.zeros(1, 1, r, r)
    # Outside the mask the target is irrelevant: changing it changes nothing.
    other = x.clone()
    other[..., : r // 2, :] = 0.7
    mask[..., r // 2:, :] = 1
    a = optimize_codes(parts.generator, x, start, [PixelLoss(mask=mask)], steps=5)
    b = optimize_codes(parts.generator, other, start, [PixelLoss(mask=mask)], steps=5)
    assert torch.allclose(a.codes, b.codes, atol=1e-6)


def test_encode_in_chunks_matches_one_pass():
    parts = tiny_parts()
    x, _ = targets_and_start(parts, 5)
    assert torch.allclose(encode(parts.encoder, x, batch_size=2), encode(parts.encoder, x, 64), atol=1e-5)


def test_bad_arguments_raise():
    parts = tiny_parts()
    x, start = targets_and_start(parts, 1)
    with pytest.raises(ValueError):
        optimize_codes(parts.generator, x, start, steps=1, space="z")
    with pytest.raises(ValueError):
        optimize_codes(parts.generator, x, start, [PixelLoss(), DomainLoss(parts.encoder, float("nan"))], steps=1)
    with pytest.raises(ValueError):
        optimize_codes(parts.generator, x, start, [], steps=1)
    with pytest.raises(ValueError):
        optimize_codes(parts.generator, x, start, [("pixel", 1.0)], steps=1)


def test_seed_leaves_the_global_rng_stream_alone():
    parts = tiny_parts()
    x, start = targets_and_start(parts, 1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    optimize_codes(parts.generator, x, start, steps=2, options=LoopOptions(seed=7))
    assert torch.equal(torch.rand(3), expected)
