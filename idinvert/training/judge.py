"""Training of the benchmark's judge (idinvert/nets/judge.py), an evaluation-only network.

Multi-task on freshly rendered images with exact targets: binary cross-entropy on the five attributes
plus a regression of the renderer's 27 continuous nuisance values (standardised), so that the embedding
describes background, skin, hair shade, head geometry ... and not only the five labels. Augmentation
(each with probability `aug_prob`): a shift of up to one pixel, a mild Gaussian blur (sigma 0.3-0.7)
and mild noise (sigma <= 0.03) — milder than the degradations the known-answer tests apply, so those
still move the embedding. Its own seed stream (`seed` 7 by default, the classifier uses 0), and nothing
in the zoo's other training reads it.

    train_judge(JudgeConfig(), work_dir, out_dir) -> path of the exported judge.pt (fp16, with card)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from idinvert.nets.judge import JudgeNet
from idinvert.quality import DEGRADATIONS, degrade, frechet_distance
from idinvert.training.classifier import RenderedConfig, RenderedTask, cosine_lr, export_rendered, train_rendered
from idinvert.training.common import builtin_domain
from idinvert.training.loop import StepContext

__all__ = ["JudgeConfig", "train_judge", "build_judge", "evaluate_judge", "export_judge"]


@dataclass
class JudgeConfig(RenderedConfig):
    """Settings of the shipped judge (defaults = what is shipped)."""
    steps: int = 1500
    lr_final_fraction: float = 0.02
    seed: int = 7
    log_every: int = 25
    nuisance_weight: float = 1.0
    aug_prob: float = 0.25


def build_judge(cfg: JudgeConfig, num_attributes: int = 5, num_nuisances: int = 27) -> JudgeNet:
    return JudgeNet(resolution=cfg.resolution, num_attributes=num_attributes,
                    num_nuisances=num_nuisances, width=cfg.width, embed_dim=cfg.embed_dim)


def _batch_seed(seed: int, step: int) -> int:
    # A stream of its own: 2_000_000_011 * (seed + 1) + step never meets the classifier's seeds.
    return 2_000_000_011 * (seed + 1) + step


_lr_at = cosine_lr   # looked up when a step runs (so a test can interrupt a run through it)


def _nuisance_standardiser(domain, n: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    from idinvert.domains.synthetic_faces import nuisance_targets
    t = nuisance_targets(domain.sample_params(n, seed=987_654_321))
    return t.mean(0), t.std(0).clamp(min=1e-3)


def _augment(images: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    b = images.shape[0]
    out = images
    shift = torch.randint(-1, 2, (b, 2), generator=g)
    do_shift = torch.rand(b, generator=g) < p
    if do_shift.any():
        rolled = torch.stack([torch.roll(img, (int(s[0]), int(s[1])), dims=(1, 2))
                              for img, s in zip(out, shift)])
        out = torch.where(do_shift.view(-1, 1, 1, 1), rolled, out)
    do_blur = torch.rand(b, generator=g) < p
    if do_blur.any():
        sigma = 0.3 + 0.4 * float(torch.rand((), generator=g))
        out = torch.where(do_blur.view(-1, 1, 1, 1), degrade(out, "blur", sigma), out)
    do_noise = (torch.rand(b, generator=g) < p).view(-1, 1, 1, 1)
    sigma = 0.03 * torch.rand(b, 1, 1, 1, generator=g)
    noise = torch.randn(out.shape, generator=g) * sigma
    return torch.where(do_noise, (out + noise).clamp(-1, 1), out)


@torch.no_grad()
def _embed_all(judge: JudgeNet, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([judge.embed(x) for x in images.split(batch)])


@torch.no_grad()
def evaluate_judge(judge: JudgeNet, domain, n: int = 2000) -> dict:
    """Attribute accuracy on n test images; the embedding's Fréchet floor (n/2 test vs the other n/2)
    and its Fréchet distance to n/2 clean test images after each known degradation."""
    judge = judge.eval()
    test = domain.split("test", n)
    images = test.load(list(range(n)))
    correct = torch.zeros(len(test.attributes))
    for idx in torch.arange(n).split(500):
        correct += ((judge(images[idx]) > 0).long() == test.labels[idx]).float().sum(0)
    acc = correct / n
    half = n // 2
    ref = _embed_all(judge, images[:half])
    other = images[half:2 * half]
    floor = frechet_distance(_embed_all(judge, other), ref)
    curves = {kind: {str(level): round(frechet_distance(_embed_all(judge, degrade(other, kind, level)),
                                                        ref), 3)
                     for level in levels}
              for kind, levels in DEGRADATIONS.items()}
    monotone = all(_increasing([floor] + list(c.values())) for c in curves.values())
    return dict(n_test=n, accuracy={a: round(float(v), 4) for a, v in zip(test.attributes, acc)},
                min_accuracy=round(float(acc.min()), 4), frechet_floor=round(floor, 4),
                frechet_floor_n=half, degradation_frechet=curves,
                degradations_monotone=float(monotone))


def _increasing(values: list[float]) -> bool:
    return all(b > a for a, b in zip(values, values[1:]))


class _JudgeTask(RenderedTask):
    """The judge's step: attributes (BCE) + standardised nuisances (MSE) on an augmented rendered batch."""
    name = "judge"

    def __init__(self, cfg: JudgeConfig, domain):
        self.mean, self.std = _nuisance_standardiser(domain)
        super().__init__(cfg, build_judge(cfg, len(domain.attributes), self.mean.numel()), domain)

    def step(self, step: int, ctx: StepContext) -> dict:
        from idinvert.domains.synthetic_faces import labels_of, nuisance_targets
        cfg, seed = self.cfg, _batch_seed(self.cfg.seed, step)
        params = self.domain.sample_params(cfg.batch_size, seed=seed)
        images = _augment(self.domain.render(params), cfg.aug_prob, torch.Generator().manual_seed(seed))
        labels = labels_of(params).float()
        target = (nuisance_targets(params) - self.mean) / self.std
        lr = _lr_at(cfg, step)
        _, logits, nuis = self.export_module.embed_and_outputs(images)
        loss_attr = F.binary_cross_entropy_with_logits(logits, labels)
        loss_nuis = F.mse_loss(nuis, target)
        self.update(loss_attr + cfg.nuisance_weight * loss_nuis, ctx, lr)
        acc = ((logits.detach() > 0).float() == labels).float().mean(0)
        return {"loss_attr": float(loss_attr.detach()), "loss_nuisance": float(loss_nuis.detach()),
                "batch_acc_min": float(acc.min())}


def train_judge(config: JudgeConfig, work_dir: str | Path, out_dir: Optional[str | Path] = None,
                show_progress: bool = True) -> Path:
    """Train (or resume) the judge in work_dir; export judge.pt (fp16) with its card to out_dir."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    train_rendered(_JudgeTask(config, builtin_domain(config.domain, config.resolution)), work_dir, show_progress)
    return export_judge(work_dir, Path(out_dir) if out_dir is not None else Path(work_dir))


def export_judge(work_dir: str | Path, out_dir: str | Path) -> Path:
    """Export judge.pt (fp16) from work_dir's checkpoint with its evaluation in the JSON card."""
    return export_rendered(work_dir, Path(out_dir) / "judge.pt", JudgeConfig, build_judge, evaluate_judge,
                           role="evaluation only: embedding (fid_domain, dpips, precision/recall, domain "
                                "check) and attribute judge (edit success/preservation, predicted labels)")
