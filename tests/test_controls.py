"""Known-answer controls for the semantic measures (issue 22): the known-answer set (G's own samples with
their true codes), the "G codes (truth)" positive control, latent recovery, the boundaries' AP ceiling
and the decodable AP."""

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

import bench.tables as T
from bench import metrics
from bench.boundary_check import boundary_ap
from bench.metrics.attributes import average_precision, probe_scores
from bench.metrics.codes import code_recovery, w_scale
from bench.runner import RunOptions, run_benchmark
from bench.store import Store
from idinvert.boundaries import sample_codes
from idinvert.domains.generator_samples import generator_samples, parse_spec
from idinvert.zoo import tiny_random_bundle
from methods.base import InversionMethod, InversionResult
from methods.registry import register

TINY = "tiny-random"


def test_known_answer_set_is_g_of_its_true_codes_and_disjoint_from_the_boundaries_codes():
    b = tiny_random_bundle(seed=0)
    ds = generator_samples(b.generator, 5, 0, b.fingerprint, b.attributes)
    assert ds.true_codes.shape == (5, b.num_layers, b.w_dim) and ds.labels is None
    with torch.no_grad():
        assert torch.allclose(ds.load([0, 3]), b.generator.synthesis(ds.true_codes[[0, 3]]), atol=1e-6)
    boundary_codes = sample_codes(b.generator, 5000, 0)   # the boundaries' training codes (seed 0)
    assert torch.cdist(ds.true_codes.flatten(1), boundary_codes.flatten(1)).min() > 1e-3
    other = generator_samples(b.generator, 5, 1, b.fingerprint, b.attributes)
    assert other.fingerprint != ds.fingerprint and not torch.allclose(other.true_codes, ds.true_codes)
    assert parse_spec("gsamples:64") == (64, 0) and parse_spec("gsamples:8:3") == (8, 3)
    for bad in ("gsamples:", "gsamples:1", "gsamples:x", "gsamples:4:-1"):
        with pytest.raises(ValueError, match="gsamples:N"):
            parse_spec(bad)


def test_code_recovery_is_zero_for_the_truth_and_about_sqrt2_for_an_unrelated_sample():
    b = tiny_random_bundle(seed=0)
    scale = w_scale(sample_codes(b.generator, 2000, 7))
    truth = sample_codes(b.generator, 400, 11)
    assert code_recovery(truth, truth, scale).abs().max() == 0
    unrelated = code_recovery(sample_codes(b.generator, 400, 12), truth, scale)
    assert unrelated.mean().item() == pytest.approx(math.sqrt(2), rel=0.1)


def test_a_boundary_scores_g_codes_at_its_ceiling_and_unrelated_codes_at_chance():
    """The ceiling and the negative control of AP, on one set of labelled G codes."""
    codes = torch.randn(600, 2, 8)
    labels = (codes[:, :, 0].mean(1) > 0).long()[:, None]          # the attribute: coordinate 0

    class B:
        normal, layers, offset = torch.zeros(2, 8), [0, 1], 0.0
    B.normal[:, 0] = 1
    ceiling = boundary_ap(codes, labels, ["a"], {"a": B})["a"]
    assert ceiling == pytest.approx(1.0)
    chance = boundary_ap(torch.randn(600, 2, 8), labels, ["a"], {"a": B})["a"]
    assert abs(chance - labels.float().mean().item()) < 0.1


def test_decodable_ap_finds_an_attribute_off_the_boundary_and_not_a_lost_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 128)
    off_boundary = rng.normal(size=(128, 16))
    off_boundary[:, 5] += 3 * (y - 0.5)                 # present, along a direction no boundary uses
    lost = rng.normal(size=(128, 16))                    # independent of y
    assert average_precision(probe_scores(off_boundary, y), y).ap > 0.9
    assert average_precision(probe_scores(lost, y), y).ap < 0.75
    assert probe_scores(lost, np.r_[np.ones(127), 0].astype(int)) is None   # one image of a class: no fit


@dataclass
class NoisyTruth(InversionMethod):
    """Test method: the known-answer codes plus noise (a method that recovers w only roughly)."""

    name = "test-noisy-truth"
    summary = "test: true codes + noise"
    known_answer: ClassVar[bool] = True

    def bind_dataset(self, dataset):
        self._codes, self._images = dataset.true_codes, dataset.load(list(range(len(dataset)))).flatten(1)

    def invert(self, images):
        idx = torch.cdist(images.flatten(1), self._images).argmin(1)
        noise = torch.randn(self._codes[idx].shape, generator=torch.Generator().manual_seed(0))
        return InversionResult(self._codes[idx] + 2.0 * noise * self._codes.std(0))

    def warmup(self, images):
        pass


