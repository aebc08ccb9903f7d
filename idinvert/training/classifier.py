"""Training of the domain's attribute classifier on freshly rendered images with exact labels.

Every step draws a new batch from the renderer (`domain.sample(batch, seed=f(seed, step))`), so the
stream is endless, never repeats, is disjoint from nothing the benchmark measures on (the test split
is its own stream) and is reproducible and resumable from the step count alone.

    train_classifier(ClassifierConfig(), work_dir) -> path of the exported classifier weights (fp16)

It trains on the one training loop (`idinvert.training.loop`) as a `RenderedTask`, which the judge
(judge.py) shares: a network, Adam with a cosine learning rate, one freshly rendered batch per step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from idinvert.nets.classifier import AttributeClassifier
from idinvert.training.common import (builtin_domain, config_dict, export_fp16_state_dict, fp16_rounded,
                                      load_checkpoint)
from idinvert.training.loop import LoopSettings, Records, StepContext, TaskBase, train

__all__ = ["ClassifierConfig", "RenderedConfig", "train_classifier", "build_classifier", "evaluate_classifier",
           "RenderedTask", "cosine_lr", "train_rendered", "export_rendered"]


@dataclass
class RenderedConfig:
    """What the classifier's and the judge's settings share (defaults: the classifier's). A config adds its
    net's own settings after these, so they come last in its JSON card's record."""
    resolution: int = 32
    width: int = 16
    embed_dim: int = 64
    batch_size: int = 128
    steps: int = 1000
    lr: float = 2e-3
    lr_final_fraction: float = 0.05   # cosine decay from lr to lr * this
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 100
    log_every: int = 20
    eval_images: int = 2000           # test-split images for the quality measured in the card
    domain: str = "synthetic-faces"

    RESUMABLE_CHANGES = ("checkpoint_every", "log_every", "threads", "eval_images")


@dataclass
class ClassifierConfig(RenderedConfig):
    """Settings of the embedded attribute classifier (defaults = what is shipped)."""
    weight_decay: float = 0.0


def build_classifier(cfg: ClassifierConfig, num_attributes: int = 5) -> AttributeClassifier:
    return AttributeClassifier(resolution=cfg.resolution, num_attributes=num_attributes,
                               width=cfg.width, embed_dim=cfg.embed_dim)


def _batch_seed(seed: int, step: int) -> int:
    # Disjoint from seeds other code is likely to use for domain.sample (small integers).
    return 1_000_000_007 * (seed + 1) + step


def cosine_lr(cfg, step: int) -> float:
    """Cosine decay from cfg.lr to cfg.lr * cfg.lr_final_fraction over cfg.steps."""
    t = min(step / max(cfg.steps, 1), 1.0)
    lo = cfg.lr * cfg.lr_final_fraction
    return lo + (cfg.lr - lo) * 0.5 * (1 + math.cos(math.pi * t))


_lr_at = cosine_lr   # looked up when a step runs (so a test can interrupt a run through it)


class RenderedTask(TaskBase):
    """A network trained on freshly rendered images (the classifier, the judge) on the one loop: Adam with
    the cosine schedule; checkpoint keys `model` / `opt` and the config's own resume rule, as these work
    dirs have always had them; the log holds the logged step's own values. Exported by the caller from
    the checkpoint (`export_rendered`), not by the loop."""
    records = Records(flat=True)

    def __init__(self, cfg, model: nn.Module, domain):
        self.cfg, self.export_module, self.domain = cfg, model, domain
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=getattr(cfg, "weight_decay", 0.0))

    def modules(self) -> dict:
        return {"model": self.export_module}

    def optimizers(self) -> dict:
        return {"opt": self.opt}

    def settings(self) -> dict:
        return config_dict(self.cfg)

    def checkpoint_config(self, settings: LoopSettings) -> tuple[dict, tuple]:
        return config_dict(self.cfg), type(self.cfg).RESUMABLE_CHANGES

    def update(self, loss: torch.Tensor, ctx: StepContext, lr: float) -> None:
        """The step's learning rate (logged), then the optimiser step."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        ctx.update(loss, self.export_module, self.opt)
        ctx.notes["lr"] = lr

    def validate(self) -> None:
        return None

    def export(self, summary: dict) -> None:
        pass


class _ClassifierTask(RenderedTask):
    name = "classifier"

    def step(self, step: int, ctx: StepContext) -> dict:
        images, labels = self.domain.sample(self.cfg.batch_size, seed=_batch_seed(self.cfg.seed, step))
        lr = _lr_at(self.cfg, step)
        logits = self.export_module(images)
        loss = F.binary_cross_entropy_with_logits(logits, labels.float())
        self.update(loss, ctx, lr)
        acc = ((logits.detach() > 0).long() == labels).float().mean(0)
        return {"loss": float(loss.detach()), "batch_acc_min": float(acc.min())}


def train_rendered(task: RenderedTask, work_dir: str | Path, show_progress: bool) -> dict:
    """Train (or resume) a RenderedTask in work_dir on the loop; its summary."""
    cfg = task.cfg
    settings = LoopSettings(steps=cfg.steps, batch_size=cfg.batch_size, seed=cfg.seed,
                            checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every, log_reduce="last")
    task.export_module.train()
    return train(task, settings, work_dir, show_progress=show_progress)


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
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    domain = builtin_domain(cfg.domain, cfg.resolution)
    train_rendered(_ClassifierTask(cfg, build_classifier(cfg, len(domain.attributes)), domain), work_dir,
                   show_progress)
    return export_classifier(work_dir, Path(out_dir) if out_dir is not None else Path(work_dir))


def export_rendered(work_dir: str | Path, out_path: Path, config_cls, build: Callable, evaluate: Callable,
                    **card) -> Path:
    """Export `out_path` (fp16) from work_dir's checkpoint of a RenderedTask: the weights as shipped (rounded
    to fp16) evaluated by `evaluate(model, domain, n)`, its card with `card`'s fields after the attributes."""
    state = load_checkpoint(work_dir)
    if state is None:
        raise FileNotFoundError(f"no {out_path.stem} checkpoint in {work_dir}")
    cfg = config_cls(**state["config"])
    domain = builtin_domain(cfg.domain, cfg.resolution)
    model = build(cfg, len(domain.attributes))
    model.load_state_dict(state["model"])
    shipped = fp16_rounded(model, lambda: build(cfg, len(domain.attributes)))
    t = time.time()
    quality = evaluate(shipped, domain, cfg.eval_images)
    full = dict(model=type(model).__name__, constructor=model.config, attributes=list(domain.attributes), **card,
                training=config_dict(cfg), images_seen=state["step"] * cfg.batch_size, steps=state["step"],
                wall_seconds=round(state["seconds"], 1), quality=quality, eval_seconds=round(time.time() - t, 1))
    return export_fp16_state_dict(model, out_path, full)


def export_classifier(work_dir: str | Path, out_dir: str | Path) -> Path:
    """Export classifier.pt (fp16) from work_dir's checkpoint, evaluating it on the test split."""
    return export_rendered(work_dir, Path(out_dir) / "classifier.pt", ClassifierConfig, build_classifier,
                           evaluate_classifier)
