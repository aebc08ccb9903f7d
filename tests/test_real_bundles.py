"""Real bundles from user-supplied files, exercised with random-initialised files in the official
layouts: strict loading, named mismatches, `bench doctor` rows, StyleGAN2 checkpoints, refused pickles.

The 256 px files are written once per module (float16, ~420 MB in a temporary folder); variants with
one broken file link to the others instead of copying them.
"""

import pickle

import pytest
import torch

from idinvert import real_bundles as rb
from idinvert import zoo
from idinvert.checkpoints import UnsafeCheckpointError
from idinvert.nets.perceptual import VGG16Perceptual
from idinvert.nets.stylegan2 import StyleGAN2Generator


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    rb.write_random_official_files(d, seed=0, dtype=torch.float16)
    return d


def _variant(tmp_path, official_dir, broken_name, state_dict):
    """A weights folder linking to the good files, with `broken_name` replaced by `state_dict`."""
    for name in (rb.GENERATOR_FILE, rb.ENCODER_FILE, rb.VGG16_FILE):
        if name != broken_name:
            (tmp_path / name).symlink_to(official_dir / name)
    torch.save(state_dict, tmp_path / broken_name)
    return tmp_path


def test_real_bundles_are_registered():
    assert {rb.STYLEGANINV_FFHQ256, rb.STYLEGAN2} <= set(zoo.BUNDLES)
    assert rb.GENERATOR_FILE in zoo.BUNDLES[rb.STYLEGANINV_FFHQ256].files


def test_official_bundle_loads_strictly(official_dir):
    bundle = zoo.load_bundle(rb.STYLEGANINV_FFHQ256, weights_dir=official_dir)
    assert (bundle.resolution, bundle.num_layers, bundle.w_dim) == (256, 14, 512)
    assert bundle.has("encoder") and isinstance(bundle.perceptual, VGG16Perceptual)
    assert not bundle.has("conventional_encoder") and not bundle.has("classifier")
    assert bundle.info.lambda_vgg_default == 5e-5
    sd = torch.load(official_dir / rb.GENERATOR_FILE, weights_only=True)
    assert torch.equal(bundle.w_avg, sd["truncation.w_avg"].float())
    enc = torch.load(official_dir / rb.ENCODER_FILE, weights_only=True, mmap=True)
    key = next(k for k in enc if k.endswith("weight"))
    assert torch.equal(bundle.encoder.state_dict()[key], enc[key].float())
    with torch.no_grad():
        codes = bundle.encoder(bundle.generator.synthesis(bundle.w_avg.expand(1, 14, 512)))
    assert codes.shape == (1, 14, 512)


def test_doctor_lists_every_file_present(official_dir):
    rows = rb.doctor_report(official_dir)
    assert [(r["file"], r["status"]) for r in rows] == [
        (rb.GENERATOR_FILE, "present"), (rb.ENCODER_FILE, "present"), (rb.VGG16_FILE, "present")]


def test_missing_file_names_it_and_where_it_goes(tmp_path, official_dir):
    (tmp_path / rb.GENERATOR_FILE).symlink_to(official_dir / rb.GENERATOR_FILE)
    with pytest.raises(zoo.MissingWeights) as e:
        zoo.load_bundle(rb.STYLEGANINV_FFHQ256, weights_dir=tmp_path)
    assert rb.ENCODER_FILE in str(e.value) and str(tmp_path) in str(e.value)
    rows = {r["file"]: r for r in rb.doctor_report(tmp_path)}
    assert rows[rb.GENERATOR_FILE]["status"] == "present"
    assert rows[rb.VGG16_FILE]["status"] == "missing"
    assert str(tmp_path / rb.VGG16_FILE) in rows[rb.VGG16_FILE]["detail"]


