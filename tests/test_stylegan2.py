"""The pure-PyTorch StyleGAN2 generator: rosinality's layout, strict loading, the documented function."""

import math

import pytest
import torch
import torch.nn.functional as F

from idinvert.checkpoints import CheckpointError, UnsafeCheckpointError
from idinvert.nets.stylegan2 import (ModulatedConv2d, StyleGAN2Generator, infer_rosinality_config,
                                     load_rosinality_checkpoint, upfirdn2d)

SMALL = dict(size=8, style_dim=64, n_mlp=2, channel_multiplier=1)


def _expected_rosinality_keys(size, n_mlp):
    """rosinality's Generator state-dict keys, written out from its documented structure."""
    log_size = int(math.log2(size))
    keys = []
    for i in range(1, n_mlp + 1):
        keys += [f"style.{i}.weight", f"style.{i}.bias"]
    keys.append("input.input")

    def styled(prefix, up):
        ks = [f"{prefix}.conv.weight"]
        if up:
            ks.append(f"{prefix}.conv.blur.kernel")
        return ks + [f"{prefix}.conv.modulation.weight", f"{prefix}.conv.modulation.bias",
                     f"{prefix}.noise.weight", f"{prefix}.activate.bias"]

    def to_rgb(prefix, up):
        ks = [f"{prefix}.upsample.kernel"] if up else []
        return ks + [f"{prefix}.conv.weight", f"{prefix}.conv.modulation.weight",
                     f"{prefix}.conv.modulation.bias", f"{prefix}.bias"]

    keys += styled("conv1", False) + to_rgb("to_rgb1", False)
    for b in range(log_size - 2):
        keys += styled(f"convs.{2 * b}", True) + styled(f"convs.{2 * b + 1}", False)
    for b in range(log_size - 2):
        keys += to_rgb(f"to_rgbs.{b}", True)
    keys += [f"noises.noise_{j}" for j in range(2 * (log_size - 2) + 1)]
    return keys


