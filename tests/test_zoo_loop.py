"""The embedded zoo's trainers run on the one training loop (`idinvert.training.loop`, which `bench train`
uses too), and their work dirs keep the checkpoint keys they have always had (so a work dir or the carried
GAN state written before the move still resumes)."""

import pytest
import torch

import idinvert.training.loop as loop
from idinvert.codes import mapping_codes
from idinvert.domains.base import ImageSet
from idinvert.training.common import load_checkpoint
from idinvert.zoo import tiny_random_bundle

ENC = dict(batch_size=8, encoder_channels_base=8, encoder_channels_max=32, log_every=2, checkpoint_every=2)


@pytest.fixture()
def loop_calls(monkeypatch):
    """Each run of the loop's step loop as (progress-bar name, first step, step cap), and each step drawn."""
    calls = {"runs": [], "steps": 0}
    real_progress, real_gen = loop.progress, loop.step_generator

    def progress(total, initial=0, desc="", **kw):
        calls["runs"].append((desc, initial, total))
        return real_progress(total, initial, desc, **kw)

    def step_generator(seed, step):
        calls["steps"] += 1
        return real_gen(seed, step)

    monkeypatch.setattr(loop, "progress", progress)
    monkeypatch.setattr(loop, "step_generator", step_generator)
    return calls


@pytest.fixture(scope="module")
def tiny():
    bundle = tiny_random_bundle(seed=0, resolution=16)
    with torch.no_grad():
        images = bundle.generator.synthesis(mapping_codes(bundle.generator, 48, torch.Generator().manual_seed(5)))
    return bundle, ImageSet.from_tensor("tiny-real", images), images[:8].clone()


def _keys(work_dir):
    return set(load_checkpoint(work_dir))


def test_classifier_and_judge_train_on_the_loop(loop_calls, tmp_path):
    from idinvert.training.classifier import ClassifierConfig, train_classifier
    from idinvert.training.judge import JudgeConfig, train_judge

    train_classifier(ClassifierConfig(width=4, embed_dim=8, batch_size=8, steps=3, checkpoint_every=2,
                                      eval_images=16), tmp_path / "c", show_progress=False)
    train_judge(JudgeConfig(width=4, embed_dim=8, batch_size=8, steps=2, checkpoint_every=2, eval_images=16),
                tmp_path / "j", show_progress=False)
    assert loop_calls["runs"] == [("classifier", 0, 3), ("judge", 0, 2)] and loop_calls["steps"] == 5
    for d in ("c", "j"):
        assert {"model", "opt", "step", "seconds", "config"} <= _keys(tmp_path / d)


def test_gan_trains_on_the_loop_and_keeps_its_checkpoint_keys(loop_calls, tmp_path):
    from idinvert.training.gan import GANConfig, train_gan

    cfg = GANConfig(z_dim=8, w_dim=8, mapping_layers=2, g_fmaps_base=64, g_fmaps_max=8, d_fmaps_base=64,
                    d_fmaps_max=8, batch_size=8, total_kimg=0.024, train_images=16, checkpoint_every=2)
    train_gan(cfg, tmp_path / "g", show_progress=False)
    assert loop_calls["runs"] == [("GAN", 0, 3)] and loop_calls["steps"] == 3
    assert {"G", "D", "G_ema", "opt_G", "opt_D", "rng", "step", "nimg", "next_grid_kimg", "next_snapshot_kimg",
            "seconds", "config", "warm_start"} <= _keys(tmp_path / "g")


def test_encoders_train_on_the_loop_and_keep_their_checkpoint_keys(loop_calls, tiny, tmp_path):
    from idinvert.training.e4e import E4EConfig, train_e4e_encoder
    from idinvert.training.encoders import (ConventionalEncoderConfig, DomainEncoderConfig,
                                            train_conventional_encoder, train_domain_encoder)
    from idinvert.training.restyle import ReStyleConfig, train_restyle_encoder

    bundle, real, val = tiny
    G, F = bundle.generator, bundle.perceptual
    train_conventional_encoder(G, ConventionalEncoderConfig(steps=3, val_every_kimg=0.016, **ENC), tmp_path / "c",
                               show_progress=False, val_images=val)
    train_domain_encoder(G, bundle.discriminator, F, real, DomainEncoderConfig(steps=3, **ENC), tmp_path / "d",
                         show_progress=False, val_images=val)
    later = dict(ENC, val_every=2, val_images=8)
    train_e4e_encoder(G, F, real, E4EConfig(steps=2, **later), tmp_path / "e", show_progress=False)
    train_restyle_encoder(G, F, real, ReStyleConfig(steps=2, n_iters_per_batch=1, val_steps=1, **later),
                          tmp_path / "r", show_progress=False)
    assert loop_calls["runs"] == [("conventional", 0, 3), ("domain", 0, 3), ("e4e", 0, 2), ("restyle", 0, 2)]
    assert loop_calls["steps"] == 10
    common = {"step", "seconds", "config", "encoder"}
    assert common | {"opt", "best_val"} <= _keys(tmp_path / "c")
    assert common | {"discriminator", "opt_e", "opt_d", "best_val"} <= _keys(tmp_path / "d")
    assert common | {"discriminator", "opt_e", "opt_d"} <= _keys(tmp_path / "e")
    assert common | {"opt"} <= _keys(tmp_path / "r")
    assert (tmp_path / "c" / "val_curve.jsonl").read_text().count("kimg") == 1   # every 0.016 kimg = 2 steps


def test_a_resumed_zoo_run_continues_on_the_loop(loop_calls, tiny, tmp_path):
    from idinvert.training.encoders import DomainEncoderConfig, train_domain_encoder

    bundle, real, val = tiny
    args = (bundle.generator, bundle.discriminator, bundle.perceptual, real)
    train_domain_encoder(*args, DomainEncoderConfig(steps=4, max_minutes=1e-9, **ENC), tmp_path,
                         show_progress=False, val_images=val)
    _, _, s = train_domain_encoder(*args, DomainEncoderConfig(steps=4, **ENC), tmp_path, show_progress=False,
                                   val_images=val)
    assert loop_calls["runs"] == [("domain", 0, 4), ("domain", 1, 4)] and s["steps"] == 4