def test_renamed_key_fails_naming_it(tmp_path, official_dir):
    sd = torch.load(official_dir / rb.VGG16_FILE, weights_only=True)
    sd["layer0.weight_renamed"] = sd.pop("layer0.weight")
    d = _variant(tmp_path, official_dir, rb.VGG16_FILE, sd)
    with pytest.raises(ValueError, match=r"layer0\.weight") as e:
        zoo.load_bundle(rb.STYLEGANINV_FFHQ256, weights_dir=d)
    assert "layer0.weight_renamed" in str(e.value) and rb.VGG16_FILE in str(e.value)
    rows = {r["file"]: r for r in rb.doctor_report(d)}
    assert rows[rb.VGG16_FILE]["status"] == "wrong"
    assert "layer0.weight_renamed" in rows[rb.VGG16_FILE]["detail"]


def test_wrong_shape_fails_naming_it(tmp_path, official_dir):
    sd = torch.load(official_dir / rb.GENERATOR_FILE, weights_only=True)
    key = "synthesis.output6.bias"
    sd[key] = torch.zeros(4)
    d = _variant(tmp_path, official_dir, rb.GENERATOR_FILE, sd)
    with pytest.raises(ValueError, match=r"synthesis\.output6\.bias.*\(4,\)"):
        zoo.load_bundle(rb.STYLEGANINV_FFHQ256, weights_dir=d)
    rows = {r["file"]: r for r in rb.doctor_report(d)}
    assert rows[rb.GENERATOR_FILE]["status"] == "wrong" and key in rows[rb.GENERATOR_FILE]["detail"]


# ---- StyleGAN2 -----------------------------------------------------------------------------------

def _small_stylegan2_dir(tmp_path, official_dir, name="ffhq-small.pt"):
    gen = StyleGAN2Generator(8, style_dim=64, n_mlp=2, channel_multiplier=1)
    latent_avg = torch.randn(64)
    torch.save({"g_ema": gen.state_dict(), "latent_avg": latent_avg}, tmp_path / name)
    (tmp_path / rb.VGG16_FILE).symlink_to(official_dir / rb.VGG16_FILE)
    return tmp_path / name, latent_avg


def test_stylegan2_bundle_has_generator_and_no_encoder(tmp_path, official_dir):
    ckpt, latent_avg = _small_stylegan2_dir(tmp_path, official_dir)
    for where in (tmp_path, ckpt):          # the folder or the file itself
        bundle = zoo.load_bundle(rb.STYLEGAN2, weights_dir=where)
        assert bundle.resolution == 8 and bundle.num_layers == 4 and bundle.w_dim == 64
        assert not bundle.has("encoder") and not bundle.has("conventional_encoder")
        assert torch.equal(bundle.w_avg, latent_avg)
        assert isinstance(bundle.perceptual, VGG16Perceptual)
    rows = [r for r in rb.doctor_report(tmp_path) if r["group"] == rb.STYLEGAN2]
    assert rows[0]["file"] == ckpt.name and rows[0]["status"] == "present"
    assert "8 px" in rows[0]["detail"]


def test_stylegan2_several_checkpoints_must_be_chosen(tmp_path, official_dir):
    _small_stylegan2_dir(tmp_path, official_dir, "a.pt")
    torch.save({"g_ema": {}}, tmp_path / "b.pt")
    with pytest.raises(ValueError, match="a.pt, b.pt"):
        zoo.load_bundle(rb.STYLEGAN2, weights_dir=tmp_path)
    rows = {r["file"]: r for r in rb.doctor_report(tmp_path) if r["group"] == rb.STYLEGAN2}
    assert rows["a.pt"]["status"] == "present" and rows["b.pt"]["status"] == "wrong"


class _RunsShell:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_nvidia_pickle_is_refused_and_reported(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "stylegan2-ffhq-config-f.pkl", "wb") as f:
        pickle.dump(_RunsShell(marker), f)
    with pytest.raises(UnsafeCheckpointError, match="pickle"):
        zoo.load_bundle(rb.STYLEGAN2, weights_dir=tmp_path / "stylegan2-ffhq-config-f.pkl")
    with pytest.raises(FileNotFoundError, match="convert"):
        zoo.load_bundle(rb.STYLEGAN2, weights_dir=tmp_path)
    rows = [r for r in rb.doctor_report(tmp_path) if r["group"] == rb.STYLEGAN2]
    assert rows[0]["status"] == "wrong" and "pickle" in rows[0]["detail"]
    assert not marker.exists()