@pytest.fixture
def noisy_method():
    from methods.registry import METHODS

    register(NoisyTruth)
    yield NoisyTruth.name
    METHODS.remove(NoisyTruth.name)


def _opts(tmp_path, methods, **kw):
    from bench.metrics.semantic import SemanticConfig

    small = SemanticConfig(boundary_samples=600, interp_pairs=3, interp_steps=4, edit_images=4,
                           spread_samples=200, ceiling_samples=600)
    return RunOptions(**{**dict(methods=methods, bundle=TINY, limit=48, batch_size=16, results_dir=tmp_path,
                                report=False, quiet=True, semantic_config=small), **kw})


def test_oracle_reaches_the_ceiling_on_the_known_answer_set_and_a_noisy_method_does_not(tmp_path, noisy_method):
    from pathlib import Path

    from bench.metrics.semantic import SemanticConfig, load_or_train_boundaries

    run_benchmark(_opts(tmp_path, ["g-codes", noisy_method, "encoder"], data=Path("gsamples:48")))
    with Store(tmp_path) as store:
        runs = {r["method"]: r for r in store.runs()}
        m = {k: {x["name"]: x for x in store.metrics(r["run_id"])} for k, r in runs.items()}
    assert all(r["dataset"].startswith("gsamples:48:0") for r in runs.values())
    oracle, noisy = m["g-codes"], m[noisy_method]
    assert oracle["code_recovery"]["value"] == 0 and noisy["code_recovery"]["value"] > 0.5
    assert m["encoder"]["code_recovery"]["status"] == "ok"          # every method is measured against w
    # the oracle's AP is the boundaries' AP of the true codes against the judge's labels of their images
    b = tiny_random_bundle(seed=0)
    bounds, _ = load_or_train_boundaries(b, tmp_path / "cache" / "boundaries", None,
                                         SemanticConfig(boundary_samples=600))
    ds = generator_samples(b.generator, 48, 0, b.fingerprint, b.attributes)
    judge = (torch.sigmoid(b.judge(ds.load(list(range(48))))) >= 0.5).long()
    direct = boundary_ap(ds.true_codes, judge, list(b.attributes), bounds)
    checked = 0
    for a, v in direct.items():
        if oracle[f"ap_{a}"]["status"] == "ok":
            assert oracle[f"ap_{a}"]["value"] == pytest.approx(v, abs=1e-9)
            assert oracle[f"ap_{a}"]["detail"]["ceiling_n"] == 600
            assert noisy[f"ap_{a}"]["value"] != pytest.approx(v, abs=1e-6)   # other codes, other AP
            checked += 1
    assert checked >= 2
    # and on enough codes the truth's AP is the ceiling itself: the same quantity on another draw of G
    big = generator_samples(b.generator, 600, 0, b.fingerprint, b.attributes)
    with torch.no_grad():
        labels = (torch.sigmoid(b.judge(big.load(list(range(600))))) >= 0.5).long()
    truth = boundary_ap(big.true_codes, labels, list(b.attributes), bounds)
    ceiling = oracle[f"ap_{next(a for a in direct if oracle[f'ap_{a}']['status'] == 'ok')}"]["detail"]
    a = next(a for a in direct if oracle[f"ap_{a}"]["status"] == "ok")
    assert truth[a] == pytest.approx(oracle[f"ap_{a}"]["detail"]["ceiling"], abs=0.08)
    assert ceiling["of_ceiling"] == pytest.approx(oracle[f"ap_{a}"]["value"] / ceiling["ceiling"])


def test_default_data_gets_the_truth_row_beside_it_as_a_control_never_best(tmp_path):
    run_benchmark(_opts(tmp_path, ["encoder", "g-codes", "g-samples"], limit=8))
    with Store(tmp_path) as store:
        runs = {r["method"]: r for r in store.runs()}
        assert runs["g-codes"]["dataset"].startswith("gsamples:8:0")
        assert runs["g-codes"]["env"]["control_for"] == runs["encoder"]["dataset"]
        groups = T.groups(T.select_runs(store).reported)
        assert len(groups) == 1 and {r["method"] for r in groups[0][1]} == {"encoder", "g-codes", "g-samples"}
        data = [T.RunMetrics(store, r) for r in groups[0][1]]
        ap = T.build_table("AP", data, ["ap_mean", "probe_ap_mean"], {})
        labels = {r.method: r.label for r in ap.rows}
        assert labels["g-codes"] == "G codes (truth: positive control)"
        assert labels["g-samples"] == "G samples (negative control: unrelated codes)"
        assert not any(c.best for r in ap.rows if r.method.startswith("g-") for c in r.cells.values())
        t1 = T.build_table("T1", data, ["mse", "fid_domain"], {})
        assert "g-codes" not in {r.method for r in t1.rows}
        codes = T.build_table("codes", data, ["code_frechet", "code_recovery"], {})
        truth = next(r for r in codes.rows if r.method == "g-codes")
        assert truth.cells["code_recovery"].value == 0
    from bench.report import build_report

    html = build_report(tmp_path).read_text()
    assert "G codes (truth: positive control)" in html and "of ceiling" in html and "decodable AP" in html
    assert "G samples (negative control: unrelated codes)" in html


