"""Training of the e4e encoder (encoder4editing, Tov et al. 2021) against a frozen generator.

Per step, on real images x (mirrored at random), with E = E4EEncoder and D_w = LatentDiscriminator:

    w = avg + w_0 + Delta (offsets of layers 1 .. k unlocked so far),   y = G.synthesis(w)
    L_E = lambda_pixel * mean((x - y)^2) + lambda_vgg * mean((F(x) - F(y))^2)
          + delta_norm_lambda * sum_{i=1..k} mean_b ||Delta_i||_2
          + w_disc_lambda * mean_{i=0..k} mean_b softplus(-D_w(w_i))
    L_D = mean softplus(D_w(w_fake)) + mean softplus(-D_w(w_real))
          + r1_interval * gamma / 2 * mean ||grad D_w(w_real)||^2     (every r1_interval-th step)

w_real are codes of random z through G's own mapping (no truncation), taken at the same layers as
the fakes (so a generator with per-layer W gives D_w the per-layer mixture it must match).

Settings and their sources (official = omertov/encoder4editing `options/train_options.py` and the
README's FFHQ command):
- progressive training: all layers share w_0 until `progressive_start`, then one more offset every
  `progressive_step_every` steps. Official 20000 / 2000 (10 : 1) in runs of a few 100k steps; here
  300 / 100 of 1500 steps, so all L-1 = 7 offsets of the 32 px generator are on by step 1000 and
  trained for the last third.
- delta regulariser: 2e-4 on the sum over unlocked layers of the (not squared) L2 norm of
  w_i - w_0 (official delta_norm=2, delta_norm_lambda=2e-4). With a per-layer average code,
  w_i - w_0 is read as the offset Delta_i itself (identical when the average is the same on all
  layers, as in official e4e).
- latent discriminator: 4-layer MLP, LeakyReLU 0.2, non-saturating logistic loss, R1 gamma 10 every
  16 steps, weight 0.1 (all official). Its learning rate is a fifth of the encoder's, as official
  (2e-5 vs 1e-4). Official e4e also keeps a pool of 50 past fake codes (`--use_w_pool`); not done
  here (the discriminator sees this step's codes). Official e4e trains D_w on w_0 only (its code
  takes `fake_w[:, 0]`) while the encoder's adversarial term covers every unlocked layer; here both
  use every unlocked layer, which is what the paper describes.
- reconstruction: pixel MSE + the bundle's perceptual term (F and lambda_vgg as the domain-guided
  encoder uses them; lambda_vgg None calibrates it the same way). Official e4e uses L2 1.0 + LPIPS
  0.8 + identity 0.1 for faces; no identity network exists for the synthetic domain, so there is no
  identity term, and no LPIPS network is available offline, so the domain F plays its role.
- optimiser: Adam, betas (0.9, 0.99), lr 1e-3 with the idinvert encoders' x0.8-per-quarter decay
  (official: Ranger at a constant 1e-4 for a few 100k steps; a few CPU minutes need larger steps,
  as for the other encoders of the zoo). Batch 16 (official 8).

Smoke run (embedded bundle, 400 steps of batch 16 with progressive_start 100 / step_every 25, 1
thread on the shared 2-core machine): validation MSE 0.208 (the average code) -> 0.034 at step 100
(one code per image) -> 0.021 at step 400 (all 7 offsets on); sum of offset norms ~29 (||w - w_avg||
of a mapped code is ~8.2); latent discriminator accuracy 0.60 on e4e codes, 0.86 on mapped codes;
31 images/s, so the default 1500 x 16 takes about 13 minutes.

Resumable (checkpoint every `checkpoint_every` steps; batches are a function of (seed, step)).
Logs: <work_dir>/log.jsonl (training losses), <work_dir>/val.jsonl (validation MSE of G(E(x)) on a
held-out set, with the progressive stage). The summary reports the latent discriminator's final
accuracy on e4e's codes of the validation images (fraction called fake) and on mapped codes (called
real): a discriminator that cannot tell them apart means the codes sit where G's mapping puts codes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from idinvert.codes import mapping_codes, mean_code
from idinvert.inversion import channels_last, frozen
from idinvert.nets.e4e_encoder import E4EEncoder, LatentDiscriminator
from idinvert.training.common import (LossLog, Stopwatch, check_resume_config, config_dict,
                                      load_checkpoint, progress, save_checkpoint)
from idinvert.training.encoders import (PAPER_PERCEPTUAL_TO_PIXEL_RATIO,
                                        calibrate_lambda_perceptual)
from idinvert.training.loop_utils import (IntervalLog, as_tensor_batches, check_positive, lr_at,
                                          real_batch, set_lr, split_holdout, step_generator)

__all__ = ["E4EConfig", "build_e4e_encoder", "progressive_stage", "train_e4e_encoder",
           "latent_discriminator_accuracy", "resolve_lambda_vgg", "validation_mse"]


@dataclass
class E4EConfig:
    """e4e training settings (sources in the module docstring)."""
    steps: int = 1500
    batch_size: int = 16
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    lr_decay_rate: float = 0.8
    lr_decay_fraction: float = 0.25
    lambda_pixel: float = 1.0
    lambda_vgg: Optional[float] = None           # None: calibrated as for the domain-guided encoder
    perceptual_to_pixel_ratio: float = PAPER_PERCEPTUAL_TO_PIXEL_RATIO
    progressive_start: int = 300                 # official 20000
    progressive_step_every: int = 100            # official 2000
    delta_norm_lambda: float = 2e-4              # official
    delta_norm: int = 2                          # official (p of the norm)
    w_disc_lambda: float = 0.1                   # official
    w_disc_lr_ratio: float = 0.2                 # official 2e-5 / 1e-4
    w_disc_layers: int = 4                       # official
    r1_gamma: float = 10.0                       # official
    r1_interval: int = 16                        # official d_reg_every
    mirror_augment: bool = True                  # official (RandomHorizontalFlip 0.5)
    train_images: int = 65536
    val_images: int = 256                        # held out from the training set (first indices)
    val_every: int = 100
    encoder_channels_base: int = 32              # the zoo's encoder widths
    encoder_channels_max: int = 128
    use_bn: bool = True
    head_gain: float = 0.1
    seed: int = 3
    checkpoint_every: int = 100
    log_every: int = 10
    channels_last: bool = True                   # NHWC layout for E, G and F (as the encoders: encoders.py)


# Bookkeeping fields a resumed run may change.
_RESUMABLE_CHANGES = ("checkpoint_every", "log_every", "val_every", "channels_last")


def _cfg_dict(config) -> dict:
    d = config_dict(config)
    d["betas"] = list(d["betas"])
    return d


def progressive_stage(step: int, num_layers: int, start: int, every: int) -> int:
    """How many offsets (layers 1 .. k) are unlocked at `step`: 0 before `start`, then one more
    every `every` steps, at most num_layers - 1 (official e4e's schedule)."""
    if step < start:
        return 0
    return min(num_layers - 1, 1 + (step - start) // max(1, every))


def build_e4e_encoder(generator: nn.Module, config: E4EConfig) -> E4EEncoder:
    """An e4e encoder matching `generator` (W+ shape, average code), initialised from config.seed
    (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        encoder = E4EEncoder(generator.resolution, generator.w_space_dim,
                             encoder_channels_base=config.encoder_channels_base,
                             encoder_channels_max=config.encoder_channels_max,
                             use_bn=config.use_bn, head_gain=config.head_gain)
    if encoder.num_layers != generator.num_layers:
        raise ValueError(f"encoder has {encoder.num_layers} layers, generator {generator.num_layers}")
    encoder.set_latent_avg(mean_code(generator, seed=config.seed).cpu())
    return encoder


def resolve_lambda_vgg(config, generator, perceptual, images, train_indices: range,
                       work_dir: Path) -> tuple[float, Optional[dict]]:
    """config.lambda_vgg, or (None) the domain-guided encoder's calibration on training images,
    cached in work_dir/lambda_calibration.json. Returns (lambda, calibration or None)."""
    if config.lambda_vgg is not None:
        return float(config.lambda_vgg), None
    path = work_dir / "lambda_calibration.json"
    if path.exists():
        cal = json.loads(path.read_text())
    else:
        idx = list(train_indices)[:256]
        cal = calibrate_lambda_perceptual(generator, perceptual, images.load(idx),
                                          seed=config.seed, ratio=config.perceptual_to_pixel_ratio)
        path.write_text(json.dumps(cal, indent=1))
    return float(cal["lambda_vgg"]), cal


@torch.no_grad()
def validation_mse(encode, generator: nn.Module, images: torch.Tensor, batch_size: int = 64
                   ) -> float:
    """Mean over images of mean((G.synthesis(encode(x)) - x)^2); images [N, 3, R, R]."""
    total, n = 0.0, 0
    for x in images.split(batch_size):
        rec = generator.synthesis(encode(x))
        total += (rec - x).pow(2).flatten(1).mean(1).sum().item()
        n += x.shape[0]
    return total / max(n, 1)


@torch.no_grad()
def latent_discriminator_accuracy(disc: nn.Module, codes: torch.Tensor, real_codes: torch.Tensor
                                  ) -> dict:
    """Accuracy of D_w on encoder codes [N, L, D] (every layer's w, correct = called fake) and on
    mapped codes [M, L, D] (correct = called real); `balanced` is their mean (0.5: cannot tell)."""
    was = disc.training
    disc.eval()
    fake = (disc(codes.reshape(-1, codes.shape[-1])) < 0).float().mean().item()
    real = (disc(real_codes.reshape(-1, real_codes.shape[-1])) > 0).float().mean().item()
    disc.train(was)
    return {"on_encoder_codes": round(fake, 4), "on_mapped_codes": round(real, 4),
            "balanced": round((fake + real) / 2, 4), "n_codes": int(codes.shape[0]),
            "n_real": int(real_codes.shape[0])}


def train_e4e_encoder(generator: nn.Module, perceptual: nn.Module, images, config: E4EConfig,
                      work_dir: str | Path, device: str | torch.device = "cpu",
                      val_images: Optional[torch.Tensor] = None, show_progress: bool = True,
                      ) -> tuple[E4EEncoder, LatentDiscriminator, dict]:
    """Train e4e on real images; resume from `work_dir/checkpoint.pt` if present.

    generator: frozen StyleGAN generator (not modified); perceptual: F (frozen); images: an ImageSet
    (or anything with `load(indices)` and `len`) of real training images; val_images: [N, 3, R, R]
    for the validation curve, or None to hold out the first `config.val_images` of `images`.
    Returns (encoder in eval mode with every offset unlocked as trained, D_w, summary dict).
    """
    check_positive(steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                   r1_interval=config.r1_interval, progressive_step_every=config.progressive_step_every)
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

    cfg_dict = _cfg_dict(config)
    encoder = build_e4e_encoder(generator, config).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 1)
        disc = LatentDiscriminator(generator.w_space_dim, config.w_disc_layers).to(device)
    opt_e = torch.optim.Adam([p for p in encoder.parameters() if p.requires_grad],
                             lr=config.lr, betas=tuple(config.betas))
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr * config.w_disc_lr_ratio,
                             betas=tuple(config.betas))
    start, previous = 0, 0.0
    state = load_checkpoint(work_dir)
    if state is not None:
        check_resume_config(state["config"], cfg_dict, ignore=_RESUMABLE_CHANGES)
        encoder.load_state_dict(state["encoder"])
        disc.load_state_dict(state["discriminator"])
        opt_e.load_state_dict(state["opt_e"])
        opt_d.load_state_dict(state["opt_d"])
        start, previous = int(state["step"]), float(state["seconds"])
    resume = start if state is not None else None
    log = IntervalLog(work_dir / "log.jsonl", config.log_every, resume)
    val_log = LossLog(work_dir / "val.jsonl", resume_step=resume)
    clock = Stopwatch(previous)
    L = generator.num_layers

    def save(step: int) -> None:
        save_checkpoint(work_dir, {"encoder": encoder.state_dict(), "discriminator": disc.state_dict(),
                                   "opt_e": opt_e.state_dict(), "opt_d": opt_d.state_dict(),
                                   "step": step, "seconds": clock.total(), "config": cfg_dict})

    def validate(step: int) -> float:
        encoder.eval()
        mse = validation_mse(encoder, generator, val_x)
        encoder.train()
        val_log.write(step=step, val_mse=mse, num_unlocked=int(encoder.num_unlocked),
                      n_images=int(val_x.shape[0]), seconds=round(clock.total(), 2))
        return mse

    bar = progress(config.steps, start, "e4e encoder", unit="step", enabled=show_progress)
    if config.channels_last:  # the trained encoder converted for good (the context restores frozen nets)
        encoder.to(memory_format=torch.channels_last)
    with frozen(generator, perceptual), channels_last(generator, perceptual, enabled=config.channels_last):
        encoder.train()
        disc.train()
        if start == 0:
            encoder.set_progressive_stage(0)
            validate(0)
        for step in range(start, config.steps):
            rng = step_generator(config.seed, step)
            x = real_batch(images, train_idx, config.batch_size, rng, config.mirror_augment, device)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            real_w = mapping_codes(generator, config.batch_size, rng).to(device)
            k = progressive_stage(step, L, config.progressive_start, config.progressive_step_every)
            encoder.set_progressive_stage(k)
            lr = lr_at(config.lr, step, config.steps, config.lr_decay_rate, config.lr_decay_fraction)
            set_lr(opt_e, lr)
            set_lr(opt_d, lr * config.w_disc_lr_ratio)

            # Encoder step (D_w fixed).
            disc.requires_grad_(False)
            w0, deltas = encoder.forward_parts(x)
            wp = encoder.codes_from_parts(w0, deltas)
            rec = generator.synthesis(wp)
            loss_pix = F.mse_loss(rec, x)
            with torch.no_grad():
                feat_x = perceptual(x)
            loss_feat = F.mse_loss(perceptual(rec), feat_x)
            if k > 0:
                loss_delta = torch.linalg.vector_norm(deltas[:, 1:k + 1], ord=config.delta_norm,
                                                      dim=2).mean(0).sum()
            else:
                loss_delta = wp.new_zeros(())
            used = wp[:, :k + 1].reshape(-1, wp.shape[-1])
            loss_adv = F.softplus(-disc(used)).mean()
            loss_e = (config.lambda_pixel * loss_pix + lambda_vgg * loss_feat
                      + config.delta_norm_lambda * loss_delta + config.w_disc_lambda * loss_adv)
            opt_e.zero_grad(set_to_none=True)
            loss_e.backward()
            opt_e.step()

            # Latent discriminator step, on the same layers.
            disc.requires_grad_(True)
            do_r1 = config.r1_gamma > 0 and step % config.r1_interval == 0
            real = real_w[:, :k + 1].reshape(-1, wp.shape[-1]).detach().requires_grad_(do_r1)
            real_logits = disc(real)
            fake_logits = disc(used.detach())
            loss_d_real = F.softplus(-real_logits).mean()
            loss_d_fake = F.softplus(fake_logits).mean()
            loss_d = loss_d_real + loss_d_fake
            r1 = None
            if do_r1:
                (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
                r1 = grad.pow(2).sum(1).mean()
                loss_d = loss_d + 0.5 * config.r1_gamma * config.r1_interval * r1
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            done = step + 1
            row = log.add(done, {"loss_pix": loss_pix.item(), "loss_feat": loss_feat.item(),
                                 "loss_delta": loss_delta.item(), "loss_adv": loss_adv.item(),
                                 "loss_e": loss_e.item(), "loss_d_real": loss_d_real.item(),
                                 "loss_d_fake": loss_d_fake.item(),
                                 "r1": r1.item() if r1 is not None else None},
                          num_unlocked=k, lr=lr, seconds=round(clock.total(), 2))
            if row is not None:
                bar.set_postfix(pix=f"{row['loss_pix']:.4f}", k=k, adv=f"{row['loss_adv']:.3f}")
            bar.update(1)
            if done % config.val_every == 0 or done == config.steps:
                validate(done)
            if done % config.checkpoint_every == 0 or done == config.steps:
                save(done)
    bar.close()
    encoder.to(memory_format=torch.contiguous_format)
    encoder.set_progressive_stage(progressive_stage(config.steps - 1, L, config.progressive_start,
                                                    config.progressive_step_every))
    encoder.eval()
    disc.eval()
    with torch.no_grad():
        codes = torch.cat([encoder(c) for c in val_x.split(64)])
        real_codes = mapping_codes(generator, val_x.shape[0],
                                   torch.Generator().manual_seed(config.seed + 7)).to(device)
    accuracy = latent_discriminator_accuracy(disc, codes, real_codes)
    val_rows = val_log.rows()
    summary = {"steps": config.steps, "wall_time_s": round(clock.total(), 1),
               "images_per_second": round(config.steps * config.batch_size / max(clock.total(), 1e-9), 2),
               "lambda_vgg": lambda_vgg, "lambda_calibration": calibration,
               "num_unlocked": int(encoder.num_unlocked),
               "val_mse": val_rows[-1]["val_mse"] if val_rows else None,
               "val_curve": [(r["step"], round(r["val_mse"], 6)) for r in val_rows],
               "latent_discriminator_accuracy": accuracy,
               "identity_loss": "none: no identity network exists for this domain",
               "final": log.last(), "config": cfg_dict}
    return encoder, disc, summary
