"""e4e and ReStyle: the encoders' contracts (shapes, progressive mask, refinement steps, batch =
one at a time) and their training loops (losses fall, schedule as official, resume loses nothing)."""

import json

import pytest
import torch

from idinvert.codes import expand_code, mapping_codes, mean_code
from idinvert.domains.base import ImageSet
from idinvert.nets.e4e_encoder import E4EEncoder, LatentDiscriminator
from idinvert.nets.restyle_encoder import ReStyleEncoder, restyle_invert
from idinvert.nets.stylegan_encoder import EncoderBackbone, StyleGANEncoder
from idinvert.nets.stylegan_generator import StyleGANGenerator
from idinvert.training.e4e import (E4EConfig, latent_discriminator_accuracy, progressive_stage,
                                   train_e4e_encoder)
from idinvert.training.restyle import ReStyleConfig, train_restyle_encoder
from idinvert.zoo import tiny_random_bundle

TINY = dict(batch_size=8, encoder_channels_base=8, encoder_channels_max=32, log_every=5,
            checkpoint_every=5, val_every=5, val_images=16)


@pytest.fixture(scope="module")
def bundle():
    return tiny_random_bundle(seed=0, resolution=16)


@pytest.fixture(scope="module")
def real_images(bundle):
    with torch.no_grad():
        images = bundle.generator.synthesis(mapping_codes(bundle.generator, 80,
                                                          torch.Generator().manual_seed(123)))
    return ImageSet.from_tensor("tiny-real", images)


def _per_layer_generator():
    torch.manual_seed(0)
    return StyleGANGenerator(16, z_space_dim=32, w_space_dim=32, num_mapping_layers=2,
                             repeat_w=False, final_tanh=True, truncation_psi=None,
                             truncation_layers=None, fmaps_base=256, fmaps_max=32).eval()


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _e4e(w_dim=32, **kw):
    torch.manual_seed(1)
    return E4EEncoder(16, w_dim, encoder_channels_base=8, encoder_channels_max=32, **kw).eval()


# ---- networks ------------------------------------------------------------------------------------

def test_backbone_has_the_idinvert_encoders_blocks():
    backbone = EncoderBackbone(16, 3, 8, 32)
    full = StyleGANEncoder(16, 32, 3, 8, 32).state_dict()
    for k, v in backbone.state_dict().items():
        assert k in full and full[k].shape == v.shape, k
    assert backbone(torch.zeros(2, 3, 16, 16)).shape == (2, backbone.out_channels, 4, 4)


def test_e4e_stage_zero_gives_one_code_per_image_over_the_average():
    enc = _e4e()
    avg = torch.randn(enc.num_layers, 32)          # a per-layer average code
    enc.set_latent_avg(avg)
    enc.set_progressive_stage(0)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    rel = enc(x) - avg
    assert torch.allclose(rel, rel[:, :1].expand_as(rel), atol=1e-6)
    w0, deltas = enc.forward_parts(x)
    assert torch.equal(deltas, torch.zeros_like(deltas))
    assert torch.allclose(enc(x), avg + w0[:, None], atol=1e-6)


def test_e4e_offsets_start_at_zero_and_unlock_exactly_layers_one_to_k():
    enc = _e4e()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(enc.forward_parts(x)[1], torch.zeros(2, enc.num_layers, 32))
    with torch.no_grad():
        enc.delta_head.weight.normal_()       # as after training
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    for k in (1, 3, enc.num_layers - 1):
        enc.set_progressive_stage(k)
        _, deltas = enc.forward_parts(x)
        nonzero = deltas.abs().sum((0, 2)) > 0
        assert nonzero.tolist() == [0 < i <= k for i in range(enc.num_layers)]
    with pytest.raises(ValueError, match="num_unlocked"):
        enc.set_progressive_stage(enc.num_layers)
    with pytest.raises(ValueError, match="latent_avg"):
        enc.set_latent_avg(torch.zeros(3, 32))


def test_e4e_state_records_latent_avg_and_stage():
    enc = _e4e()
    enc.set_latent_avg(torch.ones(32))
    enc.set_progressive_stage(2)
    other = _e4e()
    other.load_state_dict(enc.state_dict())
    assert int(other.num_unlocked) == 2 and torch.equal(other.latent_avg, enc.latent_avg)


def test_e4e_batch_equals_one_at_a_time():
    enc = _e4e()
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    batch = enc(x)
    single = torch.cat([enc(x[i:i + 1]) for i in range(4)])
    assert torch.allclose(batch, single, atol=1e-5)


