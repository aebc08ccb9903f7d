"""Known answers for the distribution measures of idinvert/quality.py and the judge's training parts."""

import numpy as np
import pytest
import torch

from idinvert.quality import (DEGRADATIONS, degrade, frechet_distance, precision_recall,
                              two_sample_probe)


def test_frechet_distance_of_equal_covariances_is_the_squared_mean_gap():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 4, generator=g, dtype=torch.float64)
    b = a + torch.tensor([3.0, 0.0, 0.0, 4.0], dtype=torch.float64)   # same covariance, shifted
    assert frechet_distance(a, b) == pytest.approx(25.0, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_precision_recall_of_a_set_with_itself_is_one_and_of_far_sets_zero():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(300, 8, generator=g)
    assert precision_recall(real, real.clone(), k=3) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(real, far, k=3) == (0.0, 0.0)


def test_precision_recall_argument_order_mode_collapse_keeps_precision_loses_recall():
    # fake samples covering one half of the real distribution only: precise, but low recall
    g = torch.Generator().manual_seed(2)
    real = torch.randn(600, 2, generator=g)
    fake = torch.randn(600, 2, generator=g)
    fake[:, 0] = fake[:, 0].abs() + 0.5                   # only the right half, away from the middle
    precision, recall = precision_recall(real, fake, k=3)
    assert precision > 0.85 and recall < 0.7


def test_two_sample_probe_is_chance_on_one_distribution_and_perfect_on_separated_ones():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(800, 6, generator=g), torch.randn(800, 6, generator=g)
    assert abs(two_sample_probe(a, b) - 0.5) < 0.08
    assert two_sample_probe(a, b + 3.0) > 0.98


@pytest.mark.parametrize("kind", sorted(DEGRADATIONS))
def test_degradations_keep_shape_and_range_and_grow_with_the_level(kind):
    from idinvert.domains.synthetic_faces import SyntheticFaces
    images, _ = SyntheticFaces(32).sample(16, seed=0)
    errors = []
    for level in DEGRADATIONS[kind]:
        out = degrade(images, kind, level)
        assert out.shape == images.shape and out.min() >= -1 and out.max() <= 1
        errors.append(float((out - images).pow(2).mean()))
    assert all(b > a for a, b in zip(errors, errors[1:])), errors
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(images, "smudge", 1)


def test_nuisance_targets_are_finite_and_vary():
    from idinvert.domains.synthetic_faces import SyntheticFaces, nuisance_targets
    t = nuisance_targets(SyntheticFaces(32).sample_params(256, seed=5))
    assert t.shape == (256, 27) and torch.isfinite(t).all()
    assert (t.std(0) > 0).sum() >= 25


def test_judge_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import idinvert.training.judge as judge
    from idinvert.training.common import load_checkpoint

    cfg = judge.JudgeConfig(steps=4, batch_size=8, width=8, embed_dim=16, checkpoint_every=2,
                            log_every=1, eval_images=40)
    judge.train_judge(cfg, tmp_path / "a", show_progress=False)
    # the same run killed during its third step, then started again
    real_lr = judge._lr_at

    def killed_at_third_step(c, step):
        if step == 2:
            raise KeyboardInterrupt
        return real_lr(c, step)

    monkeypatch.setattr(judge, "_lr_at", killed_at_third_step)
    with pytest.raises(KeyboardInterrupt):
        judge.train_judge(cfg, tmp_path / "b", show_progress=False)
    assert load_checkpoint(tmp_path / "b")["step"] == 2
    monkeypatch.setattr(judge, "_lr_at", real_lr)
    judge.train_judge(cfg, tmp_path / "b", show_progress=False)
    a = load_checkpoint(tmp_path / "a")["model"]
    b = load_checkpoint(tmp_path / "b")["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    card = (tmp_path / "a" / "judge.json").read_text()
    assert "degradation_frechet" in card and "evaluation only" in card
