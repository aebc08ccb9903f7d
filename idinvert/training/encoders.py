"""Training of the two encoders the paper compares: the conventional one and the domain-guided one.

Conventional encoder (the paper's baseline, in W+): sample z -> w -> W+ (broadcast, or two w's
style-mixed at a random layer), x = G.synthesis(wp), minimise mean((wp - E(x))^2). It never sees a
real image and never uses G's gradient.

Domain-guided encoder (Sec. 3.1; official TF `training/loss_encoder.py`): on *real* images x, through
the frozen G, with a discriminator D initialised from the GAN's D and trained against E:

    L_E = mean((x - G(E(x)))^2) + lambda_vgg * mean((F(x) - F(G(E(x))))^2)
          + lambda_adv * mean(softplus(-D(G(E(x)))))
    L_D = mean(softplus(D(G(E(x))))) + mean(softplus(-D(x))) + gamma/2 * mean(||grad_x D(x)||^2)

Both losses are *means* over elements, as in the official code (so lambda_vgg weighs a per-element
feature error against a per-element pixel error; element counts do not enter).

Choices for the 32 px domain, each stated where it is made:
- lambda_vgg: the paper's 5e-5 belongs to VGG16 conv4_3 features of [0, 255]-range Caffe inputs; the
  domain F has a completely different scale. `calibrate_lambda_perceptual` picks lambda so that the
  perceptual term has the same size relative to the pixel term as in the paper's setting, measured
  on pairs (real image, unrelated G sample) -- the state at the start of encoder training.
- gamma (R1): 10 at 256 px. ||grad_x D||^2 sums over pixels; for the same image content at R px each
  pixel's gradient scales like (256/R)^2 and the number of pixels like (R/256)^2, so the penalty
  grows like (256/R)^2 and gamma is rescaled by (R/256)^2 (the StyleGAN2-ADA heuristic gamma ~ R^2):
  0.156 at 32 px.
- Adam beta = (0.9, 0.99) and the official schedule shape (x0.8 every quarter of training, applied
  continuously as tf.train.exponential_decay(staircase=False) does); base lr, batch and steps are
  sized for a few CPU minutes (see the config dataclasses).
- R1 is applied lazily (every `r1_interval` = 4 D steps with weight x4, as StyleGAN2 and our GAN
  training do); the official code applies it every step. The double backward is the most expensive
  part of a step on a CPU.
- The D step reuses the E step's reconstructions (detached) instead of encoding the batch a second
  time as the TF graph does: it saves a third of the compute and differs only by one E update.

Speed on this CPU (``python -m idinvert.training.encoder_speed``, one domain-guided step of batch 32,
3 interleaved rounds, medians, measured beside the GAN training on the other core): channels_last
0.85x the wall time and 0.76x the CPU time of fp32 -- taken (``channels_last``, both encoders); bf16
autocast 1.91x (no bf16 instructions on these cores); 2 threads 4.7x under that contention (on an idle
machine 2 threads help, as for the GAN; the recipe runs two encoders side by side, one thread each).

Both loops are resumable: a checkpoint (models, optimisers, step, elapsed time) is written atomically
every `checkpoint_every` steps; batches are a pure function of (seed, step), so a resumed run sees
exactly the batches an uninterrupted one would. Losses go to `log.jsonl` in the work directory.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from idinvert.inversion import channels_last, frozen
from idinvert.nets.stylegan_encoder import StyleGANEncoder
from idinvert.training.common import (Stopwatch, check_resume_config, config_dict,
                                      load_checkpoint, progress, save_checkpoint)
from idinvert.training.loop_utils import IntervalLog, lr_at, step_generator

__all__ = [
    "ConventionalEncoderConfig", "DomainEncoderConfig", "PAPER_PERCEPTUAL_TO_PIXEL_RATIO",
    "build_encoder", "sample_training_codes", "train_conventional_encoder", "train_domain_encoder",
    "calibrate_lambda_perceptual", "reconstruction_mse", "time_encoder", "r1_gamma_for_resolution",
]

# Size of the perceptual term relative to the pixel term in the paper's encoder training, at its start
# (lambda_vgg * mean(dF^2) / mean(dx^2) for a real face and an unrelated reconstruction). Not measurable
# here (no ImageNet VGG16 weights); estimated from a public log of the official TF script (genforce/
# idinvert issue #26: recon_loss = pixel + perceptual = 0.69 at iteration 0, while the pixel MSE of two
# unrelated aligned faces in [-1, 1] is about 0.3-0.4), i.e. the two terms start out about equal.
# Uncertain to a factor of ~2; the value used is recorded in the model card.
PAPER_PERCEPTUAL_TO_PIXEL_RATIO = 1.0
PAPER_R1_GAMMA = 10.0
PAPER_RESOLUTION = 256


def r1_gamma_for_resolution(resolution: int, gamma_at_256: float = PAPER_R1_GAMMA) -> float:
    """gamma rescaled by (R / 256)^2 (see the module docstring)."""
    return gamma_at_256 * (resolution / PAPER_RESOLUTION) ** 2


# ------------------------------------------------------------------------------------------------
# Configurations (the shipped settings are the defaults)
# ------------------------------------------------------------------------------------------------

@dataclass
class ConventionalEncoderConfig:
    """Latent-regression encoder. Defaults: the shipped synthetic-faces recipe (measured: 524 s on the
    2-core dev machine, 1 thread, alongside the domain-guided run; 996 s when it was busier)."""
    steps: int = 20000                # a cap: with validation images, training stops at the plateau
    batch_size: int = 32
    # Official: 1e-4 for ~110k steps of batch 128 on 8 GPUs. With ~3k steps a larger step is needed;
    # a 400-step pilot on an intermediate G reached W+ loss 0.80 at 1e-3 vs 1.00 at 3e-4.
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    lr_decay_rate: float = 0.8        # official: x0.8 per quarter of training, continuous
    lr_decay_fraction: float = 0.25
    style_mixing_prob: float = 0.5    # else one w broadcast to all layers
    truncate: bool = False            # regress raw W+ codes (the paper uses no truncation)
    encoder_channels_base: int = 32
    encoder_channels_max: int = 128
    use_bn: bool = True
    seed: int = 1
    checkpoint_every: int = 250
    log_every: int = 25
    val_every_kimg: float = 10.0          # validation MSE on held-out real images this often
    plateau_window_kimg: float = 50.0     # stop when it improved by less than
    plateau_min_improvement: float = 0.01  # this fraction over the last window (issue 12)
    max_minutes: float | None = None      # stop (checkpointed, exported, said so) after this long in one sitting
    channels_last: bool = True            # NHWC layout (measured on the domain-guided step, below)


@dataclass
class DomainEncoderConfig:
    """Domain-guided encoder. Defaults: the shipped synthetic-faces recipe (measured: 581 s on the
    2-core dev machine, 1 thread, alongside the conventional run; 1038 s when it was busier)."""
    steps: int = 15000                # a cap: with validation images, training stops at the plateau
    batch_size: int = 32
    lr: float = 1e-3                  # as the conventional encoder; E and D share the schedule

    betas: tuple[float, float] = (0.9, 0.99)
    lr_decay_rate: float = 0.8
    lr_decay_fraction: float = 0.25
    lambda_vgg: float | None = None   # None: calibrate_lambda_perceptual at the start (recorded)
    perceptual_to_pixel_ratio: float = PAPER_PERCEPTUAL_TO_PIXEL_RATIO
    lambda_adv: float = 0.08          # official train_encoder.py (the paper text says 0.1)
    r1_gamma: float | None = None     # None: r1_gamma_for_resolution(R)
    r1_interval: int = 4              # lazy R1 (StyleGAN2): every k-th D step, weighted by k
    mirror_augment: bool = True       # official default
    train_images: int = 65536         # size of the real training split drawn from
    encoder_channels_base: int = 32
    encoder_channels_max: int = 128
    use_bn: bool = True
    seed: int = 2
    checkpoint_every: int = 100
    log_every: int = 10
    val_every_kimg: float = 10.0
    plateau_window_kimg: float = 50.0
    plateau_min_improvement: float = 0.01
    max_minutes: float | None = None      # stop (checkpointed, exported, said so) after this long in one sitting
    channels_last: bool = True            # NHWC layout: 0.85x wall, 0.76x CPU time per step (encoder_speed)


def build_encoder(generator: nn.Module, config: ConventionalEncoderConfig | DomainEncoderConfig,
                  ) -> StyleGANEncoder:
    """An encoder whose W+ shape matches `generator`, with the config's width, initialised from
    `config.seed` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return StyleGANEncoder(resolution=generator.resolution, w_space_dim=generator.w_space_dim,
                               encoder_channels_base=config.encoder_channels_base,
                               encoder_channels_max=config.encoder_channels_max,
                               use_bn=config.use_bn)


