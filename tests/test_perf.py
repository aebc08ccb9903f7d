"""``bench perf`` on the tiny bundle: FLOPs counted per step scale with the batch, for idinvert and for
image2stylegan's loop, and a method without a loop is refused by name."""

import io

import pytest

from bench.tools import perf


@pytest.mark.parametrize("method", ["idinvert", "image2stylegan"])
def test_perf_counts_loop_flops_per_image_for_optimisation_methods(method):
    args = perf.build_parser().parse_args(["--tiny", "--images", "2", "--iters", "3", "--method", method,
                                           "--peak-size", "256", "--threads", "1", "--rounds", "1"])
    res = perf.run(args)
    assert res["method"] == method and res["images"] == 2 and not res["any_failed"]
    per_image = res["flops_per_step_per_image"]
    assert per_image > 0 and res["flops_per_step_batched"] == pytest.approx(2 * per_image, rel=0.02)
    assert 0 < res["batched"]["fraction_of_peak"] < 1.5
    assert (res["max_abs_code_diff_from_1e-7_start_perturbation"] is None) == (method != "idinvert")
    # the anytime A/B: the run with milestones kept them (up to the last step), the one without did not
    o = res["milestone_overhead"]
    assert o["steps"] and o["steps"][-1] == 3 and o["seconds_with"] > 0 and o["seconds_without"] > 0
    assert o["ratio"] == pytest.approx(o["seconds_with"] / o["seconds_without"])
    out = io.StringIO()
    perf.print_table(res, file=out)
    assert f"{method} inversion" in out.getvalue() and "anytime milestones" in out.getvalue()


def test_perf_refuses_a_method_without_iters():
    with pytest.raises(SystemExit, match="encoder has no iters"):
        perf.run(perf.build_parser().parse_args(["--tiny", "--method", "encoder"]))
    with pytest.raises(SystemExit, match="unknown method"):
        perf.run(perf.build_parser().parse_args(["--tiny", "--method", "nope"]))