def _randomised(gen, seed=0):
    """Give the zero-initialised biases and noise strengths values, so they matter in comparisons."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in gen.named_parameters():
            if name.endswith("bias") or name.endswith("noise.weight"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return gen


def _save_ckpt(path, gen, latent_avg=True, **extra):
    ckpt = {"g_ema": gen.state_dict(), **extra}
    if latent_avg:
        ckpt["latent_avg"] = torch.randn(gen.w_space_dim)
    torch.save(ckpt, path)
    return ckpt


def test_state_dict_layout_is_rosinalitys():
    with torch.device("meta"):
        gen = StyleGAN2Generator(256, 512, 8, channel_multiplier=2)
    sd = gen.state_dict()
    assert set(sd) == set(_expected_rosinality_keys(256, 8))
    assert tuple(sd["input.input"].shape) == (1, 512, 4, 4)
    assert tuple(sd["convs.8.conv.weight"].shape) == (1, 256, 512, 3, 3)      # 64 px: 256 * 2
    assert tuple(sd["convs.10.conv.weight"].shape) == (1, 128, 256, 3, 3)     # 256 px: 64 * 2
    assert tuple(sd["to_rgbs.5.conv.weight"].shape) == (1, 3, 128, 1, 1)
    assert tuple(sd["convs.0.conv.blur.kernel"].shape) == (4, 4)
    assert tuple(sd["noises.noise_12"].shape) == (1, 1, 256, 256)
    assert tuple(sd["style.8.weight"].shape) == (512, 512)
    assert gen.num_layers == 14 and gen.resolution == 256
    assert gen.z_space_dim == gen.w_space_dim == 512
    assert "truncation.w_avg" not in sd           # kept outside the layout, as rosinality's latent_avg


@pytest.mark.parametrize("size,cm,n_mlp,style_dim", [(8, 1, 2, 64), (64, 1, 8, 512),
                                                     (256, 2, 8, 512), (1024, 2, 8, 512)])
def test_config_is_inferred_from_shapes(size, cm, n_mlp, style_dim):
    with torch.device("meta"):
        gen = StyleGAN2Generator(size, style_dim, n_mlp, channel_multiplier=cm)
    # below 64 px every layer has 512 channels: the multiplier cannot be seen and does not matter
    assert infer_rosinality_config(gen.state_dict()) == dict(
        size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=cm if size >= 64 else 2)


def test_checkpoint_loads_strictly_with_latent_avg(tmp_path):
    src = _randomised(StyleGAN2Generator(**SMALL))
    ckpt = _save_ckpt(tmp_path / "g.pt", src)
    gen = load_rosinality_checkpoint(tmp_path / "g.pt")
    assert (gen.resolution, gen.num_layers, gen.w_space_dim) == (8, 4, 64)
    for k, v in src.state_dict().items():
        assert torch.equal(gen.state_dict()[k], v), k
    assert torch.equal(gen.truncation.w_avg, ckpt["latent_avg"])
    z = torch.randn(2, 64)
    with torch.no_grad():
        assert torch.allclose(gen(z), src(z))


def test_training_checkpoint_without_latent_avg_estimates_it(tmp_path):
    import argparse
    src = StyleGAN2Generator(**SMALL)
    _save_ckpt(tmp_path / "train.pt", src, latent_avg=False, g=src.state_dict(),
               args=argparse.Namespace(size=8))
    gen = load_rosinality_checkpoint(tmp_path / "train.pt")
    assert "estimated" in gen.truncation.w_avg_source
    assert torch.allclose(gen.truncation.w_avg, src.estimate_w_avg(4096, seed=0))


def test_missing_key_is_named(tmp_path):
    sd = StyleGAN2Generator(**SMALL).state_dict()
    sd["convs.1.conv.weight_renamed"] = sd.pop("convs.1.conv.weight")
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(64)}, tmp_path / "g.pt")
    with pytest.raises(ValueError) as e:
        load_rosinality_checkpoint(tmp_path / "g.pt")
    assert "convs.1.conv.weight" in str(e.value) and "weight_renamed" in str(e.value)
    assert "g.pt" in str(e.value)


def test_wrong_shape_is_named(tmp_path):
    sd = StyleGAN2Generator(**SMALL).state_dict()
    sd["conv1.activate.bias"] = torch.zeros(7)
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(64)}, tmp_path / "g.pt")
    with pytest.raises(ValueError, match=r"conv1\.activate\.bias.*\(7,\)"):
        load_rosinality_checkpoint(tmp_path / "g.pt")


def test_not_a_rosinality_checkpoint_says_what_it_expected(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="g_ema"):
        load_rosinality_checkpoint(tmp_path / "x.pt")


def test_nvidia_pkl_is_refused(tmp_path):
    (tmp_path / "stylegan2-ffhq-config-f.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(UnsafeCheckpointError, match="convert"):
        load_rosinality_checkpoint(tmp_path / "stylegan2-ffhq-config-f.pkl")


# ---- the function computed ------------------------------------------------------------------------

def test_upfirdn2d_known_answers():
    x = torch.randn(2, 3, 5, 6)
    assert torch.allclose(upfirdn2d(x, torch.ones(1, 1)), x)
    box = torch.full((2, 2), 0.25)
    assert torch.allclose(upfirdn2d(x[..., :4, :4], box, down=2), F.avg_pool2d(x[..., :4, :4], 2))
    nearest = upfirdn2d(x, torch.ones(2, 2), up=2, pad=(1, 0))
    assert torch.allclose(nearest, F.interpolate(x, scale_factor=2, mode="nearest"))
    # an asymmetric kernel is applied as a true convolution (flipped), as the FIR filter is defined
    k = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    assert torch.allclose(upfirdn2d(x, k, pad=(1, 0))[..., :, 1:], x[..., :, :-1])


def test_modulated_conv_equals_per_sample_demodulated_weights():
    torch.manual_seed(0)
    for up in (False, True):
        conv = ModulatedConv2d(6, 5, 3, style_dim=4, upsample=up)
        x, w = torch.randn(3, 6, 8, 8), torch.randn(3, 4)
        out = conv(x, w)
        for b in range(3):
            s = conv.modulation(w[b:b + 1])[0]
            weight = conv.weight[0] * conv.scale * s.view(1, -1, 1, 1)
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
            if up:
                ref = conv.blur(F.conv_transpose2d(x[b:b + 1], weight.transpose(0, 1), stride=2))
            else:
                ref = F.conv2d(x[b:b + 1], weight, padding=1)
            assert torch.allclose(out[b:b + 1], ref, atol=1e-5), (up, b)


def test_synthesis_is_deterministic_and_batch_independent():
    torch.manual_seed(0)
    gen = _randomised(StyleGAN2Generator(**SMALL)).eval()
    wp = torch.randn(3, gen.num_layers, gen.w_space_dim)
    with torch.no_grad():
        batch = gen.synthesis(wp)
        single = torch.cat([gen.synthesis(wp[i:i + 1]) for i in range(3)])
        again = gen.synthesis(wp)
    assert batch.shape == (3, 3, 8, 8)
    assert torch.equal(batch, again)
    assert torch.allclose(batch, single, atol=1e-5)
    gen.set_noise_mode("random")
    with torch.no_grad():
        assert not torch.allclose(gen.synthesis(wp), batch)


def test_w_input_broadcasts_and_truncation_pulls_to_w_avg():
    gen = StyleGAN2Generator(**SMALL, truncation_psi=0.0, truncation_layers=2).eval()
    gen.set_w_avg(torch.randn(64), "test")
    z = torch.randn(2, 64)
    with torch.no_grad():
        wp = gen.z_to_wp(z)
        free = gen.z_to_wp(z, truncate=False)
    assert wp.shape == (2, 4, 64)
    assert torch.allclose(wp[:, :2], gen.truncation.w_avg.expand(2, 2, 64))
    assert torch.equal(wp[:, 2:], free[:, 2:])
    assert torch.equal(free[:, 0], free[:, 3])
    with pytest.raises(ValueError, match="W\\+"):
        gen.synthesis(torch.randn(2, 5, 64))
