"""Milestones of the optimisation loop: one run reports the codes a run of k steps would return, for
every requested k, without changing the final result."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn as nn

from idinvert.inversion import LoopOptions, anytime_milestones, check_milestones, optimize_codes
from idinvert.loss_terms import DomainLoss, PerceptualLoss, PixelLoss
from idinvert.zoo import tiny_random_bundle


def parts_and_targets(n: int = 3, seed: int = 1):
    parts = tiny_random_bundle(seed=0)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = parts.generator.synthesis(parts.generator.sample_wp(n, gen)).clamp(-1, 1)
        x = x + 0.05 * torch.randn(x.shape, generator=gen)
        start = parts.encoder.eval()(x)
    return parts, x, start


def full_loss(parts):
    return dict(lr=0.01, terms=[PixelLoss(), PerceptualLoss(parts.perceptual, 1e-2), DomainLoss(parts.encoder, 2.0)])


@pytest.fixture
def deterministic():
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(prev)


def test_milestone_codes_equal_separate_runs_of_that_many_steps(deterministic):
    parts, x, start = parts_and_targets()
    kw = full_loss(parts)
    res = optimize_codes(parts.generator, x, start, steps=12, options=LoopOptions(milestones=[0, 1, 5, 12]), **kw)
    assert [m.step for m in res.milestones] == [0, 1, 5, 12]
    for m in res.milestones:
        alone = optimize_codes(parts.generator, x, start, steps=m.step, **kw)
        assert m.codes.shape == alone.codes.shape == start.shape
        assert (m.codes - alone.codes).abs().max().item() <= 1e-6, m.step
        assert torch.equal(m.failed, alone.failed)
    assert torch.equal(res.milestones[0].codes, start)  # step 0 is the start as given
    assert torch.equal(res.milestones[-1].codes, res.codes)  # the budget is the final result
    # and the codes did move between milestones (the test would pass vacuously otherwise)
    assert (res.milestones[2].codes - res.milestones[1].codes).abs().max() > 1e-4


def test_milestones_do_not_change_the_final_result(deterministic):
    parts, x, start = parts_and_targets()
    kw = full_loss(parts)
    plain = optimize_codes(parts.generator, x, start, steps=10, **kw)
    with_ms = optimize_codes(parts.generator, x, start, steps=10, options=LoopOptions(milestones=range(11)), **kw)
    assert plain.milestones == []
    assert len(with_ms.milestones) == 11
    assert torch.equal(plain.codes, with_ms.codes)
    assert torch.equal(plain.loss_history, with_ms.loss_history)
    assert torch.equal(plain.failed, with_ms.failed)


def test_on_step_reports_every_hundredth_of_the_steps_and_changes_nothing(deterministic):
    parts, x, start = parts_and_targets()
    kw = full_loss(parts)
    calls = []
    plain = optimize_codes(parts.generator, x, start, steps=250, **kw)
    told = optimize_codes(parts.generator, x, start, steps=250,
                          options=LoopOptions(on_step=lambda k, n: calls.append((k, n))), **kw)
    assert calls == [(k, 250) for k in range(2, 251, 2)]   # every 2 steps (1% of 250), the last one included
    assert torch.equal(plain.codes, told.codes)
    few = []
    optimize_codes(parts.generator, x, start, steps=3, options=LoopOptions(on_step=lambda k, n: few.append(k)), **kw)
    assert few == [1, 2, 3]


def test_milestones_are_copies_not_views(deterministic):
    parts, x, start = parts_and_targets(n=2)
    res = optimize_codes(parts.generator, x, start, steps=4, options=LoopOptions(milestones=[2, 4]), **full_loss(parts))
    before = res.milestones[0].codes.clone()
    res.codes.add_(1.0)
    assert torch.equal(res.milestones[0].codes, before)
    assert not torch.equal(res.milestones[1].codes, res.codes)


def test_w_space_milestones_are_broadcast_codes():
    parts, x, _ = parts_and_targets(n=2)
    init = parts.w_avg.reshape(1, 1, -1).expand(2, parts.num_layers, -1)
    res = optimize_codes(parts.generator, x, init, steps=4, space="w", options=LoopOptions(milestones=[0, 2, 4]))
    for m in res.milestones:
        assert m.codes.shape == (2, parts.num_layers, parts.w_dim)
        assert torch.equal(m.codes, m.codes[:, :1].expand_as(m.codes))
    alone = optimize_codes(parts.generator, x, init, steps=2, space="w")
    assert (res.milestones[1].codes - alone.codes).abs().max() <= 1e-6


def test_seconds_grow_with_the_milestones_and_count_from_the_given_origin():
    parts, x, start = parts_and_targets(n=2)
    res = optimize_codes(parts.generator, x, start, steps=6, options=LoopOptions(milestones=[0, 3, 6]),
                         **full_loss(parts))
    secs = [m.seconds for m in res.milestones]
    assert secs[0] >= 0 and secs == sorted(secs) and secs[-1] <= res.seconds
    assert secs[2] > secs[0]
    origin = time.perf_counter() - 100.0  # as if an encoder had run for 100 s before the loop
    late = optimize_codes(parts.generator, x, start, steps=2,
                          options=LoopOptions(milestones=[0, 2], time_origin=origin))
    assert 100.0 <= late.milestones[0].seconds <= late.milestones[1].seconds <= late.seconds < 200.0


def test_nan_target_is_failed_at_every_milestone_and_others_match_separate_runs(deterministic):
    parts, x, start = parts_and_targets()
    bad = x.clone()
    bad[1, 0, 0, 0] = float("nan")
    kw = full_loss(parts)
    res = optimize_codes(parts.generator, bad, start, steps=6, options=LoopOptions(milestones=[0, 1, 6]), **kw)
    # At 0 steps no loss has been evaluated yet, so nothing is known to have failed -- exactly what a
    # run of 0 steps reports.
    assert res.milestones[0].failed.tolist() == [False, False, False]
    assert res.milestones[1].failed.tolist() == [False, True, False]
    assert res.milestones[2].failed.tolist() == [False, True, False]
    for m in res.milestones:
        alone = optimize_codes(parts.generator, bad, start, steps=m.step, **kw)
        assert torch.equal(m.failed, alone.failed)
        assert (m.codes - alone.codes).abs().max() <= 1e-6
        assert torch.equal(m.codes[1], start[1])


class _NanGradient(torch.autograd.Function):
    """Identity forward; backward gives image ``index`` a NaN gradient (a finite loss whose update
    makes the code non-finite)."""

    @staticmethod
    def forward(ctx, x, index):
        ctx.index = index
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        grad[ctx.index] = float("nan")
        return grad, None


class _PoisonsGradient(nn.Module):
    def __init__(self, inner, index: int, at_call: int):
        super().__init__()
        self.inner, self.index, self.at_call, self.calls = inner, index, at_call, 0

    def forward(self, images):
        out = self.inner(images)
        if images.requires_grad:
            if self.calls == self.at_call:
                out = _NanGradient.apply(out, self.index)
            self.calls += 1
        return out


def test_code_made_non_finite_by_an_update_is_failed_at_the_next_milestone():
    parts, x, start = parts_and_targets(n=2)

    def run(steps, milestones=None):
        f = _PoisonsGradient(parts.perceptual, index=0, at_call=3)  # the update of step 3 is NaN
        return optimize_codes(parts.generator, x, start, [PixelLoss(), PerceptualLoss(f, 1e-2)], steps=steps,
                              lr=0.01, options=LoopOptions(milestones=milestones))

    res = run(8, milestones=[3, 4, 8])
    assert [m.failed.tolist() for m in res.milestones] == [[False, False], [True, False], [True, False]]
    for m in res.milestones:
        alone = run(m.step)
        assert torch.equal(m.failed, alone.failed), m.step
        assert torch.isfinite(m.codes).all()
        assert (m.codes - alone.codes).abs().max() <= 1e-6
    assert alone.reasons[0].startswith("loss became nan") or alone.reasons[0].startswith("code became")
    assert run(4).reasons[0] == "code became non-finite at step 4"


def test_milestones_after_an_early_stop_hold_the_frozen_codes():
    parts, x, start = parts_and_targets(n=2)
    bad = torch.full_like(x, float("nan"))  # every image fails at step 0: the loop stops at step 9
    res = optimize_codes(parts.generator, bad, start, steps=40, options=LoopOptions(milestones=[5, 20, 40]))
    assert res.loss_history.shape[0] == 10
    for m in res.milestones:
        assert m.failed.all()
        assert torch.equal(m.codes, start)


@pytest.mark.parametrize("bad", [[-1], [11], [2.5], ["x"], [None]])
def test_bad_milestones_raise_naming_the_value(bad):
    parts, x, start = parts_and_targets(n=1)
    with pytest.raises(ValueError, match="milestone"):
        optimize_codes(parts.generator, x, start, steps=10, options=LoopOptions(milestones=bad))


def test_check_milestones_sorts_and_dedups():
    assert check_milestones([5, 0, 5, 3.0], steps=5) == [0, 3, 5]
    assert check_milestones(None, steps=5) == []


def test_anytime_schedule():
    assert anytime_milestones(5000) == [0, 10, 16, 25, 40, 63, 100, 158, 251, 398, 631, 1000, 1585, 2512,
                                        3981, 5000]
    assert anytime_milestones(100) == [0, 10, 16, 25, 40, 63, 100]
    assert anytime_milestones(300, include_zero=False) == [10, 16, 25, 40, 63, 100, 158, 251, 300]
    assert anytime_milestones(5000, per_decade=1) == [0, 10, 100, 1000, 5000]
    gaps = np.diff(anytime_milestones(100_000)[1:-1]) / np.array(anytime_milestones(100_000)[1:-2])
    assert np.all(gaps <= 0.6)  # consecutive milestones at most ~1.6x apart: the speed-up's resolution
    assert anytime_milestones(20) == [0, 10, 16, 20]
    assert anytime_milestones(0) == [0]
    with pytest.raises(ValueError):
        anytime_milestones(-1)


def test_channels_last_gives_the_same_result_and_restores_the_networks():
    parts, x, start = parts_and_targets()
    kw = full_loss(parts)
    plain = optimize_codes(parts.generator, x, start, steps=5, **kw)
    cl = optimize_codes(parts.generator, x, start, steps=5, options=LoopOptions(memory_format="channels_last"), **kw)
    assert (cl.codes - plain.codes).abs().max() <= 1e-3
    assert torch.allclose(cl.loss_history, plain.loss_history, rtol=1e-4)
    for m in (parts.generator, parts.encoder, parts.perceptual):
        for p in list(m.parameters()) + list(m.buffers()):
            if p.ndim == 4:
                assert p.is_contiguous(), "a weight was left in channels_last"
    with pytest.raises(ValueError, match="memory_format"):
        optimize_codes(parts.generator, x, start, steps=1, options=LoopOptions(memory_format="nhwc"))
