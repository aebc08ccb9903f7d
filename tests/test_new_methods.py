"""The e4e, restyle and pti methods (issue 14): each method's contract on the tiny random bundle (shapes,
determinism, batch = one-at-a-time, resume of an interrupted run), PTI's per-image generators through
the harness (reconstruction, semantic stages, --keep-tuned), and the run notes the tables show."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import bench.runner as runner
from bench.runner import RunOptions, run_benchmark
from bench.store import Store
from idinvert.pti import TunedDecoder, pti_invert
from idinvert.zoo import tiny_random_bundle
from methods.registry import build

NEW = ["e4e", "restyle", "pti"]
FAST = {"pti": {"pivot_steps": "4", "tuning_steps": "4"}}
# batch vs one image: encoders agree to float rounding; PTI's vmapped tuning to a little more (grouped
# convolutions sum in another order, and 8 Adam steps amplify it slightly).
TOL = {"e4e": 1e-5, "restyle": 1e-5, "pti": 1e-4}


@pytest.fixture(scope="module")
def bundle():
    return tiny_random_bundle(seed=0)


def _images(bundle, n, seed=5):
    with torch.no_grad():
        g = bundle.generator
        return g.synthesis(g.sample_wp(n, torch.Generator().manual_seed(seed))).clamp(-1, 1)


def _method(name, bundle, **overrides):
    m = build(name, {**FAST.get(name, {}), **{k: str(v) for k, v in overrides.items()}})
    m.prepare(bundle)
    return m


# -- the contract ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NEW)
def test_shapes_determinism_and_batch_equals_one_at_a_time(name, bundle):
    x = _images(bundle, 4)
    m = _method(name, bundle)
    first = m.invert(x)
    assert first.codes.shape == (4, bundle.num_layers, bundle.w_dim)
    assert first.codes.dtype == torch.float32 and torch.isfinite(first.codes).all()
    assert first.failed.tolist() == [False] * 4
    again = m.invert(x)
    assert torch.equal(again.codes, first.codes), "the same images must give the same codes"
    single = torch.cat([m.invert(x[i:i + 1]).codes for i in range(4)])
    assert torch.allclose(single, first.codes, atol=TOL[name], rtol=0)
    if name == "pti":  # the output is the code and the tuned generator: both must agree
        alone = [m.invert(x[i:i + 1]).decoders[0] for i in range(4)]
        with torch.no_grad():
            batch_rec = torch.cat([d.synthesis(c[None]) for d, c in zip(first.decoders, first.codes)])
            one_rec = torch.cat([d.synthesis(first.codes[i:i + 1]) for i, d in enumerate(alone)])
        # float32: Adam divides by sqrt(v), so rounding differences of near-zero gradients become
        # lr-sized steps (measured: max 0.015, mean 5e-4 on this bundle); in float64 the method is exact
        # (test_pti_method_batch_equals_one_at_a_time_exactly_in_float64)
        diff = (batch_rec - one_rec).abs()
        assert diff.max() < 0.05 and diff.mean() < 2e-3


def test_pti_method_batch_equals_one_at_a_time_exactly_in_float64():
    b = tiny_random_bundle(seed=0)
    x = _images(b, 3).double()
    for part in ("generator", "classifier"):
        getattr(b, part).double()
    m = build("pti", {"pivot_steps": "4", "tuning_steps": "4", "compact": "false"})
    m.prepare(b)
    batch = m.invert(x)
    alone = [m.invert(x[i:i + 1]) for i in range(3)]
    assert torch.allclose(torch.cat([a.codes for a in alone]), batch.codes, atol=1e-12, rtol=0)
    with torch.no_grad():
        for i, a in enumerate(alone):
            assert torch.allclose(a.decoders[0].synthesis(batch.codes[i:i + 1]),
                                  batch.decoders[i].synthesis(batch.codes[i:i + 1]), atol=1e-10, rtol=0)


def test_e4e_offsets_mask_layers_without_changing_the_shared_encoder(bundle):
    x = _images(bundle, 3)
    enc = bundle.e4e_encoder
    with torch.no_grad():
        enc.delta_head.weight.normal_()   # a random encoder's offsets start at zero: make them count
    trained = int(enc.num_unlocked)
    try:
        full = _method("e4e", bundle).invert(x).codes
        one = _method("e4e", bundle, offsets=0).invert(x).codes
        assert int(enc.num_unlocked) == trained
        # offsets=0: one code for all layers (the tiny bundle's average code is the same on each layer)
        assert torch.allclose(one, one[:, :1].expand_as(one), atol=1e-6)
        assert not torch.allclose(full, full[:, :1].expand_as(full), atol=1e-3)
        assert torch.allclose(full[:, 0], one[:, 0], atol=1e-6)  # layer 0 never has an offset
        two = _method("e4e", bundle, offsets=2).invert(x).codes
        assert torch.allclose(two[:, :3], full[:, :3], atol=1e-6)
        assert torch.allclose(two[:, 3:], one[:, 3:], atol=1e-6)
    finally:
        with torch.no_grad():
            enc.delta_head.weight.zero_()
    with pytest.raises(ValueError, match="offsets"):
        _method("e4e", bundle, offsets=bundle.num_layers)


def test_restyle_steps_are_milestones_and_invert_returns_the_last(bundle):
    x = _images(bundle, 2)
    m = _method("restyle", bundle, steps=3)
    steps = m.invert_steps(x)
    assert len(steps) == 3 and not torch.equal(steps[0], steps[-1])
    result = m.invert(x)
    assert torch.equal(result.codes, steps[-1])
    # anytime points: the code after each refinement step, with the seconds since invert() started
    assert [ms.step for ms in result.milestones] == [1, 2, 3]
    assert all(torch.equal(ms.codes, c) for ms, c in zip(result.milestones, steps))
    secs = [ms.seconds for ms in result.milestones]
    assert 0 < secs[0] <= secs[1] <= secs[2] and not any(ms.failed.any() for ms in result.milestones)
    assert torch.equal(_method("restyle", bundle, steps=1).invert(x).codes, steps[0])
    with pytest.raises(ValueError, match="restyle.steps"):
        build("restyle", {"steps": "0"})


def test_methods_without_their_bundle_part_are_skipped_with_a_message(tmp_path, capsys):
    bare = tiny_random_bundle(seed=0)
    bare.e4e_encoder = None
    bare.restyle_encoder = None
    original = runner._start

    def start(opts, sweep_id):
        s = original(opts, sweep_id)
        s.bundle = bare
        return s

    try:
        runner._start = start
        ids = run_benchmark(_opts(tmp_path, ["e4e", "restyle"], quiet=False, semantic=False))
    finally:
        runner._start = original
    out = capsys.readouterr().out
    assert ids == []
    assert "skipping e4e: bundle tiny-random-16px has no e4e_encoder" in out
    assert "skipping restyle: bundle tiny-random-16px has no restyle_encoder" in out


# -- PTI: the tuned generator is the method's output ------------------------------------------------------

def test_tuned_decoder_reconstructs_and_round_trips_through_its_state(bundle):
    x = _images(bundle, 3)
    res = pti_invert(bundle.generator, x, pivot_steps=3, tuning_steps=5)
    decoders = res.decoders()
    rec = res.reconstructions()
    with torch.no_grad():
        for i, d in enumerate(decoders):
            assert torch.allclose(d.synthesis(res.codes[i:i + 1]), rec[i:i + 1], atol=1e-4)
        plain = bundle.generator.synthesis(res.codes)
    assert not torch.allclose(plain, rec, atol=1e-3), "tuning must change what the pivot decodes to"
    again = TunedDecoder.from_state(decoders[1].state(), bundle.generator)
    with torch.no_grad():
        assert torch.equal(again.synthesis(res.codes[1:2]), decoders[1].synthesis(res.codes[1:2]))
    compact = res.decoders(compact=True)
    assert compact[0].bytes() * 2 == decoders[0].bytes()
    with pytest.raises(ValueError, match="does not fit"):
        TunedDecoder.from_state({"nope": torch.zeros(1, 3)}, bundle.generator)


def _opts(tmp_path, methods, **kw):
    from bench.metrics.semantic import SemanticConfig

    small = SemanticConfig(boundary_samples=600, interp_pairs=3, interp_steps=4, edit_images=4,
                           spread_samples=200)
    base = dict(methods=methods, bundle="tiny-random", limit=6, batch_size=2, results_dir=tmp_path,
                overrides={m: FAST[m] for m in methods if m in FAST}, report=False, quiet=True,
                semantic_config=small)
    base.update(kw)
    return RunOptions(**base)


def _metrics(results, run_id):
    with Store(results) as store:
        return ({r["name"]: r["value"] for r in store.metrics(run_id)},
                {r["image_id"]: r["metrics"] for r in store.images(run_id)},
                store.runs(run_id=run_id)[0])


@pytest.mark.parametrize("name", NEW)
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(name, tmp_path, monkeypatch):
    (whole,) = run_benchmark(_opts(tmp_path / "whole", [name]))
    calls = {"n": 0}
    real = runner._invert_batch

    def dies_on_the_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_invert_batch", dies_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(_opts(tmp_path / "cut", [name]))
    monkeypatch.setattr(runner, "_invert_batch", real)
    # the interrupted "process" is gone: its leases on the run's images are stale (bench.leases)
    import bench.leases
    monkeypatch.setattr(bench.leases, "is_stale", lambda owner, expires: True)
    with Store(tmp_path / "cut") as store:
        (run,) = store.runs()
        assert run["status"] == "running" and len(store.images(run["run_id"])) == 4
    (resumed,) = run_benchmark(_opts(tmp_path / "cut", [name]))   # a new process would do the same
    assert resumed == run["run_id"] == whole
    m_whole, rows_whole, _ = _metrics(tmp_path / "whole", whole)
    m_cut, rows_cut, run_cut = _metrics(tmp_path / "cut", resumed)
    assert run_cut["status"] == "complete"
    for image_id, row in rows_whole.items():
        assert rows_cut[image_id]["mse"] == pytest.approx(row["mse"], abs=1e-5)
    # the semantic stages of the resumed run (PTI: with tuned generators read back from disk) agree
    for key in ("edit_success_mean", "edit_dpips", "interp_swd", "ap_mean", "fid_domain"):
        if m_whole.get(key) is None:
            assert m_cut.get(key) is None
        else:
            assert m_cut[key] == pytest.approx(m_whole[key], rel=1e-4, abs=1e-6), key
    if name == "pti":   # completed without --keep-tuned: the tuned weights are gone
        assert not (tmp_path / "cut" / "runs" / resumed / "tuned").exists()


def test_pti_run_states_its_memory_and_keeps_tuned_weights_only_when_asked(tmp_path):
    (run_id,) = run_benchmark(_opts(tmp_path, ["pti"], keep_tuned=True, semantic=False))
    folder = tmp_path / "runs" / run_id / "tuned"
    files = sorted(folder.glob("*.pt"))
    assert len(files) == 3   # 6 images in batches of 2
    with Store(tmp_path) as store:
        run = store.runs(run_id=run_id)[0]
        kept = store.artifacts(run_id, "tuned_weights")
        notes = run["env"]["notes"]
        assert len(kept) == 3
        assert any("MB of changed synthesis weights (fp16)" in n for n in notes)
        assert any("official 350" in n for n in notes)
    blob = torch.load(files[0], map_location="cpu", weights_only=True)
    assert blob["kind"] == "idinvert.pti:TunedDecoder" and len(blob["states"]) == 2
    md = _table_markdown(tmp_path)
    assert "pti: memory: each image costs its own tuned generator" in md


def _table_markdown(results: Path) -> str:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "bench", "table", "--results", str(results), "--format", "md"],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


# -- the semantic stages decode with the per-image generators ----------------------------------------------

class Negated(nn.Module):
    """A 'tuned' generator that draws the negative of G's image: every attribute of the toy judge flips."""

    def __init__(self, g, owner, log):
        super().__init__()
        self.g, self.owner, self.log = g, owner, log

    def synthesis(self, codes):
        self.log.append((self.owner, codes.detach().clone()))
        return -self.g.synthesis(codes)


