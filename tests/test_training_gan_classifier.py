"""GAN and attribute-classifier training: losses go down, resume after a kill loses nothing,
exported weights load strictly with weights_only, quality evaluation reports what it should."""

import json

import pytest
import torch

import idinvert.training.gan as gan
from idinvert.nets.loading import load_state_dict_strict
from idinvert.training.classifier import ClassifierConfig, build_classifier, train_classifier
from idinvert.training.common import LossLog, ema_update, load_checkpoint
from idinvert.training.gan import GANConfig, build_discriminator, build_generator, train_gan


def tiny_gan_config(**overrides) -> GANConfig:
    kw = dict(z_dim=8, w_dim=8, mapping_layers=2, g_fmaps_base=64, g_fmaps_max=8, d_fmaps_base=64,
              d_fmaps_max=8, batch_size=8, total_kimg=0.08, max_minutes=None, train_images=64,
              r1_interval=2, log_every=1, checkpoint_every=4, grid_every_kimg=1.0, ema_kimg=0.01)
    kw.update(overrides)
    return GANConfig(**kw)


def tiny_classifier_config(**overrides) -> ClassifierConfig:
    kw = dict(width=4, embed_dim=16, batch_size=32, steps=40, lr=3e-3, log_every=1,
              checkpoint_every=10, eval_images=64)
    kw.update(overrides)
    return ClassifierConfig(**kw)


def kill_at_step(monkeypatch, step: int):
    """Make the GAN loop die (KeyboardInterrupt) inside its `step`-th step; returns the real ema_update."""
    calls = {"n": 0}
    real_ema = gan.ema_update

    def dying_ema(*a, **k):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return real_ema(*a, **k)

    monkeypatch.setattr(gan, "ema_update", dying_ema)
    return real_ema


def test_gan_training_runs_logs_and_exports_loadable_fp16_weights(tmp_path):
    cfg = tiny_gan_config()
    gpath = train_gan(cfg, tmp_path / "run", show_progress=False)
    rows = LossLog(tmp_path / "run" / "log.jsonl", resume_step=10 ** 9).rows()
    assert [r["step"] for r in rows] == list(range(1, 11))
    assert all(r["loss_D"] == r["loss_D"] for r in rows)  # finite, not NaN
    sd = torch.load(gpath, weights_only=True)
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    G = build_generator(cfg)
    load_state_dict_strict(G, sd, str(gpath))
    x = G(torch.randn(2, cfg.z_dim))
    assert x.shape == (2, 3, 32, 32) and x.abs().max() <= 1
    D = build_discriminator(cfg)
    load_state_dict_strict(D, torch.load(tmp_path / "run" / "discriminator.pt", weights_only=True))
    card = json.loads(gpath.with_suffix(".json").read_text())
    assert card["training"]["g_fmaps_max"] == 8 and card["steps"] == 10
    # w_avg is tracked while training (it starts at zero)
    assert G.truncation.w_avg.abs().sum() > 0


def test_a_few_gan_steps_reduce_the_discriminator_loss(tmp_path):
    # From chance level (log 4 = 1.386) D quickly learns to tell the tiny G's samples from reals.
    work = tmp_path / "d"
    cfg = tiny_gan_config(total_kimg=0.24, lr=0.005, d_fmaps_base=256, d_fmaps_max=16)
    train_gan(cfg, work, show_progress=False)
    rows = LossLog(work / "log.jsonl", resume_step=10 ** 9).rows()
    first = sum(r["loss_D"] for r in rows[:5]) / 5
    last = sum(r["loss_D"] for r in rows[-5:]) / 5
    assert last < first - 0.3, (first, last)


