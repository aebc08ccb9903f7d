"""Time to quality from anytime curves: first milestone meeting a target, "not reached" as its own
value, and speed-ups that are bounds when one side never got there."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.anytime import curve, mean_curve, speedup, time_to_target, value_at

# image2stylegan-like: slow descent from the mean w; idinvert-like: good start, quick.
SLOW = curve([0, 10, 30, 100, 300, 1000], [0.0, 1.0, 3.0, 10.0, 30.0, 100.0],
             [0.10, 0.05, 0.03, 0.015, 0.010, 0.008])
FAST = curve([0, 10, 30, 100], [0.01, 0.3, 0.9, 3.0], [0.030, 0.020, 0.016, 0.013])


def test_first_milestone_that_meets_the_target_no_interpolation():
    t = time_to_target(SLOW, 0.02)  # met first at step 100 (0.015), not interpolated between 30 and 100
    assert t.reached and t.step == 100 and t.seconds_per_image == 10.0 and t.value == 0.015
    exact = time_to_target(SLOW, 0.03)  # "<=": equal counts as reached
    assert exact.step == 30


def test_not_reached_is_its_own_value():
    t = time_to_target(FAST, 0.010)
    assert not t.reached and t.seconds_per_image is None and t.step is None
    assert t.budget_seconds_per_image == 3.0 and t.budget_step == 100
    assert str(t) == "not reached in 3 s (100 steps)"


def test_higher_is_better_metrics():
    ap = curve([0, 10, 100], [0, 1, 10], [0.6, 0.7, 0.8])
    assert time_to_target(ap, 0.7, "higher").step == 10
    assert not time_to_target(ap, 0.9, "higher").reached
    with pytest.raises(ValueError, match="direction"):
        time_to_target(ap, 0.7, "better")


def test_speedup_ratio_when_both_reach():
    target = value_at(FAST)  # idinvert's MSE at its budget: 0.013
    s = speedup(time_to_target(FAST, target), time_to_target(SLOW, target))
    # FAST reaches 0.013 at its last point (3 s); SLOW first <= 0.013 at step 300 (30 s)
    assert s.kind == "ratio" and s.value == pytest.approx(10.0)
    # FAST met it after 0.9 s (step 30), SLOW after 10 s (step 100): the schedule allows 10/3 .. 30/0.9
    assert s.low == pytest.approx(10.0 / 3.0) and s.high == pytest.approx(30.0 / 0.9)
    assert str(s) == "10x (range 3.3x-33x)"


def test_time_to_target_is_bracketed_by_the_milestone_before():
    t = time_to_target(SLOW, 0.02)      # not met at step 30 (3 s), met at step 100 (10 s)
    assert (t.earliest_step, t.earliest_seconds_per_image) == (30, 3.0) and not t.exact
    assert str(t) == "3-10 s (after step 30, by step 100)"
    start = time_to_target(FAST, 0.05)  # met by the start codes themselves: no bracket
    assert start.exact and start.earliest_seconds_per_image == start.seconds_per_image == 0.01
    assert str(start) == "0.01 s (step 0)"
    late_first = time_to_target(curve([10, 30], [1.0, 3.0], [0.01, 0.005]), 0.02)
    assert (late_first.earliest_step, late_first.earliest_seconds_per_image) == (0, 0.0)
    assert not late_first.exact
    never = time_to_target(FAST, 0.001)
    assert never.earliest_seconds_per_image is None and not never.exact


def test_speedup_is_a_labelled_bound_when_one_side_does_not_reach():
    target = 0.014
    fast = time_to_target(FAST, 0.016)   # reached at 0.9 s
    slow_short = time_to_target(curve([0, 10], [0.0, 1.0], [0.1, 0.05]), 0.016)  # not reached in 1 s
    s = speedup(fast, slow_short)
    assert s.kind == "at least" and s.value == pytest.approx(1.0 / 0.9)
    assert s.low == s.value and s.high == math.inf
    s2 = speedup(time_to_target(FAST, 0.009), time_to_target(SLOW, 0.009))  # only SLOW reaches (100 s)
    assert s2.kind == "at most" and s2.value == pytest.approx(100.0 / 3.0)
    assert s2.low == 0.0 and s2.high == s2.value
    s3 = speedup(time_to_target(FAST, 0.001), time_to_target(SLOW, 0.001))
    assert s3.kind == "none" and s3.value is None and str(s3) == "neither reached"
    with pytest.raises(ValueError, match="different targets"):
        speedup(time_to_target(FAST, target), time_to_target(SLOW, 0.02))


def test_encoder_is_a_single_point_curve():
    enc = curve([0], [0.002], [0.03])
    t = time_to_target(enc, 0.03)
    assert t.reached and t.seconds_per_image == 0.002
    assert not time_to_target(enc, 0.02).reached


def test_nan_values_never_meet_a_target():
    c = curve([0, 10, 20], [0, 1, 2], [math.nan, 0.5, 0.1])
    assert time_to_target(c, 0.2).step == 20
    assert time_to_target(c, 1.0).step == 10


def test_mean_curve_ignores_failed_images():
    per_image = np.array([[0.2, 0.1], [np.nan, np.nan], [0.4, 0.3]])
    c = mean_curve([0, 10], [0.0, 1.0], per_image)
    assert [p.value for p in c] == pytest.approx([0.3, 0.2])
    all_failed = mean_curve([0], [0.0], np.array([[np.nan]]))
    assert math.isnan(all_failed[0].value)


def test_value_at_names_the_milestones_it_has():
    assert value_at(SLOW, 30) == 0.03 and value_at(SLOW) == 0.008
    with pytest.raises(KeyError, match="milestones"):
        value_at(SLOW, 50)


def test_curves_are_checked():
    with pytest.raises(ValueError, match="increase"):
        curve([0, 0], [0, 1], [1, 1])
    with pytest.raises(ValueError, match="not decrease"):
        curve([0, 10], [2, 1], [1, 1])
    with pytest.raises(ValueError, match="length"):
        curve([0], [0, 1], [1])
    with pytest.raises(ValueError, match="finite"):
        curve([0], [math.inf], [1])


def test_milestone_values_mark_failed_images_nan_and_match_the_loop():
    import torch

    from bench.anytime import milestone_values, pooled_seconds_per_image
    from idinvert.inversion import LoopOptions, optimize_codes
    from idinvert.zoo import tiny_random_bundle

    parts = tiny_random_bundle(seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        x = parts.generator.synthesis(parts.generator.sample_wp(3, gen)).clamp(-1, 1)
    bad = x.clone()
    bad[2, 0, 0, 0] = float("nan")  # image 2 fails at step 0 (it is measured against the clean x)
    init = parts.w_avg.reshape(1, 1, -1).expand(3, parts.num_layers, -1)
    res = optimize_codes(parts.generator, bad, init, steps=6, options=LoopOptions(milestones=[0, 3, 6]))

    def mse(codes):
        with torch.no_grad():
            return (parts.generator.synthesis(codes) - x).pow(2).flatten(1).mean(1)

    v = milestone_values(res.milestones, mse)
    assert v.shape == (3, 3)
    assert np.isfinite(v[:2]).all() and not np.isnan(v[2, 0]) and np.isnan(v[2, 1:]).all()
    assert (v[:2, 2] < v[:2, 0]).all()  # the optimisation lowered the MSE
    assert v[0, 2] == pytest.approx(float(mse(res.codes)[0]))
    steps, secs = pooled_seconds_per_image([([0, 3, 6], [0.0, 3.0, 6.0], 3), ([0, 3, 6], [0.0, 1.0, 2.0], 1)])
    assert steps == [0, 3, 6] and secs == pytest.approx([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="different milestones"):
        pooled_seconds_per_image([([0, 3], [0, 1], 1), ([0, 4], [0, 1], 1)])


def test_subset_for_budget_fits_the_time_and_keeps_a_minimum():
    from bench.anytime import subset_for_budget

    # 0.01 s per image-step, 5000 steps = 50 s per image; 400 s -> 8 images of 128
    plan = subset_for_budget(0.01, 5000, 400.0, 128)
    assert plan.n_images == 8 and not plan.full and plan.expected_seconds == pytest.approx(400.0)
    assert "8 of 128" in plan.reason
    assert subset_for_budget(0.01, 5000, 1e9, 128).full
    tight = subset_for_budget(0.01, 5000, 60.0, 128, min_images=4)
    assert tight.n_images == 4 and "minimum" in tight.reason and tight.expected_seconds == pytest.approx(200.0)
    assert subset_for_budget(0.01, 5000, 60.0, 3, min_images=8).n_images == 3
    with pytest.raises(ValueError, match="positive"):
        subset_for_budget(0.0, 5000, 60.0, 3)


def test_time_to_quality_table_rows():
    from bench.anytime import target_from, time_to_quality_table

    enc = curve([0], [0.002], [0.030])
    curves = {"idinvert": {"mse": FAST}, "image2stylegan": {"mse": SLOW}, "idinvert-encoder": {"mse": enc}}
    targets = [target_from(SLOW, "image2stylegan final MSE", "mse"),
               target_from(FAST, "idinvert MSE at 100 steps", "mse", step=100)]
    rows = time_to_quality_table(curves, targets)
    first, second = rows
    assert first["target"].value == 0.008
    assert not first["times"]["idinvert"].reached and first["times"]["image2stylegan"].step == 1000
    assert first["speedup"].kind == "at most"  # idinvert never gets there within its 100 steps
    assert not first["times"]["idinvert-encoder"].reached
    assert second["speedup"].kind == "ratio" and second["speedup"].value == pytest.approx(10.0)
    # a metric a method was not measured on is absent, not "not reached"
    rows = time_to_quality_table({"idinvert": {"mse": FAST}, "image2stylegan": {}}, targets[1:])
    assert "image2stylegan" not in rows[0]["times"] and rows[0]["speedup"] is None
