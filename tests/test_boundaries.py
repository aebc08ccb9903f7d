"""Boundaries: SVM recovers a known normal, edits and distances, the cache."""

from __future__ import annotations


import pytest
import torch
import torch.nn as nn

from idinvert import boundaries as B
from idinvert.boundaries import (BoundaryCache, BoundarySettings, edit_codes, signed_distance,
                                 train_boundaries, train_boundary_from_codes)
from idinvert.editing import interpolate_codes
from idinvert.official_boundaries import Boundary


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


class ToyGenerator(nn.Module):
    """W = an invertible linear map of z; the 'image' carries the mean W+ code in its pixels."""

    def __init__(self, dim: int = 12, num_layers: int = 4, side: int = 2):
        super().__init__()
        assert dim == 3 * side * side
        self.z_space_dim = self.w_space_dim = dim
        self.num_layers = num_layers
        self.side = side
        self.resolution = side
        g = torch.Generator().manual_seed(3)
        self.register_buffer("mix", torch.linalg.qr(torch.randn(dim, dim, generator=g))[0] * 0.7)
        self.register_buffer("shift", torch.randn(dim, generator=g) * 0.1)

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.mix + self.shift

    def synthesis(self, wp: torch.Tensor) -> torch.Tensor:
        return wp.mean(dim=1).reshape(-1, 3, self.side, self.side)


class ToyClassifier(nn.Module):
    """Attribute a is present when the image's pixels projected on dirs[a] exceed thresholds[a]."""

    def __init__(self, dirs: torch.Tensor, thresholds: torch.Tensor):
        super().__init__()
        self.register_buffer("dirs", dirs)
        self.register_buffer("thresholds", thresholds)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return 4.0 * (images.flatten(1) @ self.dirs.T - self.thresholds)

    def features(self, images):
        return [images]

    def embed(self, images):
        return images.flatten(1)


def toy_pair(dim: int = 12, num_attrs: int = 3):
    gen = ToyGenerator(dim)
    g = torch.Generator().manual_seed(11)
    dirs = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0][:, :num_attrs].T.contiguous()
    return gen, ToyClassifier(dirs, torch.tensor([0.05, -0.1, 0.0])[:num_attrs])


def test_boundary_on_separable_toy_set_recovers_true_normal():
    g = torch.Generator().manual_seed(0)
    true = _unit(torch.randn(16, generator=g))
    codes = torch.randn(4000, 16, generator=g)
    scores = codes @ true + 0.3
    fit = train_boundary_from_codes(codes, scores, top_fraction=0.2, seed=0)
    assert torch.dot(fit["normal"], true) > 0.99
    assert fit["normal"].norm() == pytest.approx(1.0, abs=1e-5)
    assert fit["val_accuracy"] == 1.0
    # the hyperplane lies midway between the chosen extremes (here: projection 0), not at the
    # scores' own threshold (0.3 away); all_accuracy measures agreement with that threshold
    assert abs(fit["offset"]) < 0.1
    assert 0.8 < fit["all_accuracy"] < 0.95
    fit0 = train_boundary_from_codes(codes, codes @ true, top_fraction=0.2, seed=0)
    assert fit0["all_accuracy"] > 0.97


def test_train_boundaries_finds_the_classifier_direction_in_w():
    gen, clf = toy_pair()
    out = train_boundaries(gen, clf, ["a", "b", "c"], n_samples=3000, top_fraction=0.2, seed=1)
    assert list(out) == ["a", "b", "c"]
    for i, name in enumerate(out):
        b = out[name]
        assert isinstance(b, Boundary)
        assert b.normal.shape == (gen.num_layers, gen.w_space_dim)
        assert b.layers == list(range(gen.num_layers))
        # image pixels = w, so the classifier's direction in W is dirs[i]
        assert torch.dot(b.normal[0], clf.dirs[i]) > 0.99
        assert torch.allclose(b.normal, b.normal[:1].expand_as(b.normal))
        assert b.val_accuracy > 0.95
        assert b.meta["distance_std"] > 0


def test_train_boundaries_applies_to_a_chosen_layer_range():
    gen, clf = toy_pair()
    out = train_boundaries(gen, clf, ["a", "b", "c"], n_samples=600, seed=0, layers=[1, 2])
    b = out["a"]
    assert b.layers == [1, 2]
    codes = torch.zeros(2, gen.num_layers, gen.w_space_dim)
    edited = edit_codes(codes, b, [1.0])
    assert edited[:, 0, [0, 3]].abs().max() == 0
    assert torch.allclose(edited[:, 0, 1], b.normal[1].expand(2, -1))