def test_gan_resume_after_kill_loses_nothing(tmp_path, monkeypatch):
    cfg = tiny_gan_config(total_kimg=0.08, checkpoint_every=4)
    full = tmp_path / "full"
    train_gan(cfg, full, show_progress=False)

    killed = tmp_path / "killed"
    real_ema = kill_at_step(monkeypatch, 7)   # killed during step 7; last checkpoint was at step 4
    with pytest.raises(KeyboardInterrupt):
        train_gan(cfg, killed, show_progress=False)
    assert load_checkpoint(killed)["step"] == 4
    monkeypatch.setattr(gan, "ema_update", real_ema)
    train_gan(cfg, killed, show_progress=False)

    a, b = load_checkpoint(full), load_checkpoint(killed)
    assert a["step"] == b["step"] == 10
    for part in ("G", "D", "G_ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    steps = [r["step"] for r in LossLog(killed / "log.jsonl", resume_step=10 ** 9).rows()]
    assert steps == list(range(1, 11))


def test_resume_refuses_other_settings(tmp_path):
    work = tmp_path / "w"
    train_gan(tiny_gan_config(total_kimg=0.016), work, show_progress=False)
    with pytest.raises(ValueError, match="lr"):
        train_gan(tiny_gan_config(total_kimg=0.032, lr=0.001), work, show_progress=False)


def test_gan_warm_start_extends_exported_weights(tmp_path, monkeypatch):
    # A clone ships only the exported weights: --gan-init-from continues them in an empty work dir.
    cfg = tiny_gan_config(total_kimg=0.08)
    first = tmp_path / "first"
    gpath = train_gan(cfg, first, show_progress=False)
    card = json.loads(gpath.with_suffix(".json").read_text())
    card["snapshot_curve"] = [{"kimg": 0.05, "frechet_ratio_to_floor": 9.0}]
    gpath.with_suffix(".json").write_text(json.dumps(card))
    shipped_G = torch.load(gpath, weights_only=True)
    shipped_D = torch.load(first / "discriminator.pt", weights_only=True)

    seen = {}
    real_ema = gan.ema_update

    def spy(ema, model, beta):   # the first update sees the weights the warm start loaded
        if not seen:
            seen["G_ema"] = {k: v.clone() for k, v in ema.state_dict().items()}
        return real_ema(ema, model, beta)

    monkeypatch.setattr(gan, "ema_update", spy)
    more = tmp_path / "more"
    out = train_gan(tiny_gan_config(total_kimg=0.16), more, show_progress=False, init_from=first)
    for k, v in shipped_G.items():
        assert torch.equal(seen["G_ema"][k], v.float()), k
    state = load_checkpoint(more)
    assert state["step"] == 20 and state["nimg"] == 160          # 10 steps on top of the 10 exported
    assert state["warm_start"]["kimg"] == 0.08 and state["warm_start"]["steps"] == 10
    assert not all(torch.equal(state["D"][k], shipped_D[k].float()) for k in shipped_D)  # D trained on
    steps = [r["step"] for r in LossLog(more / "log.jsonl", resume_step=10 ** 9).rows()]
    assert steps == list(range(11, 21))
    new_card = json.loads(out.with_suffix(".json").read_text())
    assert new_card["kimg"] == 0.16 and new_card["warm_start"]["from"] == str(first)
    assert new_card["warm_start"]["snapshot_curve"][0]["kimg"] == 0.05
    assert "Adam" in new_card["warm_start"]["note"]
    from idinvert.training.model_card import gan_settings_lines
    lines = gan_settings_lines(new_card)
    assert lines[0].startswith("- GAN: trained 0.16 kimg") and "the first 0.08 kimg" in lines[1]


def test_gan_warm_start_refuses_bad_bundles(tmp_path):
    first = tmp_path / "first"
    train_gan(tiny_gan_config(total_kimg=0.08), first, show_progress=False)
    with pytest.raises(ValueError, match="total_kimg must exceed"):
        train_gan(tiny_gan_config(total_kimg=0.08), tmp_path / "a", show_progress=False, init_from=first)
    with pytest.raises(ValueError, match="g_fmaps_max"):
        train_gan(tiny_gan_config(total_kimg=0.16, g_fmaps_max=16), tmp_path / "b", show_progress=False,
                  init_from=first)
    (first / "discriminator.pt").unlink()
    with pytest.raises(FileNotFoundError, match="discriminator.pt"):
        train_gan(tiny_gan_config(total_kimg=0.16), tmp_path / "c", show_progress=False, init_from=first)


def test_ema_update_moves_towards_model():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = a.weight.detach().clone()
    ema_update(a, b, beta=0.75)
    assert torch.allclose(a.weight, 0.75 * before + 0.25 * b.weight)


def test_classifier_training_reduces_loss_and_reports_test_accuracy(tmp_path):
    path = train_classifier(tiny_classifier_config(), tmp_path, show_progress=False)
    rows = LossLog(tmp_path / "log.jsonl", resume_step=10 ** 9).rows()
    first = sum(r["loss"] for r in rows[:5]) / 5
    last = sum(r["loss"] for r in rows[-5:]) / 5
    assert last < first
    card = json.loads(path.with_suffix(".json").read_text())
    q = card["quality"]
    assert q["n_test"] == 64 and set(q["accuracy"]) == {"age", "gender", "eyeglasses", "pose",
                                                        "expression"}
    C = build_classifier(tiny_classifier_config())
    load_state_dict_strict(C, torch.load(path, weights_only=True), str(path))


def test_classifier_resume_after_kill_loses_nothing(tmp_path, monkeypatch):
    import idinvert.training.classifier as clf
    cfg = tiny_classifier_config(steps=20, checkpoint_every=10)
    train_classifier(cfg, tmp_path / "full", show_progress=False)
    real_lr = clf._lr_at

    def dying_lr(c, step):
        if step == 15:
            raise KeyboardInterrupt
        return real_lr(c, step)

    monkeypatch.setattr(clf, "_lr_at", dying_lr)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(cfg, tmp_path / "killed", show_progress=False)
    assert load_checkpoint(tmp_path / "killed")["step"] == 10
    monkeypatch.setattr(clf, "_lr_at", real_lr)
    train_classifier(cfg, tmp_path / "killed", show_progress=False)
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "killed")
    assert b["step"] == 20
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_evaluate_generator_reports_marginals_confidence_and_frechet():
    from idinvert.domains.synthetic_faces import SyntheticFaces
    torch.manual_seed(0)
    G = build_generator(tiny_gan_config())
    C = build_classifier(tiny_classifier_config())
    out = gan.evaluate_generator(G, C, SyntheticFaces(32), n=48, seed=1)
    assert set(out["marginals_fake"]) == {"age", "gender", "eyeglasses", "pose", "expression"}
    assert 0.5 <= out["confidence_fake"] <= 1
    assert out["frechet_distance_classifier"] >= 0 and out["frechet_distance_real_vs_real"] >= 0
    assert out == gan.evaluate_generator(G, C, SyntheticFaces(32), n=48, seed=1)


