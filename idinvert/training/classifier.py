"""Training of the domain's attribute classifier on freshly rendered images with exact labels.

Every step draws a new batch from the renderer (`domain.sample(batch, seed=f(seed, step))`), so the
stream is endless, never repeats, is disjoint from nothing the benchmark measures on (the test split
is its own stream) and is reproducible and resumable from the step count alone.

    train_classifier(ClassifierConfig(), work_dir) -> path of the exported classifier weights (fp16)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from idinvert.nets.classifier import AttributeClassifier
from idinvert.training.common import (LossLog, Stopwatch, check_resume_config, config_dict,
                                      export_fp16_state_dict, fp16_rounded, load_checkpoint,
                                      progress, save_checkpoint)

__all__ = ["ClassifierConfig", "train_classifier", "build_classifier", "evaluate_classifier"]


@dataclass
class ClassifierConfig:
    """Settings of the embedded attribute classifier (defaults = what is shipped)."""
    resolution: int = 32
    width: int = 16
    embed_dim: int = 64
    batch_size: int = 128
    steps: int = 1000
    lr: float = 2e-3
    lr_final_fraction: float = 0.05   # cosine decay from lr to lr * this
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 100
    log_every: int = 20
    eval_images: int = 2000           # test-split images for the accuracy in the card
    domain: str = "synthetic-faces"

    RESUMABLE_CHANGES = ("checkpoint_every", "log_every", "threads", "eval_images")


def build_classifier(cfg: ClassifierConfig, num_attributes: int = 5) -> AttributeClassifier:
    return AttributeClassifier(resolution=cfg.resolution, num_attributes=num_attributes,
                               width=cfg.width, embed_dim=cfg.embed_dim)


def _make_domain(name: str, resolution: int):
    if name != "synthetic-faces":
        raise ValueError(f"unknown domain {name!r} (only 'synthetic-faces' is built in)")
    from idinvert.domains.synthetic_faces import SyntheticFaces
    return SyntheticFaces(resolution=resolution)


def _batch_seed(seed: int, step: int) -> int:
    # Disjoint from seeds other code is likely to use for domain.sample (small integers).
    return 1_000_000_007 * (seed + 1) + step


def _lr_at(cfg: ClassifierConfig, step: int) -> float:
    t = min(step / max(cfg.steps, 1), 1.0)
    lo = cfg.lr * cfg.lr_final_fraction
    return lo + (cfg.lr - lo) * 0.5 * (1 + math.cos(math.pi * t))


@torch.no_grad()
def evaluate_classifier(classifier: AttributeClassifier, domain, n: int = 2000,
                        batch: int = 500) -> dict:
    """Accuracy per attribute on the first n images of the domain's test split."""
    classifier = classifier.eval()
    test = domain.split("test", n)
    correct = torch.zeros(len(test.attributes))
    for start in range(0, n, batch):
        idx = list(range(start, min(n, start + batch)))
        pred = (classifier(test.load(idx)) > 0).long()
        correct += (pred == test.labels[idx]).float().sum(0)
    acc = correct / n
    return dict(n_test=n, split="test",
                accuracy={a: round(float(v), 4) for a, v in zip(test.attributes, acc)},
                min_accuracy=round(float(acc.min()), 4))


def train_classifier(config: ClassifierConfig, work_dir: str | Path,
                     out_dir: Optional[str | Path] = None, show_progress: bool = True) -> Path:
    """Train (or resume) the attribute classifier in work_dir; export classifier.pt (fp16) and a
    JSON card with the test accuracy per attribute to out_dir (default work_dir)."""
    cfg = config
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    out_dir = Path(out_dir) if out_dir is not None else work_dir
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    domain = _make_domain(cfg.domain, cfg.resolution)
    model = build_classifier(cfg, len(domain.attributes))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    cfg_now = config_dict(cfg)
    state = load_checkpoint(work_dir)
    if state is not None:
        check_resume_config(state["config"], cfg_now, ignore=ClassifierConfig.RESUMABLE_CHANGES)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, clock = state["step"], Stopwatch(state["seconds"])
        log = LossLog(work_dir / "log.jsonl", resume_step=step)
    else:
        step, clock = 0, Stopwatch()
        log = LossLog(work_dir / "log.jsonl")

    def checkpoint():
        save_checkpoint(work_dir, dict(config=cfg_now, model=model.state_dict(),
                                       opt=opt.state_dict(), step=step, seconds=clock.total()))

    bar = progress(cfg.steps, initial=step, desc="classifier", enabled=show_progress)
    model.train()
    while step < cfg.steps:
        images, labels = domain.sample(cfg.batch_size, seed=_batch_seed(cfg.seed, step))
        for group in opt.param_groups:
            group["lr"] = _lr_at(cfg, step)
        logits = model(images)
        loss = F.binary_cross_entropy_with_logits(logits, labels.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % cfg.log_every == 0:
            acc = ((logits.detach() > 0).long() == labels).float().mean(0)
            log.write(step=step, loss=float(loss.detach()), batch_acc_min=float(acc.min()),
                      lr=_lr_at(cfg, step - 1), seconds=clock.total())
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", acc_min=f"{float(acc.min()):.3f}")
        bar.update(1)
        if step % cfg.checkpoint_every == 0:
            checkpoint()
    bar.close()
    checkpoint()
    return export_classifier(work_dir, out_dir)


def export_classifier(work_dir: str | Path, out_dir: str | Path) -> Path:
    """Export classifier.pt (fp16) from work_dir's checkpoint, evaluating it on the test split."""
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    state = load_checkpoint(work_dir)
    if state is None:
        raise FileNotFoundError(f"no classifier checkpoint in {work_dir}")
    cfg = ClassifierConfig(**state["config"])
    domain = _make_domain(cfg.domain, cfg.resolution)
    model = build_classifier(cfg, len(domain.attributes))
    model.load_state_dict(state["model"])
    # Evaluate the weights as shipped (rounded to fp16).
    shipped = fp16_rounded(model, lambda: build_classifier(cfg, len(domain.attributes)))
    t = time.time()
    quality = evaluate_classifier(shipped, domain, cfg.eval_images)
    card = dict(model="AttributeClassifier", constructor=model.config,
                attributes=list(domain.attributes), training=config_dict(cfg),
                images_seen=state["step"] * cfg.batch_size, steps=state["step"],
                wall_seconds=round(state["seconds"], 1), quality=quality,
                eval_seconds=round(time.time() - t, 1))
    return export_fp16_state_dict(model, out_dir / "classifier.pt", card)