def test_a_joint_boundary_ranks_codes_as_its_probe_and_an_edit_moves_its_distance_by_alpha():
    from idinvert.boundary_constructions import CONSTRUCTIONS, fit_construction
    from idinvert.editing import edit_codes, signed_distance
    from idinvert.official_boundaries import Boundary

    g = torch.Generator().manual_seed(0)
    codes = torch.randn(800, 3, 4, generator=g)
    truth = torch.zeros(3, 4)
    truth[0, 0], truth[2, 1] = 1.0, 2.0                       # the attribute mixes two layers unequally
    scores = (codes * truth).sum((1, 2)) + 0.3
    normal, layers, offset, meta = fit_construction(codes, scores, "x", CONSTRUCTIONS["logistic-all-joint"])
    b = Boundary("x", normal, layers, "test", offset=offset, meta=meta)
    assert b.normal.pow(2).sum(1).mean() == pytest.approx(1.0, abs=1e-5)     # joint, not unit rows
    assert b.normal[2, 1] / b.normal[0, 0] == pytest.approx(2.0, rel=0.15)   # proportions kept
    d = signed_distance(codes, b)
    assert ((d > 0) == (scores > 0)).float().mean() > 0.97
    edited = edit_codes(codes[:5], b, [-2.0, 1.5])
    for k, alpha in enumerate((-2.0, 1.5)):
        assert torch.allclose(signed_distance(edited[:, k], b), d[:5] + alpha, atol=1e-4)
    per_layer = fit_construction(codes, scores, "x", CONSTRUCTIONS["svm-10%-per-layer"])[0]
    assert torch.allclose(per_layer.norm(dim=1), torch.ones(3), atol=1e-5)


def test_the_construction_comparison_scores_every_candidate_on_held_out_codes():
    from bench.boundary_check import compare

    lines = []
    rows = compare(tiny_random_bundle(seed=0), 400, 300, names=["svm-10%-per-layer", "logistic-all-joint"],
                   progress=lines.append)
    assert [r["construction"] for r in rows] == ["svm-10%-per-layer", "logistic-all-joint"]
    for r in rows:
        assert set(r["judge"]) == set(r["classifier"]) and r["judge"]
        assert all(0 <= v <= 1 or math.isnan(v) for v in r["judge"].values())
    assert lines[0].startswith("sampled 400 training and 300 held-out codes") and len(lines) == 3


def test_semantic_claims_are_shown_beside_their_controls_and_the_ceiling(tmp_path):
    from bench import claims_store as CS
    from bench.store import MetricRow
    from tests.report_fixtures import _fill_run, _spec, build_fixture_store

    build_fixture_store(tmp_path)
    with Store(tmp_path) as store:
        idinvert = [r for r in store.runs() if r["method"] == "idinvert"]
        data = idinvert[0]["dataset"]
        ids = [f"test-{i:05d}" for i in range(6)]
        for method, ap, ds, env in (("g-samples", 0.52, data, {}),
                                    ("g-codes", 0.97, "gsamples:6:0 (known)", {"control_for": data})):
            rid, _ = store.begin_run(_spec(method, {}, ds, 6, "0.1.0"), torch_version="x", device="cpu",
                                     num_threads=1, env=env)
            _fill_run(store, tmp_path, rid, method, (0.1, 20, 0.5, 5, 5, 0.01, 9.0, ap, 0.9), ids,
                      imagenet=False, hostile=False, salt=5)
        for a in idinvert:
            store.add_metrics(a["run_id"], [MetricRow("ap_gender", 0.4, detail={"ceiling": 0.8}),
                                            MetricRow("ap_age", 0.9, detail={"ceiling": 0.9})])
        results = {r.claim.metric: r for r in CS.judge_store(store) if metrics.get(r.claim.metric).controls}
        ap = results["ap_mean"].controls
        assert ap["negative control (G samples, chance)"] == pytest.approx(0.52)
        assert ap["positive control (G codes, truth)"] == pytest.approx(0.97)
        assert ap["ceiling (held-out G codes)"] == pytest.approx(0.85)
        assert results["edit_success_mean"].controls == {"positive control (edits of G's true codes)": 0.9}
        md = CS.to_markdown(list(results.values()))
        assert "negative control (G samples, chance) 0.5200" in md and "| controls |" in md
        assert all(r.controls is None for r in CS.judge_store(store) if r.claim.metric == "mse")
