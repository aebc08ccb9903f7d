"""Encoder training: a few steps reduce the loss, resumption loses nothing, settings are as documented."""

import json

import pytest
import torch

from idinvert.domains.base import ImageSet
from idinvert.training.encoders import (ConventionalEncoderConfig, DomainEncoderConfig, build_encoder,
                                        calibrate_lambda_perceptual, r1_gamma_for_resolution,
                                        reconstruction_mse, sample_training_codes, time_encoder,
                                        train_conventional_encoder, train_domain_encoder)
from idinvert.zoo import tiny_random_bundle

TINY = dict(batch_size=8, encoder_channels_base=8, encoder_channels_max=32, log_every=5,
            checkpoint_every=5)



@pytest.fixture(scope="module")
def bundle():
    return tiny_random_bundle(seed=0, resolution=16)


@pytest.fixture(scope="module")
def real_images(bundle):
    # "Real" images for the tiny bundle: samples of its own generator (so they can be reconstructed).
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        wp = bundle.generator.sample_wp(64, g, truncate=False)
        images = bundle.generator.synthesis(wp)
    return ImageSet.from_tensor("tiny-real", images)


def _losses(work_dir, key):
    rows = [json.loads(line) for line in (work_dir / "log.jsonl").read_text().splitlines()]
    return [r[key] for r in rows]


def test_conventional_encoder_steps_reduce_latent_loss(bundle, tmp_path):
    cfg = ConventionalEncoderConfig(steps=40, **TINY)
    encoder, summary = train_conventional_encoder(bundle.generator, cfg, tmp_path,
                                                  show_progress=False)
    losses = _losses(tmp_path, "loss_w")
    assert len(losses) == 8
    assert losses[-1] < 0.8 * losses[0]
    assert summary["final"]["loss_w"] == losses[-1]
    assert not encoder.training


def test_domain_encoder_steps_reduce_reconstruction_loss(bundle, real_images, tmp_path):
    cfg = DomainEncoderConfig(steps=40, **TINY)
    encoder, disc, summary = train_domain_encoder(bundle.generator, bundle.discriminator,
                                                  bundle.perceptual, real_images, cfg, tmp_path,
                                                  show_progress=False)
    pix = _losses(tmp_path, "loss_pix")
    assert sum(pix[-2:]) / 2 < 0.85 * pix[0]
    assert summary["r1_gamma"] == pytest.approx(10 * (16 / 256) ** 2)
    assert summary["lambda_vgg"] == summary["lambda_calibration"]["lambda_vgg"]
    assert disc is not bundle.discriminator


def test_training_leaves_frozen_networks_untouched(bundle, real_images, tmp_path):
    before = {k: v.clone() for k, v in bundle.generator.state_dict().items()}
    d_before = {k: v.clone() for k, v in bundle.discriminator.state_dict().items()}
    train_domain_encoder(bundle.generator, bundle.discriminator, bundle.perceptual, real_images,
                         DomainEncoderConfig(steps=3, **TINY), tmp_path, show_progress=False)
    assert all(torch.equal(before[k], v) for k, v in bundle.generator.state_dict().items())
    assert all(torch.equal(d_before[k], v) for k, v in bundle.discriminator.state_dict().items())
    assert not any(p.requires_grad for p in bundle.generator.parameters())


class _Interrupt(Exception):
    pass