def test_latent_discriminator_is_a_four_layer_leaky_mlp():
    d = LatentDiscriminator(32)
    linears = [m for m in d.modules() if isinstance(m, torch.nn.Linear)]
    acts = [m for m in d.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert len(linears) == 4 and len(acts) == 3 and all(a.negative_slope == 0.2 for a in acts)
    assert d(torch.randn(5, 32)).shape == (5,)
    with pytest.raises(ValueError, match="w \\[N, 32\\]"):
        d(torch.randn(5, 2, 32))


def test_latent_discriminator_accuracy_counts_both_sides():
    class Sign(torch.nn.Module):
        def forward(self, w):
            return w[:, 0]
    fake = -torch.ones(4, 2, 3)                # called fake: correct
    real = torch.cat([torch.ones(1, 2, 3), -torch.ones(1, 2, 3)])   # half called real
    acc = latent_discriminator_accuracy(Sign(), fake, real)
    assert acc["on_encoder_codes"] == 1.0 and acc["on_mapped_codes"] == 0.5
    assert acc["balanced"] == 0.75


def test_restyle_invert_adds_one_residual_per_step(bundle):
    G = bundle.generator
    torch.manual_seed(2)
    enc = ReStyleEncoder(16, G.w_space_dim, encoder_channels_base=8, encoder_channels_max=32).eval()
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    avg = mean_code(G)
    with torch.no_grad():
        codes, recons = restyle_invert(enc, x, G, avg, steps=3, return_images=True)
        assert len(codes) == 3 and codes[0].shape == (3, G.num_layers, G.w_space_dim)
        y0 = G.synthesis(avg[None]).expand(3, -1, -1, -1)
        assert torch.allclose(codes[0], avg + enc(x, y0), atol=1e-6)
        assert torch.allclose(codes[2], codes[1] + enc(x, recons[1]), atol=1e-6)
        assert torch.allclose(recons[2], G.synthesis(codes[2]), atol=1e-6)
        single = restyle_invert(enc, x[1:2], G, avg, steps=3)
        enc.set_latent_avg(avg)
        own = restyle_invert(enc, x, G, steps=3)       # the encoder's own start code
    assert torch.allclose(own[-1], codes[-1], atol=1e-6)
    assert torch.allclose(single[-1], codes[-1][1:2], atol=1e-5)
    with pytest.raises(ValueError, match="6"):
        enc(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="steps"):
        restyle_invert(enc, x, G, avg, steps=0)


def test_codes_are_per_layer_for_a_per_layer_generator():
    G = _per_layer_generator()
    avg = mean_code(G, n=512)
    assert avg.shape == (G.num_layers, G.w_space_dim)
    assert (avg - avg[:1]).abs().max() > 1e-3              # layers differ: nothing broadcast
    enc = _e4e()
    enc.set_latent_avg(avg)
    enc.set_progressive_stage(0)
    assert torch.allclose(enc(torch.zeros(1, 3, 16, 16))[0] - avg,
                          (enc(torch.zeros(1, 3, 16, 16))[0] - avg)[:1].expand(G.num_layers, -1),
                          atol=1e-6)
    torch.manual_seed(3)
    rs = ReStyleEncoder(16, 32, encoder_channels_base=8, encoder_channels_max=32).eval()
    with torch.no_grad():
        codes = restyle_invert(rs, torch.zeros(2, 3, 16, 16), G, avg, steps=2)
    assert codes[-1].shape == (2, G.num_layers, 32)
    assert expand_code(avg, 2, G.num_layers, 32).shape == (2, G.num_layers, 32)


def test_mean_code_of_a_broadcasting_generator_is_its_tracked_average(bundle):
    G = bundle.generator
    assert torch.equal(mean_code(G), G.truncation.w_avg.expand(G.num_layers, -1))


# ---- training ------------------------------------------------------------------------------------

def test_progressive_schedule_is_officials():
    # official: W training until progressive_start, then one offset more every step_every
    assert [progressive_stage(s, 8, 20000, 2000) for s in (0, 19999, 20000, 21999, 22000, 10**6)] \
        == [0, 0, 1, 1, 2, 7]


def test_e4e_training_reduces_validation_mse_and_unlocks_offsets(bundle, real_images, tmp_path):
    cfg = E4EConfig(steps=20, progressive_start=5, progressive_step_every=5, lr=1e-2, **TINY)
    enc, disc, summary = train_e4e_encoder(bundle.generator, bundle.perceptual, real_images, cfg,
                                           tmp_path, show_progress=False)
    val = _rows(tmp_path / "val.jsonl")
    assert [r["step"] for r in val] == [0, 5, 10, 15, 20]
    assert val[-1]["val_mse"] < 0.8 * val[0]["val_mse"]
    log = _rows(tmp_path / "log.jsonl")
    assert [r["num_unlocked"] for r in log] == [0, 1, 2, 3]     # at each row's last step
    assert log[0]["loss_delta"] == 0.0 and log[-1]["loss_delta"] > 0
    assert int(enc.num_unlocked) == 3 and not enc.training      # the stage it was trained in
    acc = summary["latent_discriminator_accuracy"]
    assert 0.0 <= acc["balanced"] <= 1.0 and acc["n_codes"] == 16
    assert "identity" in summary["identity_loss"]
    assert summary["images_per_second"] > 0


def test_e4e_training_leaves_generator_untouched(bundle, real_images, tmp_path):
    before = {k: v.clone() for k, v in bundle.generator.state_dict().items()}
    train_e4e_encoder(bundle.generator, bundle.perceptual, real_images,
                      E4EConfig(steps=2, **TINY), tmp_path, show_progress=False)
    assert all(torch.equal(before[k], v) for k, v in bundle.generator.state_dict().items())


class _Interrupt(Exception):
    pass


def _interrupt_after(module, calls):
    original = module.forward
    count = {"n": 0}

    def forward(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise _Interrupt()
        return original(*args, **kwargs)

    module.forward = forward
    return lambda: delattr(module, "forward")


@pytest.mark.parametrize("which", ["e4e", "restyle"])
def test_resume_after_kill_loses_nothing(bundle, real_images, tmp_path, which):
    if which == "e4e":
        cfg = E4EConfig(steps=12, progressive_start=4, progressive_step_every=2, **TINY)

        def run(d):
            return train_e4e_encoder(bundle.generator, bundle.perceptual, real_images, cfg, d,
                                     show_progress=False)[0]
        calls = 12      # val(0) + 8 steps + val(5) -> dies in step 9 (checkpoint at 5)
    else:
        cfg = ReStyleConfig(steps=12, n_iters_per_batch=2, val_steps=2, **TINY)

        def run(d):
            return train_restyle_encoder(bundle.generator, bundle.perceptual, real_images, cfg, d,
                                         show_progress=False)[0]
        calls = 30
    straight = run(tmp_path / "a")
    restore = _interrupt_after(bundle.generator.synthesis, calls)
    try:
        with pytest.raises(_Interrupt):
            run(tmp_path / "b")
    finally:
        restore()
    assert (tmp_path / "b" / "checkpoint.pt").exists()
    resumed = run(tmp_path / "b")
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    for log in ("log.jsonl", "val.jsonl"):
        assert [r["step"] for r in _rows(tmp_path / "a" / log)] == \
            [r["step"] for r in _rows(tmp_path / "b" / log)]


def test_restyle_training_reduces_validation_mse(bundle, real_images, tmp_path):
    cfg = ReStyleConfig(steps=20, n_iters_per_batch=3, val_steps=3, lr=1e-2, **TINY)
    enc, summary = train_restyle_encoder(bundle.generator, bundle.perceptual, real_images, cfg,
                                         tmp_path, show_progress=False)
    val = _rows(tmp_path / "val.jsonl")
    assert len(val[-1]["val_mse_per_step"]) == 3
    assert min(val[-1]["val_mse_per_step"]) < 0.8 * val[0]["val_mse"]
    assert summary["val_mse_per_step"] == val[-1]["val_mse_per_step"]
    assert summary["image_passes_per_second"] == pytest.approx(3 * summary["images_per_second"],
                                                               rel=0.02)
    assert not enc.training


def test_training_refuses_too_few_images_and_other_settings(bundle, real_images, tmp_path):
    with pytest.raises(ValueError, match="training images"):
        train_e4e_encoder(bundle.generator, bundle.perceptual, real_images,
                          E4EConfig(steps=1, **{**TINY, "val_images": 78}), tmp_path,
                          show_progress=False)
    train_restyle_encoder(bundle.generator, bundle.perceptual, real_images,
                          ReStyleConfig(steps=1, n_iters_per_batch=1, val_steps=1, **TINY),
                          tmp_path / "r", show_progress=False)
    with pytest.raises(ValueError, match="lr"):
        train_restyle_encoder(bundle.generator, bundle.perceptual, real_images,
                              ReStyleConfig(steps=1, n_iters_per_batch=1, val_steps=1, lr=0.5,
                                            **TINY), tmp_path / "r", show_progress=False)
