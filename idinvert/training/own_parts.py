"""The parts `bench train` trains for a user's generator, each a task of `idinvert.training.loop`.

The encoder tasks are the embedded zoo's own (`ConventionalTask`, `DomainTask` in `encoders`, `E4ETask`,
`ReStyleTask` in `e4e` / `restyle`: the zoo's trainers run them too), each holding its networks and
optimisers and supplying one step on this rank's shard of the global batch (`StepContext.shard`), with the
zoo's config dataclasses as they are; here they get bench train's exporter (`export_part`). The generator is
any of ours (StyleGAN, or a rosinality StyleGAN2 through `StyleGAN2Generator`), and the perceptual network F
may be absent (then its term is off, and the card says so).

- "conventional": on G's samples (no real image): mean((wp - E(G(wp)))^2) + lambda_pixel * mean((G(wp) -
  G(E(G(wp))))^2) -- the paper's latent and pixel losses of the conventional encoder.
- "domain": on the folder's images, through the frozen G, with a discriminator (the bundle's own when it
  has one, else a new one trained beside it): pixel + lambda_vgg * perceptual + lambda_adv * adversarial,
  D with the logistic loss and lazy R1 (see `idinvert.training.encoders`).
- "e4e", "restyle": as `idinvert.training.e4e` / `restyle` (progressive offsets with the latent
  discriminator; iterative refinement from the average code).
- "classifier" (only with a labels CSV): the attribute classifier, BCE on the CSV's labels.

Every task validates on held-out folder images (reconstruction MSE of G(E(x)); ReStyle after its last
refinement step), so the loop's plateau stop exports the best-validation encoder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from idinvert.bundles.trained import PART_FILES
from idinvert.training.classifier import ClassifierConfig, cosine_lr
from idinvert.training.common import export_fp16_state_dict
from idinvert.training.e4e import E4EConfig, E4ETask
from idinvert.training.encoders import (ConventionalEncoderConfig, ConventionalTask, DomainEncoderConfig,
                                        DomainTask, EncoderTask, recorded_settings)
from idinvert.training.loop import StepContext
from idinvert.training.restyle import ReStyleConfig, ReStyleTask

__all__ = ["PART_FILES", "ClassifierTask", "TASKS", "write_part", "export_part"]


def write_part(module: nn.Module, path: Path, card: dict) -> Path:
    """<path> (fp16 state dict) and <path>.json ({"model", "constructor", **card}), both atomic."""
    full = {"model": type(module).__name__, "constructor": dict(module.config), **card}
    return export_fp16_state_dict(module, path, full)


def export_part(task: EncoderTask, summary: dict) -> None:
    """bench train's export of a trained part: its weights with a card (and the domain task's D)."""
    field, filename = PART_FILES[task.name]
    task.export_module.eval()
    write_part(task.export_module, task.out_dir / filename,
               {"part": field, "settings": recorded_settings(task.config), **task.card, "training": summary})
    if task.name == "domain":
        task.disc.eval()
        write_part(task.disc, task.out_dir / "discriminator.pt",
                   {"part": "discriminator", "trained": task.card["discriminator"], "training": summary["part"]})


class ClassifierTask(EncoderTask):
    """The attribute classifier of a folder with a labels CSV (InterFaceGAN's labeller of G's samples, and
    F's stand-in without VGG16): BCE on the CSV's 0/1 labels, the zoo classifier's settings; validated by
    the BCE on the held-out images."""
    name = "classifier"

    def __init__(self, generator, images: Callable, labels: torch.Tensor, train_range: range, *args, **kw):
        self.images, self.labels, self.train_range = images, labels, train_range
        super().__init__(generator, *args, **kw)
        self.val_y = labels[:self.val_x.shape[0]].float().to(self.device)

    def build(self) -> nn.Module:
        from idinvert.nets.classifier import AttributeClassifier

        c = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            return AttributeClassifier(self.generator.resolution, num_attributes=self.labels.shape[1],
                                       width=c.width, embed_dim=c.embed_dim)

    def lr(self, step: int) -> float:
        return cosine_lr(dataclasses.replace(self.config, steps=self.steps), step)

    def step(self, step: int, ctx: StepContext) -> dict:
        r = self.train_range
        idx = torch.randint(r.start, r.stop, (ctx.batch_size,), generator=ctx.rng)[ctx.shard]
        x, y = self.images(idx.tolist()).to(self.device), self.labels[idx].float().to(self.device)
        self.set_lr(step, ctx)
        loss = F.binary_cross_entropy_with_logits(self.export_module(x), y)
        ctx.update(loss, self.export_module, self.opt)
        return {"loss": loss.item()}

    @torch.no_grad()
    def validate(self) -> float:
        was = self.export_module.training
        self.export_module.eval()
        loss = F.binary_cross_entropy_with_logits(self.export_module(self.val_x), self.val_y).item()
        self.export_module.train(was)
        return loss



# part -> (task class, its config class)
TASKS = {
    "conventional": (ConventionalTask, ConventionalEncoderConfig),
    "domain": (DomainTask, DomainEncoderConfig),
    "e4e": (E4ETask, E4EConfig),
    "restyle": (ReStyleTask, ReStyleConfig),
    "classifier": (ClassifierTask, ClassifierConfig),
}
