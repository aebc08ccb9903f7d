"""Issue 27: what a new user still tripped over, and a report that leads with its verdicts.

Each test names the issue's item. The bad inputs that end in one ``bench: error:`` line are in
``tests/test_bad_inputs.py``; here are the behaviours around them: odd files that are read (and said so),
the claims' choice of run, and the report's lead, tables and figures.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.report import build_report
from bench.report import figures as F
from bench.store import Store
from idinvert.domains.folder import ImageFolder
from report_fixtures import build_fixture_store

RUN = ["run", "--methods", "encoder", "--bundle", "tiny-random", "--no-report", "--no-semantic"]


def _png(path: Path, size=(16, 16), seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _run(argv: list[str]) -> tuple[int, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(argv)
    return code, caught


# -- 1, 9: odd files are read, and each thing is said once ---------------------------------------------------

def test_1_a_file_name_that_is_not_utf8_is_inverted_under_an_escaped_id(tmp_path, capsys):
    data = tmp_path / "data"
    _png(data / "a.png")
    _png(Path(os.fsdecode(bytes(data) + b"/b\xff.png")), seed=1)
    code, _ = _run([*RUN, "--data", str(data), "--results", str(tmp_path / "res")])
    assert code == 0, capsys.readouterr().err
    with Store(tmp_path / "res", readonly=True) as store:
        (run,) = store.runs()
        ids = sorted(r["image_id"] for r in store.images(run["run_id"]))
    assert ids == ["a.png", "b%FF.png"]


def test_9_a_skipped_file_and_a_small_frechet_set_warn_once_in_bench_words(tmp_path, capsys):
    data = tmp_path / "data"
    for i in range(3):
        _png(data / f"{i}.png", seed=i)
    (data / "junk.png").write_bytes(b"not an image")
    code, caught = _run([*RUN, "--data", str(data), "--results", str(tmp_path / "res")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert (out + err).count("junk.png") == 1  # the bench: line only, no raw UserWarning beside it
    assert not [w for w in caught if "junk.png" in str(w.message)]
    # 3 images in a 16-dimensional Fréchet distance: scipy's singular-matrix warnings are not the user's news
    assert not [w for w in caught if "singular" in str(w.message) or "scipy" in w.filename], \
        [str(w.message) for w in caught]


# -- 4: a results folder that lost its store -------------------------------------------------------------------

def test_4_a_nested_results_folder_without_its_store_is_not_read_as_data(tmp_path, capsys):
    data = tmp_path / "data"
    for i in range(2):
        _png(data / f"{i}.png", seed=i)
    for kind in ("input", "recon"):  # what `bench run` leaves under results/runs/<run id>/
        _png(data / "old-results" / "runs" / "encoder-0123456789ab" / kind / "0000-x.png")
    folder = ImageFolder(data, 16)
    assert folder.ids == ["0.png", "1.png"] and folder.excluded == ["old-results"]
    assert main([*RUN, "--data", str(data), "--results", str(tmp_path / "res")]) == 0
    assert "not reading as input: old-results (a results folder)" in capsys.readouterr().out


# -- 6: images the resize distorts ----------------------------------------------------------------------------

def test_6_tiny_and_thin_images_are_warned_about(tmp_path, capsys):
    data = tmp_path / "data"
    _png(data / "ok.png", (20, 16))
    _png(data / "dot.png", (1, 1))
    _png(data / "thin.png", (1000, 2))
    folder = ImageFolder(data, 16)
    notes = dict(folder.distorted)
    assert set(notes) == {"dot.png", "thin.png"}
    assert "upscaled 16x" in notes["dot.png"] and "keeps 0.2% of it" in notes["thin.png"]
    assert main([*RUN, "--data", str(data), "--results", str(tmp_path / "res")]) == 0
    err = capsys.readouterr().err
    assert "bench: WARNING: 2 image(s) are distorted by the resize to 16x16 px" in err
    assert "dot.png (1x1: upscaled 16x)" in err


# -- 7: the claims prefer the run on the most images -------------------------------------------------------

@pytest.fixture(scope="module")
def two_budgets(tmp_path_factory):
    """idinvert and image2stylegan on 6 images, image2stylegan once on its first 2 (its own budget) and
    once on all 6 (--budget full), into one store: the README's own sequence, at a tiny budget."""
    from bench.runner import run_benchmark
    from tests.test_runner import _opts

    root = tmp_path_factory.mktemp("budgets")
    fast = {"idinvert": {"iters": "4"}, "image2stylegan": {"iters": "4", "max_images": "2"}}
    run_benchmark(_opts(root, ["idinvert", "image2stylegan"], overrides=fast, semantic=False))
    run_benchmark(_opts(root, ["image2stylegan"], overrides={"image2stylegan": {"iters": "4", "max_images": "0"}},
                        semantic=False))
    with Store(root, readonly=True) as store:
        runs = {(r["method"], r["n_images"]): r for r in store.runs(status="complete")}
    return root, runs


