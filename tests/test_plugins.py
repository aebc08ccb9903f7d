"""Adding a metric or a method is one file: a toy metric and a toy method, each registered in this file
alone, run through the harness and appear in `bench table`, the report and `bench ls`."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass

import pytest
import torch

from bench import catalogue, metrics, tables
from bench.cli import main
from bench.report import build_report
from bench.runner import RunOptions, run_benchmark
from bench.store import Store
from methods.base import InversionMethod, InversionResult
from methods.optimisation import OptimisationMethod
from methods.registry import METHODS, register


def toy_abs_error(ctx):
    """Mean absolute pixel error per image: [B]."""
    return (ctx.images - ctx.recons).abs().flatten(1).mean(1)


@dataclass
class ToyMeanW(InversionMethod):
    """The mean w for every image, shifted by ``shift``."""

    name = "toy-mean-w"
    summary = "mean w plus a constant (test plug-in)"
    shift: float = 0.25

    def invert(self, images: torch.Tensor) -> InversionResult:
        w = self.bundle.w_avg.reshape(1, 1, -1).expand(images.shape[0], self.bundle.num_layers, -1)
        return InversionResult(codes=w.clone() + self.shift)


@dataclass
class ToyZeroStart(OptimisationMethod):
    """An optimisation method that starts from w = 0: a dataclass and one hook."""

    name = "toy-zero-start"

    def init_codes(self, images: torch.Tensor) -> torch.Tensor:
        return torch.zeros(images.shape[0], self.bundle.num_layers, self.bundle.w_dim)


@pytest.fixture
def plugins():
    metrics.metric("toy_abs", "lower", "per_image", ("images", "recons"), "mean |x - G(w)| (test plug-in)",
                   label="toy abs err", aggregate="mean_ci", table="inversion")(toy_abs_error)
    register(ToyMeanW)
    register(ToyZeroStart)
    yield
    metrics.unregister("toy_abs")
    METHODS.remove(ToyMeanW.name)
    METHODS.remove(ToyZeroStart.name)


def test_a_registered_metric_and_method_appear_in_table_report_and_ls(plugins, tmp_path):
    opts = RunOptions(methods=["toy-mean-w", "toy-zero-start"], bundle="tiny-random", limit=4, batch_size=4,
                      results_dir=tmp_path, overrides={"toy-zero-start": {"iters": "2"}}, report=False,
                      quiet=True, semantic=False)
    run_ids = run_benchmark(opts)
    assert len(run_ids) == 2
    with Store(tmp_path) as store:
        rows = {r["name"]: r for r in store.metrics(run_ids[0])}
        images = store.images(run_ids[0])
        table_md = tables.render_table(store, "md")
    expected = sum(i["metrics"]["toy_abs"] for i in images) / len(images)
    assert rows["toy_abs"]["value"] == pytest.approx(expected) and rows["toy_abs"]["detail"]["ci95"] is not None
    assert "toy abs err" in table_md and "toy-mean-w" in table_md and "toy-zero-start" in table_md
    html = build_report(tmp_path).read_text()
    assert "toy abs err" in html and "toy-zero-start" in html
    listing = catalogue.describe()
    assert "toy_abs" in [m["name"] for m in listing["metrics"]]
    assert {"toy-mean-w", "toy-zero-start"} <= {m["name"] for m in listing["methods"]}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["ls", "--json"]) == 0
    names = [m["name"] for m in json.loads(out.getvalue())["metrics"]]
    assert "toy_abs" in names


def test_an_unavailable_metric_is_stored_with_its_reason(tmp_path):
    def needs_weights(ctx):
        raise metrics.MetricUnavailable("toy_missing", "toy weights are not here: put toy.pt in ~/x")

    metrics.metric("toy_missing", "lower", "set", ("images",), "a metric whose weights are absent")(needs_weights)
    try:
        run_ids = run_benchmark(RunOptions(methods=["encoder"], bundle="tiny-random", limit=4, batch_size=4,
                                           results_dir=tmp_path, report=False, quiet=True, semantic=False))
        with Store(tmp_path) as store:
            row = {r["name"]: r for r in store.metrics(run_ids[0])}["toy_missing"]
    finally:
        metrics.unregister("toy_missing")
    assert row["status"] == "unavailable" and "toy.pt" in row["detail"]["reason"]