def _interrupt_after(module, calls):
    """Make module's forward raise after `calls` calls (a killed run)."""
    original = module.forward
    count = {"n": 0}

    def forward(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise _Interrupt()
        return original(*args, **kwargs)

    module.forward = forward
    return lambda: delattr(module, "forward")


def test_resume_after_kill_loses_nothing(bundle, tmp_path):
    cfg = ConventionalEncoderConfig(steps=12, **TINY)
    straight, _ = train_conventional_encoder(bundle.generator, cfg, tmp_path / "a",
                                             show_progress=False)
    restore = _interrupt_after(bundle.generator.synthesis, 8)   # dies in step 9, checkpoint at 5
    try:
        with pytest.raises(_Interrupt):
            train_conventional_encoder(bundle.generator, cfg, tmp_path / "b", show_progress=False)
    finally:
        restore()
    resumed, _ = train_conventional_encoder(bundle.generator, cfg, tmp_path / "b",
                                            show_progress=False)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert _losses(tmp_path / "a", "step") == _losses(tmp_path / "b", "step")


def test_resume_refuses_a_checkpoint_with_other_settings(bundle, tmp_path):
    train_conventional_encoder(bundle.generator, ConventionalEncoderConfig(steps=5, **TINY),
                               tmp_path, show_progress=False)
    with pytest.raises(ValueError, match="lr"):
        train_conventional_encoder(bundle.generator,
                                   ConventionalEncoderConfig(steps=5, lr=0.5, **TINY), tmp_path,
                                   show_progress=False)


def test_style_mixing_switches_codes_at_one_crossover(bundle):
    g = bundle.generator
    plain = sample_training_codes(g, 16, torch.Generator().manual_seed(0), style_mixing_prob=0.0)
    assert torch.equal(plain, plain[:, :1].expand_as(plain))
    mixed = sample_training_codes(g, 16, torch.Generator().manual_seed(0), style_mixing_prob=1.0)
    changes = (mixed[:, 1:] != mixed[:, :-1]).any(-1).sum(1)
    assert (changes == 1).all()


def test_lambda_calibration_balances_perceptual_and_pixel_terms(bundle, real_images):
    cal = calibrate_lambda_perceptual(bundle.generator, bundle.perceptual,
                                      real_images.load(list(range(32))), ratio=1.0)
    assert cal["lambda_vgg"] * cal["feature_mse"] == pytest.approx(cal["pixel_mse"])


def test_r1_gamma_is_the_papers_10_rescaled_by_pixel_count():
    assert r1_gamma_for_resolution(256) == 10.0
    assert r1_gamma_for_resolution(32) == pytest.approx(0.15625)


def test_reconstruction_mse_and_timing(bundle, real_images):
    images = real_images.load(list(range(16)))
    mse = reconstruction_mse(bundle.encoder, bundle.generator, images, batch_size=5)
    per_image = ((bundle.generator.synthesis(bundle.encoder(images)) - images) ** 2).mean((1, 2, 3))
    assert mse == pytest.approx(per_image.mean().item(), rel=1e-5)
    assert reconstruction_mse(bundle.encoder, bundle.generator, real_images) > 0
    assert time_encoder(bundle.encoder, images, repeats=2) > 0


def test_time_budget_stops_checkpoints_says_so_and_the_next_sitting_resumes(bundle, tmp_path):
    cfg = ConventionalEncoderConfig(steps=12, max_minutes=1e-9, **TINY)
    _, first = train_conventional_encoder(bundle.generator, cfg, tmp_path, show_progress=False)
    assert first["steps"] == 1 and "time budget" in first["stopped"] and not first["plateaued"]
    full = ConventionalEncoderConfig(steps=12, **TINY)  # max_minutes may change between sittings
    resumed, second = train_conventional_encoder(bundle.generator, full, tmp_path, show_progress=False)
    assert second["steps"] == 12 and second["stopped"].startswith("step cap")
    straight, _ = train_conventional_encoder(bundle.generator, full, tmp_path / "straight", show_progress=False)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_channels_last_trains_the_same_encoder_and_restores_layouts(bundle, real_images, tmp_path):
    runs = {}
    for cl in (False, True):
        cfg = DomainEncoderConfig(steps=6, channels_last=cl, **TINY)
        encoder, _, _ = train_domain_encoder(bundle.generator, bundle.discriminator, bundle.perceptual,
                                             real_images, cfg, tmp_path / str(cl), show_progress=False)
        runs[cl] = (encoder, _losses(tmp_path / str(cl), "loss_pix"))
    assert runs[True][1] == pytest.approx(runs[False][1], rel=1e-3)
    # Adam's first steps are about lr * sign(gradient): where a gradient is rounding noise (a bias before
    # batch norm), the two layouts can step a weight in opposite directions, ~lr each, every step: up to
    # 2 * lr per step apart (6 steps -> 12 lr; seen: 6.2 lr on an AMD EPYC), never more
    lr = DomainEncoderConfig().lr
    for (k, a), b in zip(runs[False][0].state_dict().items(), runs[True][0].state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=2 * 6 * lr * 1.01), k
    # the trained weights are kept, not reset to their values before training
    init = build_encoder(bundle.generator, DomainEncoderConfig(**TINY)).state_dict()
    moved = max((runs[True][0].state_dict()[k].float() - v.float()).abs().max().item() for k, v in init.items())
    assert moved > 3 * lr
    assert all(p.is_contiguous() for p in runs[True][0].parameters())
    assert all(p.is_contiguous() for p in bundle.generator.parameters())


VAL = dict(val_every_kimg=0.04, plateau_window_kimg=100.0)   # validate every 5 steps of 8; never plateau


def _val_curve(summary):
    return [r["val_mse"] for r in summary["val_curve"]]


def _worse_after(monkeypatch, calls: int):
    """Validation MSE as measured for the first `calls` validations, then 1.0 worse: a curve that rises
    again after its best point, as the shipped conventional encoder's did (0.052 at 70 kimg, 0.085 at
    100 kimg), whatever this tiny run's own dynamics."""
    import idinvert.training.encoders as encoders
    real, count = encoders.reconstruction_mse, {"n": 0}

    def measured(*args, **kwargs):
        count["n"] += 1
        return real(*args, **kwargs) + (1.0 if count["n"] > calls else 0.0)

    monkeypatch.setattr(encoders, "reconstruction_mse", measured)
    return count


def test_exported_encoder_is_the_best_validation_checkpoint(bundle, real_images, tmp_path, monkeypatch):
    cfg = ConventionalEncoderConfig(steps=40, **TINY, **VAL)
    val = real_images.load(list(range(32)))
    _worse_after(monkeypatch, 3)
    encoder, summary = train_conventional_encoder(bundle.generator, cfg, tmp_path, show_progress=False,
                                                  val_images=val)
    monkeypatch.undo()
    curve = _val_curve(summary)
    best = min(range(len(curve)), key=curve.__getitem__)
    assert len(curve) == 8 and best < 3 and curve[-1] > curve[best]
    assert summary["exported"]["kimg"] == summary["val_curve"][best]["kimg"]
    assert summary["exported"]["rule"] == "best validation MSE"
    # the weights returned are the best point's: their validation MSE is the curve's minimum
    assert reconstruction_mse(encoder, bundle.generator, val) == pytest.approx(curve[best], rel=1e-5)


def test_resume_keeps_the_best_validation_checkpoint(bundle, real_images, tmp_path, monkeypatch):
    cfg = ConventionalEncoderConfig(steps=20, **TINY, **VAL)
    val = real_images.load(list(range(32)))
    count = _worse_after(monkeypatch, 1)   # the best is the first point, before the kill and the resume
    straight, s1 = train_conventional_encoder(bundle.generator, cfg, tmp_path / "a", show_progress=False,
                                              val_images=val)
    count["n"] = 0   # the killed run and its resumption count as one run
    restore = _interrupt_after(bundle.generator.synthesis, 17)   # dies in step 18, checkpoint at 15
    try:
        with pytest.raises(_Interrupt):
            train_conventional_encoder(bundle.generator, cfg, tmp_path / "b", show_progress=False,
                                       val_images=val)
    finally:
        restore()
    resumed, s2 = train_conventional_encoder(bundle.generator, cfg, tmp_path / "b", show_progress=False,
                                             val_images=val)
    assert s1["exported"]["kimg"] == s1["val_curve"][0]["kimg"]
    assert s2["exported"] == s1["exported"]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_domain_encoder_exports_its_best_validation_checkpoint(bundle, real_images, tmp_path):
    cfg = DomainEncoderConfig(steps=15, **TINY, **VAL)
    val = real_images.load(list(range(32, 64)))
    encoder, _, summary = train_domain_encoder(bundle.generator, bundle.discriminator, bundle.perceptual,
                                               real_images, cfg, tmp_path, show_progress=False,
                                               val_images=val)
    curve = _val_curve(summary)
    assert summary["exported"]["val_mse"] == min(curve)
    assert reconstruction_mse(encoder, bundle.generator, val) == pytest.approx(min(curve), rel=1e-5)


def test_without_validation_images_the_last_step_is_exported(bundle, tmp_path):
    _, summary = train_conventional_encoder(bundle.generator, ConventionalEncoderConfig(steps=3, **TINY),
                                            tmp_path, show_progress=False)
    assert summary["exported"]["kimg"] is None and summary["exported"]["rule"].startswith("last step")