@pytest.fixture
def own_budget_is_the_default(two_budgets, monkeypatch):
    """The 2-image run has the method's default params (as `bench run` without --budget full gives)."""
    from bench import tables as T

    _, runs = two_budgets
    real = T.method_defaults
    own = {m: runs[(m, 2 if m == "image2stylegan" else 6)]["params"] for m in ("idinvert", "image2stylegan")}
    monkeypatch.setattr(T, "method_defaults", lambda m: own.get(m) or real(m))


def _i2s_best(root, **kw):
    from bench import claims_store as CS
    from bench.claims import claim_by_key

    with Store(root, readonly=True) as store:
        return CS.judge_store(store, [claim_by_key("t1-mse-i2s-best")], n_boot=200, **kw)[0]


def test_7_claims_use_the_budget_full_run_beside_the_default_run(two_budgets, own_budget_is_the_default):
    root, runs = two_budgets
    r = _i2s_best(root)
    assert r.interval.n_images == (6,)
    assert ("a", 0, runs[("image2stylegan", 6)]["run_id"], 6) in r.runs
    assert runs[("image2stylegan", 6)]["run_id"] in r.runs_text() and "(6 images)" in r.runs_text()


def test_7_the_user_chooses_the_budget_or_names_the_run(two_budgets, own_budget_is_the_default, capsys):
    from bench import claims_store as CS

    root, runs = two_budgets
    own_id = runs[("image2stylegan", 2)]["run_id"]
    assert _i2s_best(root, choice=CS.Choice("own")).interval.n_images == (2,)
    assert _i2s_best(root, choice=CS.Choice("full")).interval.n_images == (6,)
    assert _i2s_best(root, choice=CS.Choice(run_ids=(own_id,))).interval.n_images == (2,)
    assert main(["claims", "--results", str(root), "--format", "json", "--n-boot", "100", "--run", own_id]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["claim"] == "t1-mse-i2s-best")
    assert {"arm": "a", "seed": 0, "run_id": own_id, "n_images": 2} in row["runs"]
    assert main(["claims", "--results", str(root), "--run", own_id[:-1]]) == 2
    assert f"did you mean {own_id!r}" in capsys.readouterr().err


# -- 10, 11: the report's lead, tables and footnotes ---------------------------------------------------------

@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("report")
    build_fixture_store(root)
    return build_report(root).read_text()


def test_10_the_report_leads_with_the_verdicts(report_html):
    lead = report_html.index('id="g1-verdicts"')
    assert lead < report_html.index('id="g1-t1"') and report_html.index('id="g1-header"') < lead
    block = report_html[lead:report_html.index('id="g1-t1"')]
    assert "holds</span>: the domain-guided encoder reconstructs better" in block
    assert "idinvert-encoder&#39;s MSE is" in block and "lower than encoder&#39;s" in block
    assert "Not judged here" in block and "t1-fid-encoders" in block


def test_10_the_verdicts_show_the_controls_levels_when_the_store_has_them(tmp_path):
    from bench.report import _control_levels
    from bench.tables import RunMetrics

    with Store(tmp_path) as store:
        from bench.store import MetricRow, RunSpec

        spec = RunSpec("g-samples", {}, "b", "fp", "d", "fp", 4, 0, "v")
        run_id, _ = store.begin_run(spec, torch_version="t", device="cpu", num_threads=1)
        store.complete_run(run_id, [MetricRow("fid_domain", 14.5)])
        data = [RunMetrics(store, r) for r in store.runs()]
    assert _control_levels(data, "fid_domain") == "G samples (reference) 14.50"
    assert _control_levels(data, "mse") is None


