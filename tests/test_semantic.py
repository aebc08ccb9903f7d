"""Semantic analysis: attribute AP from boundary distances, interpolation and manipulation metrics."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from types import SimpleNamespace

from bench import metrics as M
from bench.metrics.context import EvalNetwork, EvalResources, MetricContext
from bench.metrics.errors import MetricUnavailable
from bench.metrics.semantic import SemanticConfig, evaluate_semantics, metric_names
from idinvert.official_boundaries import Boundary
from idinvert.zoo import tiny_random_bundle

FAST = SemanticConfig(interp_pairs=4, interp_steps=4, interp_strips=2, edit_images=6, edit_strip_images=2,
                      spread_samples=200, batch_size=64)


class LinearGenerator(nn.Module):
    """'Images' carry the mean W+ code in 4x4 blocks of pixels (D = 3 * 4 * 4, 16 px images)."""

    num_layers, w_space_dim, z_space_dim, resolution = 3, 48, 48, 16

    def __init__(self):
        super().__init__()
        self.register_buffer("eye", torch.eye(48))

    def mapping(self, z):
        return z @ self.eye

    def synthesis(self, wp):
        return F.interpolate(wp.mean(dim=1).reshape(-1, 3, 4, 4), scale_factor=4, mode="nearest")


def _pixels(images):
    return F.avg_pool2d(images, 4).flatten(1)


class ProjectionClassifier(nn.Module):
    """Attribute i present when pixel coordinate i of the flattened image is > 0."""

    def __init__(self, num_attrs: int):
        super().__init__()
        self.register_buffer("dirs", torch.eye(48)[:num_attrs])

    def forward(self, images):
        return 10.0 * _pixels(images) @ self.dirs.T

    def features(self, images):
        return [images]

    def embed(self, images):
        return _pixels(images)[:, :6]


@dataclasses.dataclass
class ToyBundle:
    generator: nn.Module
    classifier: nn.Module | None
    attributes: tuple
    name: str = "toy"
    fingerprint: str = "toy"

    def has(self, part):
        return getattr(self, part, None) is not None


def axis_boundaries(names, num_layers=3, dim=48):
    return {n: Boundary(n, torch.eye(dim)[i].expand(num_layers, dim), None, "axis")
            for i, n in enumerate(names)}


def toy_codes(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, 48, generator=g)
    return w[:, None].expand(-1, 3, -1).contiguous()


def toy_resources(bundle, results_dir, config, boundaries=None, *, inception=None, inception_reason=None,
                  reference=None, no_boundary_reason=None, domain_features=None):
    """EvalResources for a toy bundle with the given networks, boundaries and reference provided."""
    opts = SimpleNamespace(seed=config.seed, data=None, semantic_config=config, boundaries=None, quiet=True,
                           batch_size=None)
    res = EvalResources(bundle, opts, torch.device("cpu"), results_dir)
    res.provide("boundaries", (dict(boundaries or {}), no_boundary_reason or "no boundaries given"))
    res.provide("inception", inception if inception is not None else
                MetricUnavailable("fid", inception_reason or "no Inception extractor was given"))
    cls = bundle.classifier if bundle.has("classifier") else None
    if cls is None:
        res.provide("eval_network", MetricUnavailable("eval_network", "the bundle has no judge network"))
    else:
        embed = domain_features or cls.embed
        res.provide("eval_network", EvalNetwork(cls, embed, cls.features, cls, tuple(bundle.attributes),
                                                getattr(embed, "description", "classifier.embed"), "toy-net"))
    res.reference = lambda n: None if reference is None else reference[:n]
    return res


def run_semantics(bundle, codes, reals, ids, labels, label_source, boundaries, out_dir, run_id, config,
                  *, label_attributes=None, resources=None, **networks):
    """The semantic stages on a context built from these inputs (results under ``out_dir``)."""
    resources = resources or toy_resources(bundle, out_dir, config, boundaries, **networks)
    names = list(label_attributes) if label_attributes is not None else list(bundle.attributes)
    ctx = MetricContext(resources, reals.detach().float(), reals.detach().float(), codes.detach().float(),
                        list(range(len(ids))), list(ids), labels=labels,
                        label_names=names if labels is not None else [],
                        label_source=label_source if labels is not None else "none", run_id=run_id)
    return evaluate_semantics(ctx)


def rows_by_name(result):
    return {m.name: m for m in result.metrics}


def test_ap_of_perfect_score_is_one_and_of_reversed_score_is_the_ranking_value():
    scores = torch.arange(10.0)
    labels = (scores >= 7).long()  # P = 3 of N = 10, ranked first
    assert M.average_precision(scores, labels).ap == pytest.approx(1.0)
    # reversed: positives ranked last, AP = (1/P) * sum_k k / (N - P + k)
    expected = sum(k / (10 - 3 + k) for k in (1, 2, 3)) / 3
    assert M.average_precision(-scores, labels).ap == pytest.approx(expected)
    # with one positive that value is the positive prior
    one = (scores == 9).long()
    assert M.average_precision(-scores, one).ap == pytest.approx(one.float().mean().item())


def test_ap_uses_signed_distance_of_codes(tmp_path):
    attrs = ("a", "b")
    bundle = ToyBundle(LinearGenerator(), ProjectionClassifier(2), attrs)
    codes = toy_codes()
    labels = (codes[:, 0, :2] > 0).long()
    res = run_semantics(bundle, codes, bundle.generator.synthesis(codes), [str(i) for i in range(40)],
                             labels, "renderer", axis_boundaries(attrs), tmp_path, "sem", FAST)
    rows = rows_by_name(res)
    assert rows["ap_a"].value == pytest.approx(1.0) and rows["ap_b"].value == pytest.approx(1.0)
    assert rows["ap_mean"].value == pytest.approx(1.0)
    assert rows["ap_a"].detail["label_source"] == "renderer"
    curve = res.curves["pr/a"]
    assert set(curve) >= {"precision", "recall", "ap", "label_source"} and len(curve["precision"]) <= 101
    # reversed labels: the ranking value of a perfectly wrong score
    res = run_semantics(bundle, codes, bundle.generator.synthesis(codes), [str(i) for i in range(40)],
                             1 - labels, "csv", axis_boundaries(attrs), tmp_path, "sem", FAST)
    rows = rows_by_name(res)
    assert rows["ap_a"].value < 0.7
    assert rows["ap_a"].detail["label_source"] == "csv"


def test_without_labels_ground_truth_is_the_judge_on_real_images(tmp_path):
    attrs = ("a", "b")
    bundle = ToyBundle(LinearGenerator(), ProjectionClassifier(2), attrs)
    codes = toy_codes()
    reals = bundle.generator.synthesis(codes)
    res = run_semantics(bundle, codes, reals, [str(i) for i in range(40)], None, "none",
                             axis_boundaries(attrs), tmp_path, "sem", FAST)
    rows = rows_by_name(res)
    assert rows["ap_a"].value == pytest.approx(1.0)
    assert rows["ap_a"].detail["label_source"] == "judge"
    assert res.curves["pr/b"]["label_source"] == "judge"


def test_no_labels_and_no_classifier_says_what_would_enable_ap(tmp_path):
    attrs = ("a", "b")
    bundle = ToyBundle(LinearGenerator(), None, attrs)
    codes = toy_codes()
    res = run_semantics(bundle, codes, bundle.generator.synthesis(codes), [str(i) for i in range(40)],
                             None, "none", axis_boundaries(attrs), tmp_path, "sem", FAST)
    rows = rows_by_name(res)
    for name in ("ap_a", "ap_b", "ap_mean", "edit_success_a", "edit_preservation", "interp_fid_domain"):
        assert rows[name].status == "unavailable" and rows[name].value is None
    assert "--labels" in rows["ap_a"].detail["reason"] and "judge" in rows["ap_a"].detail["reason"]
    assert rows["interp_swd"].status == "ok"
    assert any(kind == "edit_strip" for kind, _, _ in res.artifacts)  # strips need no classifier


def test_edit_along_known_direction_flips_the_right_attribute(tmp_path):
    attrs = ("a", "b", "c")
    bundle = ToyBundle(LinearGenerator(), ProjectionClassifier(3), attrs)
    codes = toy_codes(40) * 0.3  # close to the boundaries: every edit of +-1.5 std crosses
    config = dataclasses.replace(FAST, edit_images=40, alpha_unit="w", edit_alphas=(-3.0, 3.0))
    labels = (codes[:, 0, :3] > 0).long()
    res = run_semantics(bundle, codes, bundle.generator.synthesis(codes), [str(i) for i in range(40)],
                             labels, "renderer", axis_boundaries(attrs), tmp_path, "sem", config)
    rows = rows_by_name(res)
    for a in attrs:
        assert rows[f"edit_success_{a}"].value == pytest.approx(1.0)
        assert "exact label" in rows[f"edit_success_{a}"].detail["start_state"]
    assert rows["edit_success_mean"].value == pytest.approx(1.0)
    assert rows["edit_preservation"].value == pytest.approx(1.0)  # the other axes never move
    assert rows["edit_dpips"].value > 0


def test_edit_along_a_wrong_direction_fails_and_hurts_preservation(tmp_path):
    attrs = ("a", "b")
    bundle = ToyBundle(LinearGenerator(), ProjectionClassifier(2), attrs)
    codes = toy_codes(40) * 0.3
    swapped = {"a": axis_boundaries(attrs)["b"], "b": axis_boundaries(attrs)["a"]}
    swapped["a"].attribute, swapped["b"].attribute = "a", "b"
    config = dataclasses.replace(FAST, edit_images=40, alpha_unit="w", edit_alphas=(-3.0, 3.0))
    res = run_semantics(bundle, codes, bundle.generator.synthesis(codes), [str(i) for i in range(40)],
                             None, "none", swapped, tmp_path, "sem", config)
    rows = rows_by_name(res)
    assert rows["edit_success_a"].value < 0.7
    assert rows["edit_preservation"].value < 0.7


def test_evaluate_semantics_on_tiny_bundle_produces_every_metric_and_artifact(tmp_path):
    bundle = tiny_random_bundle(0)
    n = 12
    g = torch.Generator().manual_seed(0)
    codes = bundle.generator.sample_wp(n, g, truncate=False) + 0.05 * torch.randn(
        n, bundle.num_layers, bundle.w_dim, generator=g)
    reals = bundle.generator.synthesis(codes).detach()
    labels = torch.randint(0, 2, (n, len(bundle.attributes)), generator=g)
    labels[0], labels[1] = 0, 1
    normals = torch.randn(len(bundle.attributes), bundle.w_dim, generator=g)
    boundaries = {a: Boundary(a, normals[i].expand(bundle.num_layers, -1), None, "random")
                  for i, a in enumerate(bundle.attributes)}
    ids = [f"img-{i}" for i in range(n)]
    res = run_semantics(bundle, codes, reals, ids, labels, "renderer", boundaries, tmp_path, "r1", FAST)
    names = [m.name for m in res.metrics]
    assert sorted(names) == sorted(metric_names(bundle.attributes))
    assert len(names) == len(set(names))
    rows = rows_by_name(res)
    for name in metric_names(bundle.attributes):
        if name == "interp_fid":
            continue
        assert rows[name].status == "ok", (name, rows[name].detail)
        assert math.isfinite(rows[name].value)
    assert rows["interp_fid"].status == "unavailable" and rows["interp_fid"].detail["reason"]
    assert rows["interp_fid_domain"].detail["floor"] is not None
    assert set(res.curves) == {f"pr/{a}" for a in bundle.attributes}
    kinds = {}
    for kind, rel, meta in res.artifacts:
        kinds.setdefault(kind, []).append(meta)
        assert rel.startswith("runs/r1/semantic/")
        path = tmp_path / rel
        with Image.open(path) as im:
            assert im.mode == "RGB" and im.size[1] >= 64
    assert len(kinds["interp_strip"]) == 2
    assert kinds["interp_strip"][0]["pair"][0] in ids and kinds["interp_strip"][0]["steps"] == 4
    assert len(kinds["edit_strip"]) == 2 * len(bundle.attributes)
    assert {m["attribute"] for m in kinds["edit_strip"]} == set(bundle.attributes)
    assert 0.0 in kinds["edit_strip"][0]["alphas"]
    assert not list((tmp_path / "runs" / "r1" / "semantic").glob("*.tmp*"))


def test_interp_fid_is_computed_when_an_inception_extractor_is_given(tmp_path):
    attrs = ("a",)
    bundle = ToyBundle(LinearGenerator(), ProjectionClassifier(1), attrs)
    codes = toy_codes()

    def fake_inception(images):
        return _pixels(images)[:, :3] * 2

    res = run_semantics(bundle, codes, bundle.generator.synthesis(codes), [str(i) for i in range(40)],
                             None, "none", axis_boundaries(attrs), tmp_path, "sem", FAST,
                             inception=fake_inception)
    rows = rows_by_name(res)
    assert rows["interp_fid"].status == "ok" and rows["interp_fid"].value >= 0
    assert rows["interp_fid"].detail["n_fake"] == 4 * 2


def test_pairs_and_edit_images_do_not_depend_on_the_method(tmp_path):
    attrs = ("a",)
    bundle = ToyBundle(LinearGenerator(), ProjectionClassifier(1), attrs)
    codes = toy_codes()
    reals = bundle.generator.synthesis(codes)
    ids = [str(i) for i in range(40)]
    one = run_semantics(bundle, codes, reals, ids, None, "none", axis_boundaries(attrs), tmp_path / "1",
                             "x", FAST)
    two = run_semantics(bundle, codes * 0.5, reals, ids, None, "none", axis_boundaries(attrs),
                             tmp_path / "2", "x", FAST)
    assert [m for k, _, m in one.artifacts] == [m for k, _, m in two.artifacts]


def test_dpips_against_reference_equals_the_direct_computation():
    from bench.metrics.semantic import dpips_to_reference

    bundle = ToyBundle(LinearGenerator(), ProjectionClassifier(2), ("a", "b"))
    cls = bundle.classifier
    judge = EvalNetwork(cls, cls.embed, cls.features, cls, ("a", "b"), "toy", "toy")
    g = torch.Generator().manual_seed(1)
    ref, edited = torch.randn(5, 3, 16, 16, generator=g), torch.randn(15, 3, 16, 16, generator=g)
    direct = M.dpips(edited, ref.repeat_interleave(3, dim=0), cls.features)
    assert torch.allclose(dpips_to_reference(judge, edited, ref, 3, 8), direct, atol=1e-6)


def test_boundaries_are_trained_once_per_harness_run_and_artifacts_are_relative(tmp_path):
    from bench.metrics.semantic import load_or_train_boundaries

    bundle = tiny_random_bundle(0)
    config = dataclasses.replace(FAST, boundary_samples=300)
    opts = SimpleNamespace(seed=0, data=None, semantic_config=config, boundaries=None, quiet=True, batch_size=None)
    resources = EvalResources(bundle, opts, torch.device("cpu"), tmp_path)
    resources.provide("inception", MetricUnavailable("fid", "no Inception weights here"))
    resources.reference = lambda n: None
    g = torch.Generator().manual_seed(0)
    codes = bundle.generator.sample_wp(20, g, truncate=False).detach()
    reals = bundle.generator.synthesis(codes).detach()
    ids = [f"i{k}" for k in range(20)]
    res = run_semantics(bundle, codes, reals, ids, None, "none", None, tmp_path, "run1", config,
                        resources=resources)
    by = rows_by_name(res)
    assert by["interp_fid"].detail["reason"] == "no Inception weights here"
    assert by["ap_mean"].detail["label_source"] == "judge"  # no labels: the judge predicts them
    # one set for scoring, one for the edit directions (two constructions), each trained once
    assert len(list((tmp_path / "cache" / "boundaries").glob("*.pt"))) == 2
    for _, rel, _ in res.artifacts:
        assert rel.startswith("runs/run1/semantic/") and (tmp_path / rel).is_file()
    cached = resources._built["boundaries"]
    edits = resources._built["edit-boundaries"]
    run_semantics(bundle, codes, reals, ids, None, "none", None, tmp_path, "run2", config, resources=resources)
    assert resources._built["boundaries"] is cached and resources._built["edit-boundaries"] is edits
    assert {b.meta["construction_name"] for b in edits.values()} == {config.edit_boundary_construction}
    assert {b.meta["construction_name"] for b in cached[0].values()} == {config.boundary_construction}


OFFICIAL = __import__("pathlib").Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / \
    "idinvert-boundaries-ffhq256"


@pytest.mark.skipif(not OFFICIAL.is_dir(), reason=f"official boundary files not present at {OFFICIAL}")
def test_official_boundary_files_load_with_their_layers_and_an_edit_scale():
    from bench.metrics.semantic import load_or_train_boundaries

    class WPlusMapping(nn.Module):
        num_layers, w_space_dim, z_space_dim = 14, 512, 512

        def z_to_wp(self, z, truncate=False):
            return z[:, None].expand(-1, 14, -1) * 0.5

    bundle = ToyBundle(WPlusMapping(), None, ("age", "pose"))
    boundaries, reason = load_or_train_boundaries(bundle, OFFICIAL, OFFICIAL,
                                                  dataclasses.replace(FAST, spread_samples=300))
    assert reason is None and {"age", "pose", "eyeglasses"} <= set(boundaries)
    assert boundaries["pose"].layers == [0, 1, 2] and boundaries["age"].layers == list(range(6))
    assert boundaries["pose"].offset == 0.0
    # codes z/2 broadcast; the official rows differ per layer (nearly orthogonal), so the mean over
    # the 6 applied layers of n_l . w has a spread of about 0.5 / sqrt(6)
    assert boundaries["age"].meta["distance_std"] == pytest.approx(0.5 / 6 ** 0.5, rel=0.15)


def test_label_columns_are_matched_by_name(tmp_path):
    attrs = ("a", "b")
    bundle = ToyBundle(LinearGenerator(), ProjectionClassifier(2), attrs)
    codes = toy_codes()
    csv_labels = (codes[:, 0, [1]] > 0).long()  # a CSV with only column "b"
    res = run_semantics(bundle, codes, bundle.generator.synthesis(codes), [str(i) for i in range(40)],
                             csv_labels, "csv", axis_boundaries(attrs), tmp_path, "sem", FAST,
                             label_attributes=["b"])
    rows = rows_by_name(res)
    assert rows["ap_b"].value == pytest.approx(1.0) and rows["ap_b"].detail["label_source"] == "csv"
    assert rows["ap_a"].status == "unavailable" and "no label column" in rows["ap_a"].detail["reason"]
    assert rows["ap_mean"].value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one column per attribute"):
        run_semantics(bundle, codes, bundle.generator.synthesis(codes), [str(i) for i in range(40)],
                           csv_labels, "csv", axis_boundaries(attrs), tmp_path, "sem", FAST)


def test_interp_fid_domain_uses_the_runners_domain_features(tmp_path):
    attrs = ("a",)
    bundle = ToyBundle(LinearGenerator(), ProjectionClassifier(1), attrs)
    codes = toy_codes()

    class TwoDims:
        description = "first two pooled pixels"

        def __call__(self, images):
            return _pixels(images)[:, :2]

    res = run_semantics(bundle, codes, bundle.generator.synthesis(codes), [str(i) for i in range(40)],
                             None, "none", axis_boundaries(attrs), tmp_path, "sem", FAST,
                             domain_features=TwoDims())
    row = rows_by_name(res)["interp_fid_domain"]
    assert row.detail["dims"] == 2 and row.detail["features"] == "first two pooled pixels"
