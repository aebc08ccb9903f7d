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

Resumable like the other encoders. Logs: <work_dir>/log.jsonl (loss at the first and the last
refinement step, and their mean), <work_dir>/val.jsonl (validation MSE after each inference step
1 .. val_steps on a held-out set: the curve an anytime plot needs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from idinvert.codes import expand_code, mean_code
from idinvert.inversion import channels_last, frozen
from idinvert.nets.restyle_encoder import TRAINING_STEPS, ReStyleEncoder, restyle_invert
from idinvert.training.common import (LossLog, Stopwatch, check_resume_config, config_dict,
                                      load_checkpoint, progress, save_checkpoint)
from idinvert.training.e4e import resolve_lambda_vgg
from idinvert.training.encoders import PAPER_PERCEPTUAL_TO_PIXEL_RATIO
from idinvert.training.loop_utils import (IntervalLog, check_positive, lr_at, real_batch, set_lr,
                                          split_holdout, step_generator)

__all__ = ["ReStyleConfig", "build_restyle_encoder", "train_restyle_encoder",
           "restyle_validation_mse"]


@dataclass
class ReStyleConfig:
    """ReStyle training settings (sources in the module docstring)."""
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
    encoder_channels_base: int = 32
    encoder_channels_max: int = 128
    use_bn: bool = True
    head_gain: float = 0.1
    seed: int = 4
    checkpoint_every: int = 50
    log_every: int = 10
    channels_last: bool = True                   # NHWC layout for E, G and F (as the encoders: encoders.py)


_RESUMABLE_CHANGES = ("checkpoint_every", "log_every", "val_every", "val_steps", "channels_last")


def build_restyle_encoder(generator: nn.Module, config: ReStyleConfig) -> ReStyleEncoder:
    """A ReStyle encoder matching `generator`, initialised from config.seed (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        encoder = ReStyleEncoder(generator.resolution, generator.w_space_dim,
                                 encoder_channels_base=config.encoder_channels_base,
                                 encoder_channels_max=config.encoder_channels_max,
                                 use_bn=config.use_bn, head_gain=config.head_gain)
    if encoder.num_layers != generator.num_layers:
        raise ValueError(f"encoder has {encoder.num_layers} layers, generator {generator.num_layers}")
    encoder.set_latent_avg(mean_code(generator, seed=config.seed).cpu())
    return encoder


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
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    generator = generator.to(device)
    perceptual = perceptual.to(device)
    n_images = min(len(images), config.train_images)
    holdout = 0 if val_images is not None else config.val_images
    val_idx, train_idx = split_holdout(n_images, holdout, config.batch_size)
    val_x = (val_images if val_images is not None else images.load(list(val_idx))).to(device)
    lambda_vgg, calibration = resolve_lambda_vgg(config, generator, perceptual, images, train_idx,
                                                 work_dir)
    cfg_dict = config_dict(config)
    cfg_dict["betas"] = list(cfg_dict["betas"])
    encoder = build_restyle_encoder(generator, config).to(device)
    avg = encoder.latent_avg                                          # [L, D]
    opt = torch.optim.Adam([p for p in encoder.parameters() if p.requires_grad], lr=config.lr,
                           betas=tuple(config.betas))
    start, previous = 0, 0.0
    state = load_checkpoint(work_dir)
    if state is not None:
        check_resume_config(state["config"], cfg_dict, ignore=_RESUMABLE_CHANGES)
        encoder.load_state_dict(state["encoder"])
        opt.load_state_dict(state["opt"])
        start, previous = int(state["step"]), float(state["seconds"])
    resume = start if state is not None else None
    log = IntervalLog(work_dir / "log.jsonl", config.log_every, resume)
    val_log = LossLog(work_dir / "val.jsonl", resume_step=resume)
    clock = Stopwatch(previous)

    def save(step: int) -> None:
        save_checkpoint(work_dir, {"encoder": encoder.state_dict(), "opt": opt.state_dict(),
                                   "step": step, "seconds": clock.total(), "config": cfg_dict})

    def validate(step: int) -> None:
        curve = restyle_validation_mse(encoder, generator, avg, val_x, config.val_steps)
        val_log.write(step=step, val_mse=curve[-1], val_mse_per_step=[round(v, 6) for v in curve],
                      n_images=int(val_x.shape[0]), seconds=round(clock.total(), 2))

    L, D = generator.num_layers, generator.w_space_dim
    bar = progress(config.steps, start, "restyle encoder", unit="step", enabled=show_progress)
    if config.channels_last:  # the trained encoder converted for good (the context restores frozen nets)
        encoder.to(memory_format=torch.channels_last)
    with frozen(generator, perceptual), channels_last(generator, perceptual, enabled=config.channels_last):
        with torch.no_grad():
            avg_image = generator.synthesis(avg.unsqueeze(0))
        encoder.train()
        if start == 0:
            validate(0)
        for step in range(start, config.steps):
            rng = step_generator(config.seed, step)
            x = real_batch(images, train_idx, config.batch_size, rng, config.mirror_augment, device)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = lr_at(config.lr, step, config.steps, config.lr_decay_rate, config.lr_decay_fraction)
            set_lr(opt, lr)
            with torch.no_grad():
                feat_x = perceptual(x)
            w = expand_code(avg, x.shape[0], L, D)
            y = avg_image.expand(x.shape[0], -1, -1, -1)
            opt.zero_grad(set_to_none=True)
            losses = []
            for _ in range(config.n_iters_per_batch):
                w = w.detach() + encoder(x, y.detach())
                y = generator.synthesis(w)
                loss = (config.lambda_pixel * F.mse_loss(y, x)
                        + lambda_vgg * F.mse_loss(perceptual(y), feat_x))
                loss.backward()
                losses.append(loss.item())
            opt.step()

            done = step + 1
            row = log.add(done, {"loss_first": losses[0], "loss_last": losses[-1],
                                 "loss_mean": sum(losses) / len(losses)},
                          lr=lr, seconds=round(clock.total(), 2))
            if row is not None:
                bar.set_postfix(first=f"{row['loss_first']:.4f}", last=f"{row['loss_last']:.4f}")
            bar.update(1)
            if done % config.val_every == 0 or done == config.steps:
                validate(done)
            if done % config.checkpoint_every == 0 or done == config.steps:
                save(done)
    bar.close()
    encoder.to(memory_format=torch.contiguous_format)
    encoder.eval()
    val_rows = val_log.rows()
    passes = config.steps * config.batch_size
    summary = {"steps": config.steps, "wall_time_s": round(clock.total(), 1),
               "images_per_second": round(passes / max(clock.total(), 1e-9), 2),
               "image_passes_per_second": round(passes * config.n_iters_per_batch
                                                / max(clock.total(), 1e-9), 2),
               "lambda_vgg": lambda_vgg, "lambda_calibration": calibration,
               "val_mse": val_rows[-1]["val_mse"] if val_rows else None,
               "val_mse_per_step": val_rows[-1]["val_mse_per_step"] if val_rows else None,
               "val_curve": [(r["step"], round(r["val_mse"], 6)) for r in val_rows],
               "identity_loss": "none: no identity network exists for this domain",
               "final": log.last(), "config": cfg_dict}
    return encoder, summary
