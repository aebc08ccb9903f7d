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

Trained on the one training loop (`idinvert.training.loop`) as an `E4ETask` (which `bench train` runs too);
resumable (checkpoint every `checkpoint_every` steps; batches are a function of (seed, step)).
Logs: <work_dir>/log.jsonl (training losses), <work_dir>/val.jsonl (validation MSE of G(E(x)) on a
held-out set, with the progressive stage). The summary reports the latent discriminator's final
accuracy on e4e's codes of the validation images (fraction called fake) and on mapped codes (called
real): a discriminator that cannot tell them apart means the codes sit where G's mapping puts codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from idinvert.codes import mapping_codes, mean_code
from idinvert.nets.e4e_encoder import E4EEncoder, LatentDiscriminator
from idinvert.training.encoders import (PAPER_PERCEPTUAL_TO_PIXEL_RATIO, EncoderSchedule, EncoderWidths,
                                        RealImageTask, logistic_d_step, resolve_lambda_vgg, train_zoo_task)
from idinvert.training.loop import LoopSettings, Records, StepContext
from idinvert.training.loop_utils import check_positive, split_holdout

__all__ = ["E4EConfig", "LaterEncoderRun", "build_e4e_encoder", "progressive_stage", "train_e4e_encoder",
           "E4ETask", "latent_discriminator_accuracy", "resolve_lambda_vgg", "validation_mse", "LATER_RECORDS",
           "zoo_real_start", "train_later_encoder", "later_settings", "later_summary", "build_average_encoder"]


@dataclass
class LaterEncoderRun(EncoderWidths):
    """Widths, head gain, seed and bookkeeping of e4e and ReStyle: the last settings of their configs, which
    list their bases last-first as the other encoders' configs do (encoders.py)."""
    head_gain: float = 0.1
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    channels_last: bool = True                   # NHWC layout for E, G and F (as the encoders: encoders.py)


@dataclass
class _E4ETraining:
    """e4e's loss terms, progressive schedule, latent discriminator and data."""
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


@dataclass
class E4EConfig(LaterEncoderRun, _E4ETraining, EncoderSchedule):
    """e4e training settings (sources in the module docstring)."""
    steps: int = 1500
    batch_size: int = 16
    seed: int = 3


# Bookkeeping fields a resumed run may change.
_RESUMABLE_CHANGES = ("checkpoint_every", "log_every", "val_every", "channels_last")