def test_11_the_claims_table_is_narrow_and_each_footnote_is_said_once(report_html):
    claims = report_html[report_html.index('id="g1-claims-table"'):]
    head = claims[:claims.index("</thead>")]
    assert head.count("<th>") <= 5
    assert report_html.count("half-width of the 95% confidence interval") == 1
    assert report_html.count("Best value per column") == 1


def test_11_time_to_quality_says_not_reached_once_beside_the_budgets():
    from bench import quality_time as Q
    from bench.anytime import TimeToTarget

    missed = TimeToTarget(0.01, "lower", False, None, None, None, 0.0008, 0)
    table = Q.QualityTimeTable(["encoder"], [{"times": {"encoder": missed}}], 6, [])
    assert table.cell(table.rows[0], "encoder", budgets_shown=True) == "not reached"
    assert table.cell(table.rows[0], "encoder") == "not reached in 0.0008 s (0 steps)"  # bench claims' text


# -- 12: figures -------------------------------------------------------------------------------------------

def _drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _legend_clear_of_the_panels(fig) -> bool:
    renderer = _drawn(fig)
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    return all(ax.get_legend() is None and not box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)


def test_12_quality_vs_time_uses_a_log_axis_where_values_span_decades_and_a_legend_outside():
    panels = [("MSE", "lower", [("idinvert", [0.1, 0.5, 1.0], [0.3, 0.01, 0.005], [0, 10, 100]),
                                ("encoder", [0.001], [0.08], [0])]),
              ("dpips", "lower", [("idinvert", [0.1, 0.5, 1.0], [0.9, 0.5, 0.3], [0, 10, 100])])]
    fig = F.quality_time_figure(panels, {})
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "linear"]  # 60x apart; 3x apart
    assert "log scale" in fig.axes[0].get_ylabel() and "log scale" not in fig.axes[1].get_ylabel()
    assert _legend_clear_of_the_panels(fig)


def test_12_pr_curves_have_their_legend_outside_the_panels():
    curves = [F.Curve(m, [1.0, 0.8, 0.5], [0.0, 0.5, 1.0], 0.7) for m in ("idinvert", "encoder")]
    fig = F.pr_figure([("age", curves), ("gender", curves)], {})
    assert _legend_clear_of_the_panels(fig)
    assert fig.legends[0].get_texts()[0].get_text() == "idinvert"


def test_10_each_kind_of_effect_reads_as_one_sentence():
    import math

    from bench import claims_store as CS
    from bench.claims import Interval, claim_by_key

    def said(key, a, b, est, low, high):
        interval = Interval(est, low, high, 0.95, 200, 1, (12,))
        return CS.effect_in_words(CS.ClaimResult(claim_by_key(key), "holds", a, b, interval))

    assert said("t1-mse-encoders", 0.04, 0.06, -0.02, -0.03, -0.01) == (
        "idinvert-encoder's MSE is 0.02000 lower than encoder's (0.04000 vs 0.06000; 95% interval of the "
        "difference -0.03000 to -0.01000; 1 seed, 12 images)")
    assert said("t1-encoder-speed", 0.001, 1.0, -3.0, -3.1, -2.9).startswith(
        "idinvert-encoder's s / image is 1e+03x smaller than idinvert's")
    assert "reaches the target 10x sooner than image2stylegan (95% interval of the speed-up 3.16x to 31.6x" in \
        said("t1-speedup-to-quality", 0.1, math.inf, 1.0, 0.5, 1.5)
    assert said("t1-speedup-to-quality", 0.1, math.inf, math.inf, 0.2, math.inf).startswith(
        "image2stylegan does not reach the target within its budget, idinvert does")
    assert CS.effect_in_words(CS.ClaimResult(claim_by_key("t1-mse-encoders"), CS.NOT_JUDGED, reason="why")) == \
        "not judged: why"
