"""A metric is one module: registered in one place (here, inside this test), it reaches the table, the
report, ``bench ls``, the anytime curves and the claims without any other module naming it; and the
context refuses what a metric's ``needs`` do not declare."""
import math

import pytest

from bench import metrics
from bench.metrics.registry import Metric, metric, unregister
from bench.runner import run_benchmark
from bench.store import Store
from tests.test_runner import _opts

TOY = "toy_abs_error"


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    # the whole definition of the toy metric: its function and its registration side by side
    @metric(TOY, "lower", "per_image", ("images", "recons"), "mean |x - G(w)| (a test's toy metric)",
            label="toy abs. error", aggregate="mean_ci", table="inversion", anytime="plotted", sweep="x",
            bootstrap="per_image")
    def toy_abs_error(ctx):
        return (ctx.images - ctx.recons).abs().flatten(1).mean(1)

    root = tmp_path_factory.mktemp("toy")
    try:
        run_benchmark(_opts(root, ["encoder", "idinvert"], semantic=False,
                            overrides={"idinvert": {"iters": "12"}}))
        yield root
    finally:
        unregister(TOY)


def _toy_values(store, method):
    run = next(r for r in store.runs(status="complete") if r["method"] == method)
    per_image = [r["metrics"][TOY] for r in store.images(run["run_id"]) if r["status"] == "ok"]
    stored = {m["name"]: m for m in store.metrics(run["run_id"])}[TOY]
    return per_image, stored


def test_toy_metric_is_stored_and_in_table1(toy_store):
    from bench import tables as T

    with Store(toy_store, readonly=True) as store:
        per_image, stored = _toy_values(store, "idinvert")
        table = T.table1(store)
    assert len(per_image) == 6 and stored["status"] == "ok"
    assert stored["value"] == pytest.approx(sum(per_image) / len(per_image))
    assert TOY in [c.metric for c in table.columns]
    assert "toy abs. error" in T.format_table(table, "md")


def test_toy_metric_in_the_report_and_bench_ls(toy_store, capsys):
    from bench.cli import main
    from bench.report import build_report

    assert "toy abs. error" in build_report(toy_store).read_text()
    assert main(["ls"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.strip().startswith(TOY))
    assert "per_image" in line and "lower" in line and "anytime plotted" in line


def test_toy_metric_follows_the_anytime_curve(toy_store):
    from bench import quality_time as Q
    from bench.tables import run_labels

    with Store(toy_store, readonly=True) as store:
        runs = store.runs(status="complete")
        curves = {c.run["method"]: c for c in Q.curves_for(store, runs, run_labels(runs))}
        per_image, _ = _toy_values(store, "idinvert")
    toy = curves["idinvert"].curve(TOY)
    assert toy is not None and len(toy) == len(curves["idinvert"].steps) > 2
    assert toy[-1].value == pytest.approx(sum(per_image) / len(per_image))  # the last milestone is the run
    assert "toy abs. error" in [label for label, _, _ in Q.figure_panels(list(curves.values()))]


def test_a_claim_on_the_toy_metric_is_judged_on_the_tables_numbers(toy_store):
    from bench import claims as CL, claims_store as CS

    claim = CL.Claim("toy", "test", "idinvert's toy error is lower than the encoder's", TOY,
                     CL.Arm("idinvert"), CL.Arm("encoder"), "lower", "mean_difference")
    with Store(toy_store, readonly=True) as store:
        (result,) = CS.judge_store(store, [claim], n_boot=200)
        _, a = _toy_values(store, "idinvert")
        _, b = _toy_values(store, "encoder")
    assert result.verdict in CL.VERDICTS  # judged, not "not judged"
    assert result.a_value == pytest.approx(a["value"]) and result.b_value == pytest.approx(b["value"])
    assert math.isclose(result.interval.estimate, a["value"] - b["value"], rel_tol=1e-9)


def test_the_context_refuses_what_needs_do_not_declare():
    import torch

    from bench.metrics.context import MetricContext, UndeclaredNeed

    ctx = MetricContext(resources=None, images=torch.zeros(2, 3, 4, 4), recons=torch.ones(2, 3, 4, 4),
                        codes=torch.zeros(2, 3, 5))
    entry = Metric("peek", "lower", "per_image", ("images", "recons"), "reads codes it did not declare")
    view = ctx.for_metric(entry)
    assert view.images.shape == (2, 3, 4, 4) and view.n == 2  # declared, and bookkeeping
    with pytest.raises(UndeclaredNeed, match="'peek' reads ctx.codes, which needs 'codes'"):
        view.codes
    with pytest.raises(UndeclaredNeed, match="needs 'eval_network'"):
        view.eval_embedding


def test_no_module_but_the_metric_modules_lists_the_builtin_metrics():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "bench"
    # the metric modules, and the package's map of lazily imported functions (pixel.mse ...)
    owners = {"registry.py", "reconstruction.py", "code_metrics.py", "semantic_metrics.py", "semantic.py", "__init__.py"}
    lists = re.compile(r"\(\s*\"(mse|fid_domain|ap_mean)\"\s*,\s*\"[a-z_]+\"")  # a tuple of metric names
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name not in owners and (lists.search(p.read_text()) or "MATCHED_STEP = " in p.read_text()
                                               and p.name != "defaults.py")]
    assert offenders == []
    assert metrics.get("fid_domain").anytime == "plotted"  # the fact lives on the entry