def test_signed_distance_is_interfacegan_distance_for_broadcast_codes():
    n = _unit(torch.tensor([1.0, 2.0, -2.0]))
    b = Boundary("x", n.expand(4, 3), None, "test", offset=0.5)
    w = torch.tensor([[3.0, 0.0, 1.0], [-1.0, 1.0, 1.0]])
    wp = w[:, None].expand(-1, 4, -1)
    assert torch.allclose(signed_distance(wp, b), w @ n + 0.5)


def test_edit_moves_signed_distance_by_alpha():
    g = torch.Generator().manual_seed(2)
    normal = torch.randn(5, 7, generator=g)
    b = Boundary("x", normal, [0, 2, 3], "test", offset=-0.2)
    codes = torch.randn(3, 5, 7, generator=g)
    alphas = [-3.0, -1.0, 0.5, 2.0]
    edited = edit_codes(codes, b, alphas)
    assert edited.shape == (3, 4, 5, 7)
    d0 = signed_distance(codes, b)
    for k, a in enumerate(alphas):
        assert torch.allclose(signed_distance(edited[:, k], b), d0 + a, atol=1e-5)
        assert torch.equal(edited[:, k][:, [1, 4]], codes[:, [1, 4]])  # untouched layers


def test_edit_along_known_direction_changes_only_that_attribute():
    gen, clf = toy_pair()
    out = train_boundaries(gen, clf, ["a", "b", "c"], n_samples=3000, seed=0)
    z = torch.randn(64, gen.z_space_dim, generator=torch.Generator().manual_seed(5))
    wp = gen.mapping(z)[:, None].expand(-1, gen.num_layers, -1)
    before = clf(gen.synthesis(wp)) > 0
    edited = edit_codes(wp, out["b"], [3.0, -3.0])
    plus = clf(gen.synthesis(edited[:, 0])) > 0
    minus = clf(gen.synthesis(edited[:, 1])) > 0
    assert plus[:, 1].all() and not minus[:, 1].any()
    # the other attributes' directions are orthogonal: (almost) no change
    for other in (0, 2):
        assert (plus[:, other] == before[:, other]).float().mean() > 0.9
        assert (minus[:, other] == before[:, other]).float().mean() > 0.9


def test_interpolation_endpoints_are_the_codes():
    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    path = interpolate_codes(a, b, 5)
    assert path.shape == (2, 5, 3, 4)
    assert torch.allclose(path[:, 0], a) and torch.allclose(path[:, -1], b)
    assert torch.allclose(path[:, 2], (a + b) / 2, atol=1e-6)


def test_cache_round_trips_and_is_weights_only(tmp_path):
    gen, clf = toy_pair()
    out = train_boundaries(gen, clf, ["a", "b", "c"], n_samples=500, seed=0)
    cache = BoundaryCache(tmp_path)
    key = cache.key("fp", ["a", "b", "c"], BoundarySettings(n_samples=500))
    assert cache.load(key) is None
    path = cache.save(key, out)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    torch.load(path, weights_only=True)
    back = cache.load(key)
    assert list(back) == list(out)
    for name in out:
        assert torch.allclose(back[name].normal, out[name].normal, atol=1e-6)  # rows re-normalised
        assert back[name].layers == out[name].layers
        assert back[name].offset == pytest.approx(out[name].offset)
        assert back[name].val_accuracy == pytest.approx(out[name].val_accuracy)
        assert back[name].meta["distance_std"] == pytest.approx(out[name].meta["distance_std"])


def test_cache_key_changes_with_every_setting():
    base = BoundarySettings()
    key = BoundaryCache.key("fp", ["a"], base)
    assert key == BoundaryCache.key("fp", ["a"], BoundarySettings())
    others = [BoundaryCache.key("fp2", ["a"], base), BoundaryCache.key("fp", ["b"], base)]
    for change in (dict(n_samples=5), dict(top_fraction=0.3), dict(val_fraction=0.2), dict(seed=1),
                   dict(layers=(0, 1)), dict(C=0.5)):
        others.append(BoundaryCache.key("fp", ["a"], BoundarySettings(**change)))
    assert len(set(others + [key])) == len(others) + 1