# ------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------

def _lr_at(config, step: int) -> float:
    return lr_at(config.lr, step, config.steps, config.lr_decay_rate, config.lr_decay_fraction)


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def _config_dict(config) -> dict:
    d = config_dict(config)
    d["betas"] = list(d["betas"])
    return d


# Fields that may differ between a run and its resumption (bookkeeping only).
_RESUMABLE_CHANGES = ("checkpoint_every", "log_every", "max_minutes", "channels_last")


def _out_of_time(config, started: float) -> bool:
    return config.max_minutes is not None and time.monotonic() - started >= 60 * config.max_minutes


def _stopped(plateau: "ValidationPlateau", done: int, config, timed_out: bool) -> dict:
    """Why training ended: at the plateau, at the step cap, or at this sitting's time budget."""
    if plateau.plateaued():
        why = "validation plateau"
    elif timed_out:
        why = (f"time budget of this sitting (max_minutes={config.max_minutes:g}) before the plateau: "
               "rerun the same command to resume")
    else:
        why = f"step cap ({config.steps}) before the plateau" if done >= config.steps else "unknown"
    return {"stopped": why}


def _resume(work_dir: Path, cfg_dict: dict) -> dict | None:
    state = load_checkpoint(work_dir)
    if state is not None:
        check_resume_config(state["config"], cfg_dict, ignore=_RESUMABLE_CHANGES)
    return state