def test_gan_carried_state_resumes_on_a_fresh_work_dir(tmp_path, monkeypatch):
    # The work dir (image cache, grids) does not survive a move between machines; the small carry
    # dir does. Killed at step 7 with the carry dir at step 4, an empty work dir resumes from it and
    # ends where an uninterrupted run ends.
    cfg = tiny_gan_config(total_kimg=0.08, checkpoint_every=4, snapshot_every_kimg=0.024)
    full = tmp_path / "full"
    train_gan(cfg, full, show_progress=False)

    carry = tmp_path / "carry"
    real_ema = kill_at_step(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        train_gan(cfg, tmp_path / "machine-a", show_progress=False, carry_dir=carry)
    assert load_checkpoint(carry)["step"] == 4
    snaps = sorted(p.name for p in (carry / "snapshots").glob("*.pt"))
    assert snaps == ["G_ema_000000kimg.pt"]          # the 0.024-kimg snapshot (step 3), carried at step 4
    assert all(v.dtype == torch.float16 for v in torch.load(carry / "snapshots" / snaps[0])["G_ema"].values()
               if v.is_floating_point())
    monkeypatch.setattr(gan, "ema_update", real_ema)
    train_gan(cfg, tmp_path / "machine-b", show_progress=False, carry_dir=carry)

    a, b = load_checkpoint(full), load_checkpoint(tmp_path / "machine-b")
    assert a["step"] == b["step"] == 10
    for part in ("G", "D", "G_ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert load_checkpoint(carry)["step"] == 10
    steps = [r["step"] for r in LossLog(tmp_path / "machine-b" / "log.jsonl", resume_step=10 ** 9).rows()]
    assert steps == list(range(1, 11))
    assert (tmp_path / "machine-b" / "snapshots" / "G_ema_000000kimg.pt").exists()