def progressive_stage(step: int, num_layers: int, start: int, every: int) -> int:
    """How many offsets (layers 1 .. k) are unlocked at `step`: 0 before `start`, then one more
    every `every` steps, at most num_layers - 1 (official e4e's schedule)."""
    if step < start:
        return 0
    return min(num_layers - 1, 1 + (step - start) // max(1, every))


def build_average_encoder(cls, generator: nn.Module, config: LaterEncoderRun) -> nn.Module:
    """An encoder of class `cls` (E4EEncoder, ReStyleEncoder) matching `generator` (W+ shape, average
    code), with the config's widths, initialised from config.seed (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        encoder = cls(generator.resolution, generator.w_space_dim,
                      encoder_channels_base=config.encoder_channels_base,
                      encoder_channels_max=config.encoder_channels_max,
                      use_bn=config.use_bn, head_gain=config.head_gain)
    if encoder.num_layers != generator.num_layers:
        raise ValueError(f"encoder has {encoder.num_layers} layers, generator {generator.num_layers}")
    encoder.set_latent_avg(mean_code(generator, seed=config.seed).cpu())
    return encoder


def build_e4e_encoder(generator: nn.Module, config: E4EConfig) -> E4EEncoder:
    """An e4e encoder matching `generator` (see build_average_encoder)."""
    return build_average_encoder(E4EEncoder, generator, config)


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


# The later encoders' zoo work dirs: val.jsonl rows (step, val_mse), no best-validation record needed.
LATER_RECORDS = Records("val.jsonl", "val_mse", "MSE", "best", flat=True)


class E4ETask(RealImageTask):
    """e4e: progressive offsets over the average code, against the latent discriminator D_w."""
    name = "e4e"
    critic_name = "latent_discriminator"
    zoo_records, zoo_resumable = LATER_RECORDS, _RESUMABLE_CHANGES

    def __init__(self, generator, *args, **kw):
        super().__init__(generator, *args, **kw)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + 1)
            self.disc = LatentDiscriminator(generator.w_space_dim, self.config.w_disc_layers).to(self.device)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=self.config.lr * self.config.w_disc_lr_ratio,
                                      betas=tuple(self.config.betas))
        self.export_module.set_progressive_stage(0)   # each step sets its own; validation before the first

    def build(self) -> nn.Module:
        return build_e4e_encoder(self.generator, self.config)

    def stage(self, step: int) -> int:
        c = self.config
        return progressive_stage(step, self.generator.num_layers, c.progressive_start, c.progressive_step_every)

    def validate(self) -> tuple[float, dict]:
        E = self.export_module
        was = E.training
        E.eval()
        mse = validation_mse(E, self.generator, self.val_x)
        E.train(was)
        return mse, {"num_unlocked": int(E.num_unlocked), "n_images": int(self.val_x.shape[0])}

    def step(self, step: int, ctx: StepContext) -> dict:
        c, E, D = self.config, self.export_module, self.disc
        x = self.batch(ctx)
        real_w = mapping_codes(self.generator, ctx.batch_size, ctx.rng).to(self.device)[ctx.shard]
        k = ctx.notes["num_unlocked"] = self.stage(step)
        E.set_progressive_stage(k)
        self.set_lr(step, ctx, c.w_disc_lr_ratio)
        D.requires_grad_(False)   # a fixed critic for E's step
        w0, deltas = E.forward_parts(x)
        wp = E.codes_from_parts(w0, deltas)
        loss_pix, loss_feat = self.reconstruction(x, self.generator.synthesis(wp), self.features(x))
        loss_delta = (torch.linalg.vector_norm(deltas[:, 1:k + 1], ord=c.delta_norm, dim=2).mean(0).sum()
                      if k > 0 else wp.new_zeros(()))
        used = wp[:, :k + 1].reshape(-1, wp.shape[-1])
        loss_adv = F.softplus(-D(used)).mean()
        loss_e = (c.lambda_pixel * loss_pix + self.lambda_vgg * loss_feat + c.delta_norm_lambda * loss_delta
                  + c.w_disc_lambda * loss_adv)
        ctx.update(loss_e, E, self.opt)
        real = real_w[:, :k + 1].reshape(-1, wp.shape[-1])   # D_w sees mapped codes at the same layers
        do_r1 = c.r1_gamma > 0 and step % c.r1_interval == 0
        d = logistic_d_step(D, real, used, c.r1_gamma, c.r1_interval, do_r1, ctx, self.opt_d)
        return {"loss_pix": loss_pix.item(), "loss_feat": loss_feat.item(), "loss_delta": loss_delta.item(),
                "loss_adv": loss_adv.item(), "loss_e": loss_e.item(), **d}

    def export(self, summary: dict) -> None:
        self.export_module.set_progressive_stage(self.stage(self.steps - 1))
        super().export(summary)


def zoo_real_start(config, generator: nn.Module, perceptual: nn.Module, images, work_dir: Path, device,
                   val_images: Optional[torch.Tensor]) -> dict:
    """What the zoo's e4e and ReStyle trainers set up alike: the training indices (the first
    `config.val_images` held out when no `val_images` are given), the validation images on the device, and
    lambda_vgg (given, or calibrated as for the domain-guided encoder)."""
    n_images = min(len(images), config.train_images)
    holdout = 0 if val_images is not None else config.val_images
    val_idx, train_idx = split_holdout(n_images, holdout, config.batch_size)
    val_x = (val_images if val_images is not None else images.load(list(val_idx))).to(device)
    lambda_vgg, calibration = resolve_lambda_vgg(config, generator, perceptual, images, train_idx, work_dir)
    return {"train_range": train_idx, "val_x": val_x, "lambda_vgg": lambda_vgg, "calibration": calibration}


def train_later_encoder(task_cls, generator: nn.Module, perceptual: nn.Module, images, config, work_dir, device,
                        val_images: Optional[torch.Tensor], show_progress: bool) -> tuple:
    """Build the zoo's e4e or ReStyle task (`task_cls`) and train it on the loop: -> (task, the loop's summary
    in the zoo's fields, what `zoo_real_start` set up)."""
    work_dir, device = Path(work_dir), torch.device(device)
    work_dir.mkdir(parents=True, exist_ok=True)
    generator, perceptual = generator.to(device), perceptual.to(device)
    start = zoo_real_start(config, generator, perceptual, images, work_dir, device, val_images)
    task = task_cls(generator, perceptual, images.load, start["train_range"], start["lambda_vgg"], config,
                    config.steps, start["val_x"], None, device, {}, zoo=True)
    summary = train_zoo_task(task, later_settings(config), work_dir, (generator, perceptual), show_progress)
    return task, summary, start


def later_settings(config) -> LoopSettings:
    """The loop's settings of the zoo's e4e and ReStyle trainers: validation before the first step, every
    `val_every` steps and after the last; the last step's weights exported (no plateau rule)."""
    return LoopSettings(steps=config.steps, batch_size=config.batch_size, seed=config.seed,
                        checkpoint_every=config.checkpoint_every, log_every=config.log_every,
                        val_every=config.val_every, validate_first=True, export_best=False)


def later_summary(summary: dict, config, start: dict) -> dict:
    """The card fields the e4e and ReStyle trainers share (speed, lambda, the validation curve)."""
    rows = summary["val_curve"]
    return {"steps": config.steps, "wall_time_s": summary["wall_time_s"],
            "images_per_second": round(config.steps * config.batch_size / max(summary["wall_time_s"], 1e-9), 2),
            "lambda_vgg": start["lambda_vgg"], "lambda_calibration": start["calibration"],
            "val_mse": rows[-1]["val_mse"] if rows else None,
            "val_curve": [(r["step"], round(r["val_mse"], 6)) for r in rows],
            "identity_loss": "none: no identity network exists for this domain",
            "final": summary["final"], "config": summary["config"]}


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
    task, summary, start = train_later_encoder(E4ETask, generator, perceptual, images, config, work_dir, device,
                                               val_images, show_progress)
    encoder, disc, val_x = task.export_module, task.disc, start["val_x"]
    generator, device = task.generator, task.device
    with torch.no_grad():
        codes = torch.cat([encoder(c) for c in val_x.split(64)])
        real_codes = mapping_codes(generator, val_x.shape[0],
                                   torch.Generator().manual_seed(config.seed + 7)).to(device)
    return encoder, disc, {**later_summary(summary, config, start), "num_unlocked": int(encoder.num_unlocked),
                           "latent_discriminator_accuracy": latent_discriminator_accuracy(disc, codes, real_codes)}