class ValidationPlateau:
    """Validation MSE of G(E(x)) on held-out real images every `every_kimg`, kept in
    work_dir/val_curve.jsonl; `plateaued()` once it improved by less than `min_improvement` (relative)
    over the last `window_kimg`. Without validation images it never stops a run."""

    def __init__(self, work_dir: Path, images: torch.Tensor | None, every_kimg: float,
                 window_kimg: float, min_improvement: float, resume_kimg: float | None,
                 best: dict | None = None):
        self.path = work_dir / "val_curve.jsonl"
        self.images = images
        self.every, self.window, self.tol = every_kimg, window_kimg, min_improvement
        rows = []
        if resume_kimg is not None and self.path.exists():
            rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            rows = [r for r in rows if r["kimg"] <= resume_kimg + 1e-9]
        self.rows = rows
        self.path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        # The best-validation weights so far ({"kimg", "val_mse", "state"}), kept in the checkpoint
        # (so a resume restores the best of exactly the rows it keeps) and exported at the end:
        # the validation curve can rise again before the plateau rule stops a run.
        self.best = best

    def due(self, kimg_before: float, kimg_after: float) -> bool:
        return self.images is not None and int(kimg_after // self.every) > int(kimg_before // self.every)

    def add(self, kimg: float, encoder: nn.Module, generator: nn.Module, seconds: float) -> dict:
        row = {"kimg": round(kimg, 3), "val_mse": reconstruction_mse(encoder, generator, self.images),
               "seconds": round(seconds, 1)}
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.best is None or row["val_mse"] < self.best["val_mse"]:
            self.best = {"kimg": row["kimg"], "val_mse": row["val_mse"],
                         "state": {k: v.detach().clone() for k, v in encoder.state_dict().items()}}
        return row

    def restore_best(self, encoder: nn.Module) -> dict:
        """Load the best-validation weights into `encoder` (when validated at all); returns what is
        exported: {"rule", "kimg", "val_mse"} (kimg None: the last step's weights, never validated)."""
        if self.best is None:
            return {"exported": {"rule": "last step (no validation images)", "kimg": None,
                                 "val_mse": None}}
        encoder.load_state_dict(self.best["state"])
        return {"exported": {"rule": "best validation MSE", "kimg": self.best["kimg"],
                             "val_mse": self.best["val_mse"]}}

    def plateaued(self) -> bool:
        if not self.rows or self.rows[-1]["kimg"] < self.window:
            return False
        now = self.rows[-1]
        past = [r for r in self.rows if r["kimg"] <= now["kimg"] - self.window + 1e-9]
        if not past:
            return False
        before = past[-1]["val_mse"]
        return (before - now["val_mse"]) / max(before, 1e-12) < self.tol

    def summary(self) -> dict:
        return {"val_curve": self.rows, "plateau_rule": f"stop when validation MSE improves by less "
                f"than {self.tol:.0%} over {self.window:g} kimg (checked every {self.every:g} kimg)",
                "plateaued": self.plateaued()}


def _plateau(work_dir: Path, val_images, config, state: dict | None, device) -> ValidationPlateau:
    """The validation curve of a fresh run, or of a resumed one (`state`: its checkpoint)."""
    images = val_images.to(device) if val_images is not None else None
    resume_kimg = None if state is None else int(state["step"]) * config.batch_size / 1000
    return ValidationPlateau(work_dir, images, config.val_every_kimg, config.plateau_window_kimg,
                             config.plateau_min_improvement, resume_kimg,
                             best=None if state is None else state.get("best_val"))


def _validate(plateau: ValidationPlateau, step: int, done: int, batch: int, encoder, generator,
              clock) -> bool:
    """Validate when a val_every_kimg boundary was crossed; True when the run should stop."""
    if not plateau.due(step * batch / 1000, done * batch / 1000):
        return False
    plateau.add(done * batch / 1000, encoder, generator, clock.total())
    encoder.train()
    return plateau.plateaued()


def sample_training_codes(generator: nn.Module, n: int, rng: torch.Generator,
                          style_mixing_prob: float = 0.5, truncate: bool = False) -> torch.Tensor:
    """W+ codes [n, L, D] of random z: one w broadcast to all layers, or (with probability
    `style_mixing_prob` per code) layers >= a random crossover taken from a second w."""
    dev = generator.truncation.w_avg.device
    L = generator.num_layers
    z1 = torch.randn(n, generator.z_space_dim, generator=rng).to(dev)
    z2 = torch.randn(n, generator.z_space_dim, generator=rng).to(dev)
    mix = torch.rand(n, generator=rng) < style_mixing_prob
    cross = torch.randint(1, L, (n,), generator=rng)
    with torch.no_grad():
        wp1 = generator.z_to_wp(z1, truncate=truncate)
        wp2 = generator.z_to_wp(z2, truncate=truncate)
    layer = torch.arange(L).view(1, L)
    take2 = (mix.view(n, 1) & (layer >= cross.view(n, 1))).to(dev)
    return torch.where(take2.unsqueeze(-1), wp2, wp1)


# ------------------------------------------------------------------------------------------------
# Conventional encoder
# ------------------------------------------------------------------------------------------------

def train_conventional_encoder(generator: nn.Module, config: ConventionalEncoderConfig,
                               work_dir: str | Path, device: str | torch.device = "cpu",
                               show_progress: bool = True, val_images: torch.Tensor | None = None,
                               ) -> tuple[StyleGANEncoder, dict]:
    """Train E on latent regression; resume from `work_dir/checkpoint.pt` if present.

    generator: frozen StyleGANGenerator (not modified). val_images: held-out real images
    [N, 3, R, R]; with them, training stops at the validation plateau (ValidationPlateau), else
    after `config.steps`. Returns (encoder in eval mode, summary dict with steps, wall_time_s,
    final losses, the validation curve).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    cfg_dict = _config_dict(config)
    generator = generator.to(device)
    encoder = build_encoder(generator, config).to(device)
    opt = torch.optim.Adam([p for p in encoder.parameters() if p.requires_grad],
                           lr=config.lr, betas=tuple(config.betas))
    start, previous = 0, 0.0
    state = _resume(work_dir, cfg_dict)
    if state is not None:
        encoder.load_state_dict(state["encoder"])
        opt.load_state_dict(state["opt"])
        start, previous = int(state["step"]), float(state["seconds"])
    log = IntervalLog(work_dir / "log.jsonl", config.log_every, start if state is not None else None)
    clock = Stopwatch(previous)
    started, timed_out = time.monotonic(), False
    plateau = _plateau(work_dir, val_images, config, state, device)

    def save(step: int) -> None:
        save_checkpoint(work_dir, {"encoder": encoder.state_dict(), "opt": opt.state_dict(),
                                   "step": step, "seconds": clock.total(), "config": cfg_dict,
                                   "best_val": plateau.best})

    done = start
    bar = progress(config.steps, start, "conventional encoder", enabled=show_progress)
    if config.channels_last:  # the trained net converted for good (the context below restores old values)
        encoder.to(memory_format=torch.channels_last)
    with frozen(generator), channels_last(generator, enabled=config.channels_last):
        encoder.train()
        for step in range(start, config.steps):
            rng = step_generator(config.seed, step)
            wp = sample_training_codes(generator, config.batch_size, rng,
                                       config.style_mixing_prob, config.truncate)
            with torch.no_grad():
                x = generator.synthesis(wp)
            lr = _lr_at(config, step)
            for g in opt.param_groups:
                g["lr"] = lr
            loss = F.mse_loss(encoder(x), wp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done = step + 1
            row = log.add(done, {"loss_w": loss.item()}, lr=lr, seconds=round(clock.total(), 2))
            if row is not None:
                bar.set_postfix(loss_w=f"{row['loss_w']:.4f}")
            bar.update(1)
            stop = _validate(plateau, step, done, config.batch_size, encoder, generator, clock)
            timed_out = _out_of_time(config, started)
            stop = stop or timed_out
            if stop or done % config.checkpoint_every == 0 or done == config.steps:
                save(done)
            if stop:
                break
    bar.close()
    exported = plateau.restore_best(encoder)
    encoder.to(memory_format=torch.contiguous_format)
    encoder.eval()
    summary = {"steps": done, "images_seen": done * config.batch_size,
               "wall_time_s": round(clock.total(), 1), "final": log.last(), "config": cfg_dict,
               **plateau.summary(), **_stopped(plateau, done, config, timed_out), **exported}
    return encoder, summary


# ------------------------------------------------------------------------------------------------
# Domain-guided encoder
# ------------------------------------------------------------------------------------------------

@torch.no_grad()
def calibrate_lambda_perceptual(generator: nn.Module, perceptual: nn.Module, real: torch.Tensor,
                                seed: int = 0,
                                ratio: float = PAPER_PERCEPTUAL_TO_PIXEL_RATIO) -> dict:
    """lambda such that lambda * mean(dF^2) = ratio * mean(dx^2) on (real image, unrelated G sample).

    real: [N, 3, R, R] in [-1, 1]. Returns {"lambda_vgg", "pixel_mse", "feature_mse", "ratio", "n"}.
    """
    rng = torch.Generator().manual_seed(seed)
    dev = generator.truncation.w_avg.device
    with frozen(generator, perceptual):
        wp = sample_training_codes(generator, real.shape[0], rng, style_mixing_prob=0.0)
        fake = generator.synthesis(wp)
        real = real.to(dev)
        pix = F.mse_loss(fake, real).item()
        feat = F.mse_loss(perceptual(fake), perceptual(real)).item()
    return {"lambda_vgg": ratio * pix / feat, "pixel_mse": pix, "feature_mse": feat,
            "ratio": ratio, "n": int(real.shape[0]), "seed": seed}


def train_domain_encoder(generator: nn.Module, discriminator: nn.Module, perceptual: nn.Module,
                         images, config: DomainEncoderConfig, work_dir: str | Path,
                         device: str | torch.device = "cpu", show_progress: bool = True,
                         val_images: torch.Tensor | None = None,
                         ) -> tuple[StyleGANEncoder, nn.Module, dict]:
    """Train the domain-guided encoder on real images; resume from `work_dir/checkpoint.pt`.

    generator: frozen StyleGANGenerator; discriminator: the GAN's D (copied, not modified);
    perceptual: F (frozen); images: an ImageSet (or anything with `load(indices)` and `len`) of
    real training images; val_images: held-out real images (stop at the validation plateau, as
    train_conventional_encoder). Returns (encoder in eval mode, fine-tuned D copy, summary dict).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    generator = generator.to(device)
    perceptual = perceptual.to(device)
    n_images = min(len(images), config.train_images)
    if n_images < config.batch_size:
        raise ValueError(f"need at least {config.batch_size} training images, got {n_images}")

    calibration = None
    lambda_vgg = config.lambda_vgg
    cal_path = work_dir / "lambda_calibration.json"
    if lambda_vgg is None:
        if cal_path.exists():
            calibration = json.loads(cal_path.read_text())
        else:
            real = images.load(list(range(min(256, n_images))))
            calibration = calibrate_lambda_perceptual(generator, perceptual, real,
                                                      seed=config.seed,
                                                      ratio=config.perceptual_to_pixel_ratio)
            cal_path.write_text(json.dumps(calibration, indent=1))
        lambda_vgg = calibration["lambda_vgg"]
    gamma = config.r1_gamma if config.r1_gamma is not None else r1_gamma_for_resolution(
        generator.resolution)

    cfg_dict = _config_dict(config)
    encoder = build_encoder(generator, config).to(device)
    disc = copy.deepcopy(discriminator).to(device)
    disc.train()
    opt_e = torch.optim.Adam([p for p in encoder.parameters() if p.requires_grad],
                             lr=config.lr, betas=tuple(config.betas))
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=tuple(config.betas))
    start, previous = 0, 0.0
    state = _resume(work_dir, cfg_dict)
    if state is not None:
        encoder.load_state_dict(state["encoder"])
        disc.load_state_dict(state["discriminator"])
        opt_e.load_state_dict(state["opt_e"])
        opt_d.load_state_dict(state["opt_d"])
        start, previous = int(state["step"]), float(state["seconds"])
    log = IntervalLog(work_dir / "log.jsonl", config.log_every, start if state is not None else None)
    clock = Stopwatch(previous)
    started, timed_out = time.monotonic(), False
    plateau = _plateau(work_dir, val_images, config, state, device)

    def save(step: int) -> None:
        save_checkpoint(work_dir, {"encoder": encoder.state_dict(), "discriminator": disc.state_dict(),
                                   "opt_e": opt_e.state_dict(), "opt_d": opt_d.state_dict(),
                                   "step": step, "seconds": clock.total(), "config": cfg_dict,
                                   "best_val": plateau.best})

    done = start
    bar = progress(config.steps, start, "domain-guided encoder", enabled=show_progress)
    if config.channels_last:  # the trained nets converted for good (the context below restores old values)
        encoder.to(memory_format=torch.channels_last)
        disc.to(memory_format=torch.channels_last)
    with frozen(generator, perceptual), channels_last(generator, perceptual, enabled=config.channels_last):
        encoder.train()
        for step in range(start, config.steps):
            rng = step_generator(config.seed, step)
            idx = torch.randint(0, n_images, (config.batch_size,), generator=rng)
            x = images.load(idx.tolist())
            if config.mirror_augment:
                flip = torch.rand(config.batch_size, generator=rng) < 0.5
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            x = x.to(device)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = _lr_at(config, step)
            for opt in (opt_e, opt_d):
                for g in opt.param_groups:
                    g["lr"] = lr

            # E step: D is a fixed critic here.
            _set_requires_grad(disc, False)
            x_rec = generator.synthesis(encoder(x))
            loss_pix = F.mse_loss(x_rec, x)
            with torch.no_grad():
                feat_real = perceptual(x)
            loss_feat = F.mse_loss(perceptual(x_rec), feat_real)
            loss_adv = F.softplus(-disc(x_rec)).mean()
            loss_e = loss_pix + lambda_vgg * loss_feat + config.lambda_adv * loss_adv
            opt_e.zero_grad(set_to_none=True)
            loss_e.backward()
            opt_e.step()

            # D step: logistic loss, R1 on reals.
            _set_requires_grad(disc, True)
            do_r1 = gamma > 0 and step % config.r1_interval == 0
            real = x.detach().requires_grad_(do_r1)
            real_logits = disc(real)
            fake_logits = disc(x_rec.detach())
            loss_d_real = F.softplus(-real_logits).mean()
            loss_d_fake = F.softplus(fake_logits).mean()
            loss_d = loss_d_real + loss_d_fake
            r1 = None
            if do_r1:
                (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
                r1 = grad.pow(2).sum(dim=(1, 2, 3)).mean()
                loss_d = loss_d + 0.5 * gamma * config.r1_interval * r1
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            done = step + 1
            losses = {"loss_pix": loss_pix.item(), "loss_feat": loss_feat.item(),
                      "loss_adv": loss_adv.item(), "loss_e": loss_e.item(),
                      "loss_d_real": loss_d_real.item(), "loss_d_fake": loss_d_fake.item(),
                      "r1": r1.item() if r1 is not None else None}
            row = log.add(done, losses, lr=lr, seconds=round(clock.total(), 2))
            if row is not None:
                bar.set_postfix(pix=f"{row['loss_pix']:.4f}", feat=f"{row['loss_feat']:.3f}",
                                adv=f"{row['loss_adv']:.3f}")
            bar.update(1)
            stop = _validate(plateau, step, done, config.batch_size, encoder, generator, clock)
            timed_out = _out_of_time(config, started)
            stop = stop or timed_out
            if stop or done % config.checkpoint_every == 0 or done == config.steps:
                save(done)
            if stop:
                break
    bar.close()
    exported = plateau.restore_best(encoder)
    encoder.to(memory_format=torch.contiguous_format)
    disc.to(memory_format=torch.contiguous_format)
    encoder.eval()
    disc.eval()
    summary = {"steps": done, "images_seen": done * config.batch_size,
               **plateau.summary(), **_stopped(plateau, done, config, timed_out), **exported,
               "wall_time_s": round(clock.total(), 1),
               "lambda_vgg": lambda_vgg, "lambda_calibration": calibration, "r1_gamma": gamma,
               "final": log.last(), "config": cfg_dict}
    return encoder, disc, summary


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------

@torch.no_grad()
def reconstruction_mse(encoder: nn.Module, generator: nn.Module, images,
                       batch_size: int = 64) -> float:
    """Mean over images of mean((G.synthesis(E(x)) - x)^2); images: ImageSet or [N, 3, R, R]."""
    dev = generator.truncation.w_avg.device
    was = encoder.training
    encoder.eval()
    total, n = 0.0, 0
    if isinstance(images, torch.Tensor):
        batches = (images[i:i + batch_size] for i in range(0, images.shape[0], batch_size))
    else:
        batches = (b for _, b in images.batches(batch_size))
    for x in batches:
        x = x.to(dev)
        rec = generator.synthesis(encoder(x))
        total += ((rec - x) ** 2).mean(dim=(1, 2, 3)).sum().item()
        n += x.shape[0]
    encoder.train(was)
    return total / max(n, 1)


@torch.no_grad()
def time_encoder(encoder: nn.Module, images: torch.Tensor, repeats: int = 5) -> float:
    """Median wall time (s) of one forward pass of `encoder` on the batch `images`."""
    was = encoder.training
    encoder.eval()
    encoder(images)   # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        encoder(images)
        times.append(time.perf_counter() - t)
    encoder.train(was)
    times.sort()
    return times[len(times) // 2]