class Tripwire(nn.Module):
    num_layers, w_space_dim, resolution = 3, 48, 16

    def synthesis(self, codes):
        raise AssertionError("decoded with the bundle's G instead of the image's tuned generator")


def test_semantic_metrics_and_strips_follow_the_tuned_generators(tmp_path):
    from PIL import Image

    from bench.metrics.context import MetricContext
    from bench.metrics.semantic import evaluate_semantics
    from tests.test_semantic import (FAST as SEM_FAST, LinearGenerator, ProjectionClassifier, ToyBundle,
                                     axis_boundaries, toy_codes, toy_resources)

    attrs = ("a", "b", "c")
    g = LinearGenerator()
    codes = toy_codes(12) * 0.3
    config = dataclasses.replace(SEM_FAST, edit_images=12, alpha_unit="w", edit_alphas=(-3.0, 3.0))
    reals = g.synthesis(codes)

    def run(decoders, bundle, out):
        res = toy_resources(bundle, out, config, axis_boundaries(attrs))
        res.provide("boundary-ceiling", None)  # the ceiling samples G's own codes; here G guards decoding
        recons = reals if decoders is None else torch.cat([d.synthesis(c[None]) for d, c in zip(decoders, codes)])
        ctx = MetricContext(res, reals, recons.detach(), codes, list(range(12)), [str(i) for i in range(12)],
                            run_id="r", decoders=decoders)
        return {m.name: m for m in evaluate_semantics(ctx).metrics}, ctx

    plain, _ = run(None, ToyBundle(g, ProjectionClassifier(3), attrs), tmp_path / "plain")
    assert plain["edit_success_mean"].value == pytest.approx(1.0)
    log = []
    decoders = [Negated(g, i, log) for i in range(12)]
    tuned, ctx = run(decoders, ToyBundle(Tripwire(), ProjectionClassifier(3), attrs), tmp_path / "tuned")
    # the edits move the code as before, but each image's own (negating) generator draws them: every
    # edit now moves its attribute the other way, so the edit success follows the tuned generators
    assert tuned["edit_success_mean"].value == pytest.approx(0.0)
    # every code was decoded by the generator of the image it came from: an edit of image i is
    # codes[i] moved along one boundary axis (coordinates 0..2); an interpolation from image i is on the
    # segment codes[i] -> codes[j] for some other image j
    assert len({o for o, _ in log}) == 12
    for owner, decoded in log:
        for c in decoded:
            diff = (c - codes[owner])[0]
            on_axis = torch.allclose(diff[3:], torch.zeros(45), atol=1e-5)
            on_segment = any(_on_segment(diff, (codes[j] - codes[owner])[0]) for j in range(12) if j != owner)
            assert on_axis or on_segment, f"a code decoded by image {owner}'s generator is not derived from it"
    strip = next(a for a in ctx.artifacts if a[0] == "edit_strip")
    png = np.asarray(Image.open(tmp_path / "tuned" / strip[1])).astype(np.float32)
    # layout: real | alpha -3 | 0 | +3, 16 px tiles upscaled x4 with 2 px gaps: the alpha-0 panel is the
    # image's reconstruction by its own tuned generator
    idx = int(strip[2]["image_id"])
    panel = torch.from_numpy(png[::4, 2 * 66:2 * 66 + 64:4]).permute(2, 0, 1)
    expected = ((-g.synthesis(codes[idx:idx + 1]))[0].clamp(-1, 1) + 1) * 127.5
    assert (panel - expected).abs().max() <= 1.0
    assert (panel - (g.synthesis(codes[idx:idx + 1])[0].clamp(-1, 1) + 1) * 127.5).abs().max() > 10
    interp = next(a for a in ctx.artifacts if a[0] == "interp_strip")
    assert "tuned generator" in interp[2]["layout"] and "A's" in interp[2]["decoder"]
    interp_row = next(r for n, r in tuned.items() if n == "interp_swd")
    assert "A's" in interp_row.detail["decoder"]


def _on_segment(diff, direction, tol=1e-4):
    """diff = t * direction for some t in [0, 1]."""
    norm2 = float(direction.pow(2).sum())
    if norm2 == 0:
        return False
    t = float((diff * direction).sum()) / norm2
    return -tol <= t <= 1 + tol and torch.allclose(diff, t * direction, atol=tol)
