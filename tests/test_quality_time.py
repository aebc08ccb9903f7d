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
    assert by["encoder"].one_point and by["idinvert"].steps == [0, 10, 16, 25, 30]
    mse = by["image2stylegan"].curve("mse")
    assert [p.step for p in mse] == [0, 10, 16, 25, 40, 63, 100, 150] and mse[-1].value < mse[0].value
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
    assert 'id="g1-claims"' in html and "t1-mse-i2s-best" not in html  # rows show statements
    assert "Image2StyleGAN at its own budget has the lower MSE" in html


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
    # 32 by default: the fewest for which the claims judge a Fréchet distance in the judge's 16 dimensions
    from bench.claims_store import MIN_FRECHET_VECTORS_PER_DIM

    assert image_subset(registry.build("image2stylegan", own.overrides.get("image2stylegan")), 128) \
        == MIN_FRECHET_VECTORS_PER_DIM * 16 == 32
    assert image_subset(registry.build("image2stylegan", full.overrides["image2stylegan"]), 128) == 128
    assert image_subset(registry.build("idinvert"), 128) == 128


def test_bench_claims_end_to_end_on_a_small_store(store_dir, capsys):
    import json

    import numpy as np

    from bench import claims_store as CS
    from bench.claims import VERDICTS
    from bench.cli import main

    with Store(store_dir, readonly=True) as store:
        results = {r.claim.key: r for r in CS.judge_store(store, n_boot=300)}
        runs = {r["method"]: r for r in store.runs()}
        i2s = {r["image_id"]: r["metrics"]["mse"] for r in store.images(runs["image2stylegan"]["run_id"])}
        idi = {r["image_id"]: r["metrics"]["mse"] for r in store.images(runs["idinvert"]["run_id"])}
    best = results["t1-mse-i2s-best"]
    assert best.verdict in VERDICTS and best.interval.n_images == (4,)  # paired on the 4 common images
    assert best.a_value == pytest.approx(np.mean(list(i2s.values())))
    assert best.b_value == pytest.approx(np.mean([idi[i] for i in i2s]))
    assert best.interval.low <= best.interval.estimate <= best.interval.high
    assert best.interval.estimate == pytest.approx(best.a_value - best.b_value)
    for key in ("t1-speedup-to-quality", "premise-lec", "premise-domain-term", "t1-mse-refines-encoder"):
        assert key in results
    assert results["premise-lec"].verdict in VERDICTS
    assert results["t1-speedup-to-quality"].verdict in VERDICTS
    ap = results["fig3-ap"]  # judged from the stored boundary distances and labels, on the 4 common images
    assert ap.verdict in VERDICTS and ap.interval.n_images == (4,)
    # 4 paired images are too few for a Fréchet distance in the judge's K dimensions: not judged, said why
    fid = results["t1-fid-idinvert-vs-i2s"]
    assert fid.verdict == CS.NOT_JUDGED and "Fréchet distance in" in fid.reason and fid.interval is None
    assert results["fig6-manipulation"].verdict in VERDICTS
    assert results["t1-mse-encoders"].verdict == CS.NOT_JUDGED  # no idinvert-encoder run here
    assert main(["claims", "--results", str(store_dir), "--format", "json", "--n-boot", "200"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["claim"] for r in rows} == set(results) and all(
        r["verdict"] in VERDICTS + (CS.NOT_JUDGED,) for r in rows)


def test_a_frechet_claim_on_enough_vectors_is_judged(store_dir, monkeypatch):
    from bench import claims_store as CS
    from bench.claims import VERDICTS, claim_by_key

    monkeypatch.setattr(CS, "MIN_FRECHET_VECTORS_PER_DIM", 0)  # this small store's 4 images pass
    with Store(store_dir, readonly=True) as store:
        r = CS.judge_store(store, [claim_by_key("t1-fid-idinvert-vs-i2s")], n_boot=200)[0]
    assert r.verdict in VERDICTS and r.interval.n_images == (4,)
    assert r.interval.estimate == pytest.approx(r.a_value - r.b_value)


def test_set_metrics_are_recomputed_from_their_stored_ingredients(store_dir):
    """fid_domain, interp_fid_domain, ap_mean and edit_success_mean keep their per-unit ingredients, and
    the claims' effects recompute the stored value from them exactly (all units, no resampling)."""
    import numpy as np

    from bench import claims as CL
    from bench.metrics.attributes import mean_ap
    from bench.metrics.frechet import feature_stats

    with Store(store_dir, readonly=True) as store:
        for run in store.runs():
            rid = run["run_id"]
            metrics = {m["name"]: m for m in store.metrics(rid)}
            ids = [r["image_id"] for r in store.images(rid)]
            fid = store.ingredients(rid, "fid_domain")
            assert fid["fake"][0] == ids and fid["real"][0] == ids
            real = fid["real"][1].astype(np.float64)
            # one Fréchet routine: the claims' point estimate on the stored rows is the table's number,
            # to the last bit, however few images (a singular covariance included)
            assert CL._frechet_to(fid["fake"][1], feature_stats(real)) == metrics["fid_domain"]["value"]
            got = CL.frechet_difference({"a": fid["fake"][1], "b": fid["real"][1], "real": real})
            assert got == pytest.approx(metrics["fid_domain"]["value"], rel=1e-9, abs=1e-9)
            interp = store.ingredients(rid, "interp_fid_domain")
            assert interp["fake"][1].shape[:2] == (3, 2)  # 3 pairs x 2 inner steps x K
            assert all("|" in p for p in interp["fake"][0])
            ap = store.ingredients(rid, "ap_mean")
            assert ap["scores"][1].shape == ap["labels"][1].shape == (len(ids), len(metrics["ap_mean"]["detail"]["attributes"]))
            # one AP routine: the claims' mean AP of the stored scores is the table's ap_mean
            assert mean_ap(ap["scores"][1], ap["labels"][1]) == pytest.approx(metrics["ap_mean"]["value"], rel=1e-12)
            edits = store.ingredients(rid, "edit_success_mean")
            if metrics["edit_success_mean"]["status"] == "ok":
                rate = CL._success_rate(edits["success"][1], edits["eligible"][1])
                assert rate == pytest.approx(metrics["edit_success_mean"]["value"])
                assert (edits["success"][1] <= edits["eligible"][1]).all()
            assert store.ingredients(rid, "mse") == {}


def test_seeds_option_is_checked():
    from bench.cli import _parse_seeds
    from bench.errors import UsageError

    assert _parse_seeds("0,1,2") == [0, 1, 2] and _parse_seeds(None) == []
    for bad in ("0,x", "1,1"):
        with pytest.raises(UsageError):
            _parse_seeds(bad)