def test_get_or_train_trains_once(tmp_path, monkeypatch):
    gen, clf = toy_pair()

    class FakeBundle:
        name, fingerprint, attributes = "toy", "toy-fp", ("a", "b", "c")
        generator, classifier = gen, clf

    calls = []
    real = B.train_boundaries

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(B, "train_boundaries", counting)
    cache = BoundaryCache(tmp_path)
    settings = BoundarySettings(n_samples=400)
    first = cache.get_or_train(FakeBundle(), settings)
    second = cache.get_or_train(FakeBundle(), settings)
    assert len(calls) == 1
    assert torch.allclose(first["a"].normal, second["a"].normal, atol=1e-6)
    cache.get_or_train(FakeBundle(), BoundarySettings(n_samples=400, seed=3))
    assert len(calls) == 2


def test_too_few_samples_is_a_clear_error():
    with pytest.raises(ValueError, match="sample more codes"):
        train_boundary_from_codes(torch.randn(8, 3), torch.randn(8), top_fraction=0.1)


def test_positives_never_include_codes_the_classifier_calls_negative():
    g = torch.Generator().manual_seed(4)
    codes = torch.randn(2000, 8, generator=g)
    scores = codes[:, 0] - 1.2816  # about 10% positive
    n_pos = int((scores > 0).sum())
    fit = train_boundary_from_codes(codes, scores, top_fraction=0.2, val_fraction=0.3, seed=0)
    assert fit["n_train"] + fit["n_val"] == n_pos
    assert "capped" in fit["selection"]
    # a classifier that never says "present" cannot cap: plain ranking, as InterFaceGAN
    fit = train_boundary_from_codes(codes, codes[:, 0] - 100, top_fraction=0.2, seed=0)
    assert fit["selection"] == "rank" and fit["n_train"] + fit["n_val"] == 400
    assert fit["normal"][0] > 0.9


class PerLayerToyGenerator(ToyGenerator):
    """The official StyleGAN-inv layout: the mapping emits one w per layer (repeat_w False); layer l's
    code is its own linear map of z, and the 'image' is the mean W+ code."""

    repeat_w = False

    def __init__(self, dim: int = 12, num_layers: int = 4):
        super().__init__(dim, num_layers)
        g = torch.Generator().manual_seed(5)
        self.register_buffer("mixes", torch.stack([torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]
                                                   for _ in range(num_layers)]))

    def z_to_wp(self, z, truncate=False):
        return torch.einsum("bd,lde->ble", z, self.mixes)


def test_per_layer_generator_gets_one_unit_normal_per_layer_that_separates_the_attribute():
    gen, clf = toy_pair()
    gen = PerLayerToyGenerator()
    out = train_boundaries(gen, clf, ["a", "b", "c"], n_samples=3000, top_fraction=0.2, seed=1)
    codes = gen.z_to_wp(torch.randn(500, gen.z_space_dim, generator=torch.Generator().manual_seed(2)))
    logits = clf(gen.synthesis(codes))
    for i, (name, b) in enumerate(out.items()):
        assert b.meta["layout"] == "per-layer W+"
        assert torch.allclose(b.normal.norm(dim=1), torch.ones(gen.num_layers), atol=1e-5)
        # the rows differ: each layer's map of z is its own
        assert not torch.allclose(b.normal[0], b.normal[1], atol=0.1)
        dist = signed_distance(codes, b)
        agree = ((dist > 0) == (logits[:, i] > 0)).float().mean()
        assert agree > 0.9, (name, float(agree))


def test_scored_codes_are_sampled_once_per_network_state(monkeypatch):
    # The scoring and the edit boundaries of a run label the same sample: the second call reuses it,
    # and any change of the generator's weights (here an in-place edit) samples again.
    import idinvert.boundaries as bd
    from idinvert.nets.stylegan_generator import StyleGANGenerator

    torch.manual_seed(0)
    G = StyleGANGenerator(resolution=16, z_space_dim=8, w_space_dim=8, num_mapping_layers=2,
                          fmaps_base=64, fmaps_max=8)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2))
    calls = []
    real = bd._sample_scored_codes
    monkeypatch.setattr(bd, "_sample_scored_codes", lambda *a: calls.append(a) or real(*a))
    a = bd.sample_scored_codes(G, clf, 40, seed=3)
    b = bd.sample_scored_codes(G, clf, 40, seed=3)
    assert len(calls) == 1 and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    b[0].zero_()                                    # callers get copies
    assert not torch.equal(a[0], b[0])
    bd.sample_scored_codes(G, clf, 40, seed=4)
    assert len(calls) == 2
    with torch.no_grad():
        next(G.synthesis.parameters()).add_(1.0)
    c = bd.sample_scored_codes(G, clf, 40, seed=3)
    assert len(calls) == 3 and not torch.equal(c[1], a[1])
