"""Quality against time from a real (tiny) store: curves, the time-to-quality table, and the report's
quality-vs-time figure, time-to-quality table and claims section."""

import math

import pytest

from bench.runner import run_benchmark
from bench.store import Store
from tests.test_runner import _opts


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("anytime")
    run_benchmark(_opts(root, ["encoder", "idinvert", "image2stylegan"],
                        overrides={"idinvert": {"iters": "30"},
                                   "image2stylegan": {"iters": "150", "max_images": "4"}}))
    return root


def test_curves_and_time_to_quality_table(store_dir):
    from bench import quality_time as Q
    from bench.tables import run_labels

    with Store(store_dir, readonly=True) as store:
        runs = store.runs(status="complete")
        curves = Q.curves_for(store, runs, run_labels(runs))
    by = {c.run["method"]: c for c in curves}
    assert by["encoder"].one_point and by["idinvert"].steps == [0, 10, 30]
    mse = by["image2stylegan"].curve("mse")
    assert [p.step for p in mse] == [0, 10, 30, 100, 150] and mse[-1].value < mse[0].value
    assert len(by["image2stylegan"].image_ids) == 4 and len(by["idinvert"].image_ids) == 6
    assert "fid_domain" in by["idinvert"].sets and "ap_mean" in by["idinvert"].sets
    table = Q.quality_time_table(curves)
    assert table is not None and table.n_images == 4  # the images every run inverted
    names = [r["target"].name for r in table.rows]
    assert "image2stylegan final mse" in names and "idinvert mse at step 30" in names
    row = table.rows[names.index("image2stylegan final mse")]
    t = row["times"]["image2stylegan"]
    assert t.reached and t.step == 150  # the target is its own final value
    for r in table.rows:  # every cell is a time at a milestone or "not reached", never made up
        for time in r["times"].values():
            assert (time.reached and time.seconds_per_image > 0) or (not time.reached and time.seconds_per_image is None)
    md = table.to_markdown()
    assert "idinvert vs image2stylegan" in md


def test_report_has_quality_vs_time_figure_and_time_to_quality_table(store_dir):
    from bench.report import build_report

    html = build_report(store_dir).read_text()
    assert 'id="g1-anytime"' in html and "quality against seconds per image" in html
    assert 'id="g1-time-to-quality"' in html and "image2stylegan final mse" in html
    assert 'id="g1-codes"' in html and "LEC" in html


def test_code_metrics_are_registered_stored_and_directed(store_dir):
    from bench.metrics import registry

    for name in ("code_domain_term", "code_spread", "code_frechet", "code_lec", "code_lec_excess"):
        m = registry.get(name)
        assert m.direction == "lower" and m.table == "codes"
    with Store(store_dir, readonly=True) as store:
        runs = {r["method"]: r for r in store.runs()}
        got = {m["name"]: m for m in store.metrics(runs["idinvert"]["run_id"])}
        images = store.images(runs["idinvert"]["run_id"])
    assert got["code_frechet"]["status"] == "ok" and got["code_frechet"]["detail"]["floor"] > 0
    lec = got["code_lec"]["detail"]
    assert len(lec["per_image"]) == 6 and got["code_lec"]["value"] > lec["lec_alpha0"] >= 0
    assert all(r["metrics"]["code_domain_term"] >= 0 for r in images)


def test_table1_shows_own_protocol_and_the_matched_budget_row(store_dir):
    from bench.tables import table1

    with Store(store_dir, readonly=True) as store:
        t = table1(store)
        runs = {r["method"]: r for r in store.runs()}
        at100 = [m for m in store.milestones(runs["image2stylegan"]["run_id"]) if m["step"] == 100]
    labels = [r.label for r in t.rows]
    assert "image2stylegan (150 steps, first 4 images)" in labels
    assert "image2stylegan @100 steps (n=4)" in labels and not any("idinvert @" in x for x in labels)
    row = t.rows[labels.index("image2stylegan @100 steps (n=4)")]
    assert row.cells["mse"].value == pytest.approx(sum(m["metrics"]["mse"] for m in at100) / 4)
    assert row.cells["swd"].status == "absent" and row.cells["fid_domain"].value is not None
    assert any("@100 steps" in n for n in t.notes)


def test_budget_full_runs_every_image(tmp_path):
    from bench.cli import _run_options, build_parser
    from bench.runner import image_subset
    from methods import registry

    own = _run_options(build_parser().parse_args(["run", "--methods", "image2stylegan,idinvert",
                                                  "--results", str(tmp_path)]), "image2stylegan,idinvert")
    full = _run_options(build_parser().parse_args(["run", "--methods", "image2stylegan,idinvert", "--budget",
                                                   "full", "--results", str(tmp_path)]), "image2stylegan,idinvert")
    assert own.overrides == {} and full.overrides == {"image2stylegan": {"max_images": "0"}}
    assert image_subset(registry.build("image2stylegan", own.overrides.get("image2stylegan")), 128) == 8
    assert image_subset(registry.build("image2stylegan", full.overrides["image2stylegan"]), 128) == 128
    assert image_subset(registry.build("idinvert"), 128) == 128
