"""Compiled / autocast loops (idinvert.speed), the per-machine choice (bench.speed_choice), the loss terms
(idinvert.loss_terms) and `bench perf --variants`."""

from __future__ import annotations

import json

import pytest
import torch

from idinvert import speed as speed_mod
from idinvert.inversion import LoopOptions, optimize_codes
from idinvert.loss_terms import DeltaLoss, DomainLoss, LatentLoss, PerceptualLoss, PixelLoss
from idinvert.speed import CODE_TOLERANCE, EAGER, Speed
from idinvert.zoo import tiny_random_bundle


@pytest.fixture
def parts():
    bundle = tiny_random_bundle(seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        x = bundle.generator.synthesis(bundle.generator.sample_wp(3, gen)).clamp(-1, 1)
        start = bundle.encoder.eval()(x)
    return bundle, x, start


@pytest.fixture(autouse=True)
def fresh_compiler_state():
    speed_mod.forget()
    yield
    speed_mod.forget()


def idinvert_terms(bundle):
    return [PixelLoss(), PerceptualLoss(bundle.perceptual, 1e-2), DomainLoss(bundle.encoder, 2.0)]


def _mse(bundle, codes, x):
    with torch.no_grad():
        return float((bundle.generator.synthesis(codes) - x).pow(2).mean())


@pytest.mark.slow
@pytest.mark.skipif(speed_mod.compiler_problem("cpu") is not None, reason="no C++ compiler for inductor")
def test_compiled_loop_gives_the_eager_codes_and_metrics_and_prints_nothing(parts, capfd):
    """One small compile (tiny bundle, 3 images, 3 steps; image2stylegan's terms, so G and F are
    compiled -- E goes through the same wrapper): the same codes within CODE_TOLERANCE, the same
    reconstruction MSE within 1e-4 relative, and nothing from the compiler on the terminal. It costs
    a compile of two small graphs, forward and backward (~1-2 min on 2 idle cores)."""
    bundle, x, start = parts
    terms = [PixelLoss(), PerceptualLoss(bundle.perceptual, 1e-2)]
    eager = optimize_codes(bundle.generator, x, start, terms, steps=3)
    capfd.readouterr()
    fast = optimize_codes(bundle.generator, x, start, terms, steps=3, options=LoopOptions(speed=Speed(compile=True)))
    out, err = capfd.readouterr()
    assert speed_mod.notes() == [], "the compile fell back to eager"
    assert out == "" and err == "", f"compiler output reached the terminal: {err[:300]!r}"
    assert (fast.codes - eager.codes).abs().max().item() <= CODE_TOLERANCE
    assert (fast.codes - start).abs().max() > 1e-3  # it did optimise
    m_fast, m_eager = _mse(bundle, fast.codes, x), _mse(bundle, eager.codes, x)
    assert abs(m_fast - m_eager) / m_eager <= 1e-4
    assert torch.allclose(fast.loss_history, eager.loss_history, rtol=1e-4)


def test_without_a_compiler_the_loop_runs_eagerly_with_one_note(parts, monkeypatch):
    bundle, x, start = parts
    monkeypatch.setattr(speed_mod.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    assert "no C++ compiler" in speed_mod.compiler_problem("cpu")
    eager = optimize_codes(bundle.generator, x, start, idinvert_terms(bundle), steps=2)
    fast = optimize_codes(bundle.generator, x, start, idinvert_terms(bundle), steps=2,
                          options=LoopOptions(speed=Speed(compile=True)))
    assert torch.equal(fast.codes, eager.codes)
    assert len(speed_mod.notes()) == 1 and "no C++ compiler" in speed_mod.notes()[0]


def test_a_failing_compile_falls_back_to_eager_and_says_why(parts, monkeypatch):
    bundle, x, start = parts
    Failure = type("BackendCompilerFailed", (RuntimeError,), {"__module__": "torch._dynamo.exc"})

    def broken_compile(net, **kw):
        def call(*a):
            raise Failure("inductor: cannot compile")
        return call

    monkeypatch.setattr(speed_mod, "compiler_problem", lambda device_type="cpu": None)
    monkeypatch.setattr(torch, "compile", broken_compile)
    eager = optimize_codes(bundle.generator, x, start, steps=2)
    fast = optimize_codes(bundle.generator, x, start, steps=2, options=LoopOptions(speed=Speed(compile=True)))
    assert torch.equal(fast.codes, eager.codes)
    assert speed_mod.notes() == ["networks run eagerly: torch.compile failed (BackendCompilerFailed: "
                                 "inductor: cannot compile)"]


def test_compiled_wrapper_is_made_once_per_network(monkeypatch):
    made = []
    monkeypatch.setattr(speed_mod, "compiler_problem", lambda device_type="cpu": None)
    monkeypatch.setattr(torch, "compile", lambda net, **kw: made.append(net) or net)
    net = torch.nn.Linear(2, 2)
    a, b = Speed(compile=True).run(net), Speed(compile=True).run(net)
    assert a is b and made == [net]
    assert EAGER.run(net) is net


def test_autocast_path_runs_on_cpu_for_the_gpu_code_path(parts):
    """The autocast context the CUDA path uses, exercised on the CPU: shapes, dtypes, finite losses."""
    bundle, x, start = parts
    res = optimize_codes(bundle.generator, x, start, idinvert_terms(bundle), steps=2,
                         options=LoopOptions(speed=Speed(autocast="bf16")))
    assert res.codes.shape == start.shape and res.codes.dtype == torch.float32
    assert torch.isfinite(res.loss_history).all() and res.loss_history.dtype == torch.float32
    with pytest.raises(ValueError, match="autocast"):
        Speed(autocast="int8")


def test_cuda_compiler_check_names_triton(monkeypatch):
    import torch.utils._triton as triton_utils

    monkeypatch.setattr(triton_utils, "has_triton", lambda: False)
    assert "Triton" in speed_mod.compiler_problem("cuda")


# -- loss terms --------------------------------------------------------------------------------------

def test_loss_terms_known_answers():
    x = torch.zeros(2, 3, 4, 4)
    rec = torch.ones(2, 3, 4, 4)
    wp = torch.zeros(2, 3, 5)
    wp[1, 1:] = 2.0  # image 1: layers 1..2 at 2, layer 0 at 0
    assert torch.equal(PixelLoss(0.5).bind(x)(wp, rec), torch.tensor([0.5, 0.5]))
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    assert torch.equal(PixelLoss(mask=mask).bind(x)(wp, rec), torch.tensor([0.5, 0.5]))
    assert torch.allclose(DeltaLoss(1.0).bind(x)(wp, rec), torch.tensor([0.0, 4.0]))
    center = torch.ones(1, 1, 5)
    assert torch.allclose(LatentLoss(2.0, center).bind(x)(wp, rec), torch.tensor([2.0, 2 * (1 + 2 * 1) / 3]))
    double = PerceptualLoss(lambda im: 2 * im, 0.25).bind(x)
    assert torch.allclose(double(wp, rec), torch.tensor([1.0, 1.0]))  # 0.25 * mean((0 - 2)^2)
    ident = DomainLoss(lambda im: torch.zeros(2, 15), 1.0).bind(x)
    assert torch.allclose(ident(wp, rec), wp.pow(2).flatten(1).mean(1))


def test_regularisers_pull_the_codes_towards_their_target(parts):
    bundle, x, start = parts
    center = bundle.w_avg.reshape(1, 1, -1)
    free = optimize_codes(bundle.generator, x, start, steps=10)
    held = optimize_codes(bundle.generator, x, start, [PixelLoss(), LatentLoss(100.0, center)], steps=10)
    flat = optimize_codes(bundle.generator, x, start, [PixelLoss(), DeltaLoss(100.0)], steps=10)
    assert (held.codes - center).pow(2).mean() < (free.codes - center).pow(2).mean()
    spread = lambda c: (c[:, 1:] - c[:, :1]).pow(2).mean()  # noqa: E731
    assert spread(flat.codes) < spread(free.codes)


# -- the per-machine choice --------------------------------------------------------------------------

def _measurement(eager_s, compiled_s, compile_s, bf16_s=None, bf16_diff=0.0):
    def v(compile, s, autocast=None, diff=0.0):
        return {"speed": {"compile": compile, "autocast": autocast}, "threads": 1, "s_per_image_step": s,
                "compile_s": compile_s if compile else 0.0, "max_code_diff": diff, "mse_rel_diff": diff}
    out = {"eager fp32, 1 thread": v(False, eager_s), "compiled fp32, 1 thread": v(True, compiled_s)}
    if bf16_s is not None:
        out["eager bf16, 1 thread"] = v(False, bf16_s, "bf16", bf16_diff)
    return {"reference": "eager fp32, 1 thread", "variants": out}


def test_compiling_is_chosen_only_when_it_pays_for_its_compile():
    from bench.speed_choice import best_variant

    m = _measurement(eager_s=0.010, compiled_s=0.008, compile_s=60.0)
    assert best_variant(m, 1_000, 1)[0] == "eager fp32, 1 thread"           # saves 2 s, costs 60 s
    assert best_variant(m, 160_000, 1)[0] == "compiled fp32, 1 thread"      # saves 320 s
    fast_but_wrong = _measurement(0.010, 0.009, 60.0, bf16_s=0.001, bf16_diff=1.0)
    assert best_variant(fast_but_wrong, 160_000, 1)[0] == "compiled fp32, 1 thread"
    fast_and_right = _measurement(0.010, 0.009, 60.0, bf16_s=0.001, bf16_diff=1e-4)
    assert best_variant(fast_and_right, 160_000, 1)[0] == "eager bf16, 1 thread"


def test_the_cache_belongs_to_one_machine(tmp_path):
    from bench.speed_choice import fingerprint_id, load_cache, machine_fingerprint, save_cache

    fp = machine_fingerprint(torch.device("cpu"))
    path = tmp_path / "cache" / "speed.json"
    assert load_cache(path, fingerprint_id(fp)) == {}  # absent
    save_cache(path, fp, {"k": _measurement(1, 1, 1)})
    assert "k" in load_cache(path, fingerprint_id(fp))
    other = {**fp, "cpu": "another CPU"}
    assert load_cache(path, fingerprint_id(other)) == {}  # a changed machine measures again
    assert json.loads(path.read_text())["fingerprint"]["cpu"] == fp["cpu"]


def test_choose_measures_once_then_reads_the_cache(parts, tmp_path, monkeypatch):
    from bench import speed_choice
    from methods.registry import build

    bundle, x, _ = parts
    monkeypatch.setattr(speed_mod, "compiler_problem", lambda device_type="cpu": "no compiler (test)")
    calls = []
    real = speed_choice.measure
    monkeypatch.setattr(speed_choice, "measure",
                        lambda *a, **k: calls.append(1) or real(*a, **{**k, "steps": 1, "rounds": 1}))
    method = build("mse-optim", {})
    method.prepare(bundle)
    speed, record = speed_choice.choose(method, x, 1e6, tmp_path, say=lambda s: None)
    again, _ = speed_choice.choose(method, x, 1e6, tmp_path, say=lambda s: None)
    assert speed == again == EAGER and len(calls) == 1
    assert record["variant"] == "eager fp32, 1 thread" or record["variant"].startswith("eager fp32")
    assert (tmp_path / "cache" / "speed.json").exists()


def test_run_records_how_its_networks_ran(tmp_path):
    from bench.runner import RunOptions, run_benchmark
    from bench.store import Store

    opts = RunOptions(methods=["mse-optim"], bundle="tiny-random", limit=2, results_dir=tmp_path,
                      semantic=False, report=False, quiet=True, overrides={"mse-optim": {"iters": "3"}})
    run_benchmark(opts)
    env = Store(tmp_path, readonly=True).runs()[0]["env"]
    assert env["speed"]["mode"] == "auto"
    assert env["speed"]["speed"] == {"compile": False, "autocast": None}  # a 3-step run is not worth compiling
    assert 0 < env["speed"]["eager_estimate_s"] < 300


def test_perf_variants_prints_ratios_and_fills_the_runners_cache(tmp_path, capsys, monkeypatch):
    from bench.tools import perf

    monkeypatch.setattr(speed_mod, "compiler_problem", lambda device_type="cpu": "no compiler (test)")
    perf.main(["--variants", "--tiny", "--methods", "mse-optim", "--images", "2", "--steps", "1", "--rounds", "1",
               "--no-processes", "--results", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert "mse-optim" in out and "eager fp32, 1 thread" in out and "eager bf16, 1 thread" in out
    assert "eager fp32, 2 threads" in out and "compiler: no compiler (test)" in out
    cache = json.loads((tmp_path / "cache" / "speed.json").read_text())
    (entry,) = cache["methods"].values()
    assert entry["variants"]["eager fp32, 1 thread"]["ratio"] == 1.0
    with pytest.raises(SystemExit, match="not an optimisation method"):
        perf.main(["--variants", "--tiny", "--methods", "encoder", "--results", str(tmp_path)])
