"""The real-checkpoint path end to end, without the real files: random-initialised files in the official
layouts (idinvert FFHQ-256 generator / encoder / VGG16; a small rosinality StyleGAN2 checkpoint), a
folder of user images of various sizes and formats with one broken file, through `run_benchmark`.

Every optimisation method runs one iteration on two images (the numbers mean nothing; the plumbing is
what is checked): runs complete, per-image rows stored, methods whose bundle part is missing skipped,
unavailable metrics carrying a reason that says what would enable them, and with the official boundary
files (../shared/data) plus a labels CSV the attribute AP computed.
The 256 px files (float16, ~420 MB) are written once per module.
"""

from pathlib import Path

import pytest
import torch
from PIL import Image

from bench.runner import RunOptions, run_benchmark
from bench.metrics.semantic import SemanticConfig
from bench.store import Store
from idinvert import real_bundles as rb
from methods import registry

ROOT = Path(__file__).resolve().parents[1]
BOUNDARIES = ROOT.parent / "shared" / "data" / "idinvert-boundaries-ffhq256"
OPTIMISERS = ("image2stylegan", "mse-optim", "optim-w", "idinvert")
ONE_ITER = {m: {"iters": "1"} for m in OPTIMISERS}
# One interpolated point and one edit per boundary: the analysis runs, at a few 256 px decodes.
pytestmark = pytest.mark.filterwarnings("ignore:ImageFolder. skipping:UserWarning")  # broken.png, on purpose
SMALL = SemanticConfig(interp_pairs=1, interp_steps=3, interp_strips=1, edit_alphas=(3.0,), edit_images=1,
                       edit_strip_images=1, spread_samples=64, batch_size=8)


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("official")
    rb.write_random_official_files(d, seed=0, dtype=torch.float16)
    return d


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Four readable images (PNG / JPEG, grayscale, non-square, various sizes) and a broken PNG."""
    d = tmp_path_factory.mktemp("images")
    g = torch.Generator().manual_seed(0)
    for name, (w, h), mode in (("a.png", (64, 64), "RGB"), ("b.jpg", (120, 90), "RGB"),
                               ("c.png", (300, 240), "RGB"), ("d.jpeg", (80, 80), "L")):
        arr = (torch.rand(h, w, 3, generator=g) * 255).byte().numpy()
        Image.fromarray(arr).convert(mode).save(d / name)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    labels = d.parent / f"{d.name}-labels.csv"
    labels.write_text("file,age,gender,eyeglasses\na.png,0,1,0\nb.jpg,1,0,1\nc.png,1,1,0\nd.jpeg,0,0,1\n")
    return d, labels


def _opts(results, **kw):
    # the built-in methods by name: "all" would also take test-only methods other test files register
    base = dict(methods=registry.resolve("encoder,image2stylegan,mse-optim,optim-w,idinvert-encoder,idinvert"),
                bundle=rb.STYLEGANINV_FFHQ256, limit=2,
                results_dir=results, overrides=ONE_ITER, report=False, quiet=True, semantic_config=SMALL)
    base.update(kw)
    return RunOptions(**base)


def _stored(results):
    with Store(results) as store:
        runs = {r["method"]: r for r in store.runs()}
        return {m: (r, store.images(r["run_id"]), {x["name"]: x for x in store.metrics(r["run_id"])})
                for m, r in runs.items()}


def test_official_layout_all_methods_end_to_end(official_dir, images, tmp_path, capsys):
    data, _ = images
    run_ids = run_benchmark(_opts(tmp_path, weights_dir=official_dir, data=data, quiet=False))
    out = capsys.readouterr().out
    assert "slow" in out and "bench: note:" in out                     # says so on a CPU
    assert "skipping encoder" in out and "conventional_encoder" in out
    assert "skipped 1 unreadable file(s): broken.png" in out
    stored = _stored(tmp_path)
    # the conventional encoder is absent from this bundle: that method is skipped, every other one runs
    assert set(stored) == {"image2stylegan", "mse-optim", "optim-w", "idinvert-encoder", "idinvert"}
    assert len(run_ids) == 5
    for method, (run, rows, metrics) in stored.items():
        assert run["status"] == "complete" and run["n_images"] == 2 and run["device"] == "cpu", method
        assert run["bundle"] == rb.STYLEGANINV_FFHQ256
        assert run["env"]["batch_size"] == 8            # the bundle's CPU default, not the harness's 64
        assert [r["image_id"] for r in rows] == ["a.png", "b.jpg"]
        assert all(r["status"] == "ok" and {"mse", "psnr"} <= set(r["metrics"]) for r in rows), method
        assert metrics["mse"]["status"] == "ok" and metrics["swd"]["status"] == "ok"
        for name in ("ap_mean", "edit_success_mean"):       # what would enable them is named
            reason = metrics[name]["detail"]["reason"]
            assert metrics[name]["status"] == "unavailable" and "--boundaries" in reason, (method, reason)
        assert "--labels" in metrics["ap_mean"]["detail"]["reason"]
        for name in ("dpips", "fid_domain", "interp_fid_domain", "lpips", "fid"):
            assert metrics[name]["status"] == "ok" or metrics[name]["detail"].get("reason"), (method, name)


@pytest.mark.skipif(not BOUNDARIES.is_dir(), reason=f"shared boundary files not found at {BOUNDARIES} "
                                                    "(../shared/data is absent from this checkout)")
def test_official_boundaries_and_labels_give_attribute_ap(official_dir, images, tmp_path):
    data, labels = images
    run_benchmark(_opts(tmp_path, methods=["idinvert-encoder"], weights_dir=official_dir, data=data,
                        labels=labels, boundaries=BOUNDARIES))
    ((run, rows, metrics),) = _stored(tmp_path).values()
    assert run["status"] == "complete" and len(rows) == 2 and run["env"]["label_source"] == "csv"
    for name in ("ap_age", "ap_gender", "ap_mean"):     # both classes present in a.png / b.jpg
        assert metrics[name]["status"] == "ok", (name, metrics[name]["detail"])
        assert 0 <= metrics[name]["value"] <= 1 and metrics[name]["detail"]["label_source"] == "csv"
    assert metrics["ap_age"]["detail"]["boundary_source"]
    assert metrics["ap_expression"]["status"] == "unavailable"      # a boundary without a label column
    # edits are made (strips saved) but nothing in this bundle can judge them
    assert metrics["edit_success_age"]["status"] == "unavailable"
    assert "judge" in metrics["edit_success_age"]["detail"]["reason"]
    with Store(tmp_path) as store:
        assert store.artifacts(run["run_id"], "edit_strip")


def test_stylegan2_checkpoint_runs_optimisers_and_skips_encoders(official_dir, images, tmp_path, capsys):
    from idinvert.nets.stylegan2 import StyleGAN2Generator

    data, _ = images
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.manual_seed(0)
    gen = StyleGAN2Generator(32, style_dim=64, n_mlp=2, channel_multiplier=1)
    torch.save({"g_ema": gen.state_dict(), "latent_avg": torch.randn(64)}, weights / "small.pt")
    (weights / rb.VGG16_FILE).symlink_to(official_dir / rb.VGG16_FILE)
    run_benchmark(_opts(tmp_path / "results", bundle=rb.STYLEGAN2, weights_dir=weights / "small.pt", data=data,
                        quiet=False))
    out = capsys.readouterr().out
    for method in ("encoder", "idinvert-encoder", "idinvert"):
        assert f"skipping {method}:" in out
    stored = _stored(tmp_path / "results")
    assert set(stored) == {"image2stylegan", "mse-optim", "optim-w"}
    for method, (run, rows, metrics) in stored.items():
        assert run["status"] == "complete" and len(rows) == 2 and metrics["mse"]["status"] == "ok", method
        assert run["bundle"] == f"{rb.STYLEGAN2}:small.pt"


def test_bad_boundary_folder_fails_before_inverting(official_dir, images, tmp_path):
    data, _ = images
    with pytest.raises(ValueError, match="boundary folder not found"):
        run_benchmark(_opts(tmp_path, methods=["mse-optim"], weights_dir=official_dir, data=data,
                            boundaries=tmp_path / "no-such-folder"))
    assert not (tmp_path / "bench.sqlite").exists()
