"""Training of the ReStyle encoder (Alaluf et al. 2021) against a frozen generator.

Per batch of real images x (mirrored at random), from the average code and its image:

    w^0 = avg, y^0 = G(avg)
    for t in 1 .. n_iters_per_batch:
        w^t = w^{t-1} + E([x, y^{t-1}])          (w^{t-1}, y^{t-1} detached: no backprop through
        y^t = G.synthesis(w^t)                     earlier steps, as the official code)
        loss_t = lambda_pixel * mean((x - y^t)^2) + lambda_vgg * mean((F(x) - F(y^t))^2)
        loss_t.backward()                          (one backward per step; gradients accumulate)
    one optimiser step per batch

Settings and their sources (official = yuval-alaluf/restyle-encoder, `coach_restyle_psp.py` and the
README's training commands):
- n_iters_per_batch 5, start from the average latent and its image: official.
- losses: official L2 1.0 + LPIPS 0.8 + identity 0.1 (faces). Here pixel MSE + the bundle's
  perceptual term (F and lambda_vgg as the domain-guided encoder uses them; lambda_vgg None
  calibrates it the same way). No identity network exists for the synthetic domain, so there is no
  identity term.
- optimiser: Adam, betas (0.9, 0.99), lr 1e-3 with the idinvert encoders' x0.8-per-quarter decay
  (official: Ranger at a constant 1e-4 for a few 100k steps; scaled for a few CPU minutes as the
  zoo's other encoders are). Batch 8 (official 8): each batch costs n_iters_per_batch encoder and
  generator passes, so 600 steps see as many image-passes as 1500 e4e steps of batch 16.

Smoke run (embedded bundle, 200 steps of batch 8, 1 thread on the shared 2-core machine):
validation MSE after inference steps 1..5 went from 0.208 (the average code) to
0.054 / 0.031 / 0.026 / 0.025 / 0.026, i.e. refinement helps up to step 3-4; 5.0 images/s
(25 image-passes/s), so the default 600 x 8 takes about 16 minutes.

Trained on the one training loop (`idinvert.training.loop`) as a `ReStyleTask` (which `bench train` runs
too); resumable like the other encoders. Logs: <work_dir>/log.jsonl (loss at the first and the last
refinement step, and their mean), <work_dir>/val.jsonl (validation MSE after each inference step
1 .. val_steps on a held-out set: the curve an anytime plot needs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from idinvert.codes import expand_code
from idinvert.nets.restyle_encoder import TRAINING_STEPS, ReStyleEncoder, restyle_invert
from idinvert.training.e4e import (LATER_RECORDS, LaterEncoderRun, build_average_encoder, later_summary,
                                   train_later_encoder)
from idinvert.training.encoders import PAPER_PERCEPTUAL_TO_PIXEL_RATIO, RealImageTask
from idinvert.training.loop import StepContext
from idinvert.training.loop_utils import check_positive

__all__ = ["ReStyleConfig", "build_restyle_encoder", "train_restyle_encoder", "ReStyleTask",
           "restyle_validation_mse"]


@dataclass
class _ReStyleTraining:
    """ReStyle's schedule, losses and data. Its Adam and decay are the other encoders' (EncoderSchedule) but
    declared here: n_iters_per_batch has always stood between batch_size and lr in its cards."""
    steps: int = 600
    batch_size: int = 8
    n_iters_per_batch: int = TRAINING_STEPS      # official 5
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    lr_decay_rate: float = 0.8
    lr_decay_fraction: float = 0.25
    lambda_pixel: float = 1.0
    lambda_vgg: Optional[float] = None
    perceptual_to_pixel_ratio: float = PAPER_PERCEPTUAL_TO_PIXEL_RATIO
    mirror_augment: bool = True
    train_images: int = 65536
    val_images: int = 256
    val_every: int = 50
    val_steps: int = TRAINING_STEPS              # inference steps for the validation curve


@dataclass
class ReStyleConfig(LaterEncoderRun, _ReStyleTraining):
    """ReStyle training settings (sources in the module docstring)."""
    seed: int = 4
    checkpoint_every: int = 50


_RESUMABLE_CHANGES = ("checkpoint_every", "log_every", "val_every", "val_steps", "channels_last")


def build_restyle_encoder(generator: nn.Module, config: ReStyleConfig) -> ReStyleEncoder:
    """A ReStyle encoder matching `generator` (see e4e.build_average_encoder)."""
    return build_average_encoder(ReStyleEncoder, generator, config)


@torch.no_grad()
def restyle_validation_mse(encoder: ReStyleEncoder, generator: nn.Module, avg: torch.Tensor,
                           images: torch.Tensor, steps: int, batch_size: int = 64) -> list[float]:
    """Mean reconstruction MSE of `images` [N, 3, R, R] after each refinement step 1 .. steps."""
    was = encoder.training
    encoder.eval()
    totals = [0.0] * steps
    for x in images.split(batch_size):
        _, recons = restyle_invert(encoder, x, generator, avg, steps, return_images=True)
        for t, y in enumerate(recons):
            totals[t] += (y - x).pow(2).flatten(1).mean(1).sum().item()
    encoder.train(was)
    return [v / max(images.shape[0], 1) for v in totals]


class ReStyleTask(RealImageTask):
    """ReStyle: `n_iters_per_batch` refinement steps from the average code, one backward each."""
    name = "restyle"
    zoo_records, zoo_resumable = LATER_RECORDS, _RESUMABLE_CHANGES

    def build(self) -> nn.Module:
        return build_restyle_encoder(self.generator, self.config)

    def validate(self) -> tuple[float, dict]:
        E = self.export_module
        curve = restyle_validation_mse(E, self.generator, E.latent_avg, self.val_x, self.config.val_steps)
        return curve[-1], {"val_mse_per_step": [round(v, 6) for v in curve], "n_images": int(self.val_x.shape[0])}

    def step(self, step: int, ctx: StepContext) -> dict:
        c, E, G = self.config, self.export_module, self.generator
        x = self.batch(ctx)
        self.set_lr(step, ctx)
        feat_x = self.features(x)
        avg = E.latent_avg
        w = expand_code(avg, x.shape[0], G.num_layers, G.w_space_dim)
        with torch.no_grad():
            y = G.synthesis(avg.unsqueeze(0)).expand(x.shape[0], -1, -1, -1)
        self.opt.zero_grad(set_to_none=True)
        losses = []
        for _ in range(c.n_iters_per_batch):   # one backward per refinement step, gradients accumulate
            w = w.detach() + E(x, y.detach())
            y = G.synthesis(w)
            pix, feat = self.reconstruction(x, y, feat_x)
            loss = c.lambda_pixel * pix + self.lambda_vgg * feat
            loss.backward()
            losses.append(loss.item())
        ctx.dist.average_grads(E)
        self.opt.step()
        # the mean's key: "loss_mean" in the zoo's logs, "loss" in bench train's
        return {"loss_first": losses[0], "loss_last": losses[-1],
                "loss_mean" if self.zoo else "loss": sum(losses) / len(losses)}


def train_restyle_encoder(generator: nn.Module, perceptual: nn.Module, images,
                          config: ReStyleConfig, work_dir: str | Path,
                          device: str | torch.device = "cpu",
                          val_images: Optional[torch.Tensor] = None, show_progress: bool = True,
                          ) -> tuple[ReStyleEncoder, dict]:
    """Train ReStyle on real images; resume from `work_dir/checkpoint.pt` if present.

    Arguments as `idinvert.training.e4e.train_e4e_encoder`. Returns (encoder in eval mode, summary
    with the validation curve per inference step and the average code it starts from).
    """
    check_positive(steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                   n_iters_per_batch=config.n_iters_per_batch, val_steps=config.val_steps)
    task, summary, start = train_later_encoder(ReStyleTask, generator, perceptual, images, config, work_dir,
                                               device, val_images, show_progress)
    rows, passes = summary["val_curve"], config.steps * config.batch_size
    return task.export_module, {
        **later_summary(summary, config, start),
        "image_passes_per_second": round(passes * config.n_iters_per_batch / max(summary["wall_time_s"], 1e-9), 2),
        "val_mse_per_step": rows[-1]["val_mse_per_step"] if rows else None}
