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

Both train on the one training loop (`idinvert.training.loop`) as tasks (`ConventionalTask`, `DomainTask`,
which `bench train` runs too): resumable from a checkpoint written atomically every `checkpoint_every` steps
(its keys as they have always been: `encoder`, `opt` / `opt_e`, `discriminator`, `opt_d`, `best_val`);
batches are a pure function of (seed, step), so a resumed run sees exactly the batches an uninterrupted one
would. Losses go to `log.jsonl`, the validation curve (kimg, val_mse) to `val_curve.jsonl`.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from idinvert.inversion import channels_last, frozen
from idinvert.nets.stylegan_encoder import StyleGANEncoder
from idinvert.training.common import config_dict
from idinvert.training.loop import LoopSettings, Records, StepContext, TaskBase, train
from idinvert.training.loop_utils import lr_at, set_lr

__all__ = [
    "ConventionalEncoderConfig", "DomainEncoderConfig", "EncoderSchedule", "EncoderWidths", "PlateauRun",
    "PAPER_PERCEPTUAL_TO_PIXEL_RATIO",
    "build_encoder", "sample_training_codes", "train_conventional_encoder", "train_domain_encoder",
    "calibrate_lambda_perceptual", "reconstruction_mse", "time_encoder", "r1_gamma_for_resolution",
    "EncoderTask", "ConventionalTask", "RealImageTask", "DomainTask", "real_shard", "logistic_d_step",
    "recorded_settings", "train_zoo_task", "resolve_lambda_vgg",
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

# A config is made of settings groups, each declared once. Its bases are listed last-first: a dataclass
# takes its bases' fields in reverse MRO order, and the cards print a config's settings in field order
# (the schedule, the encoder's own settings, then its widths, seed and bookkeeping), as they always have.

@dataclass
class EncoderSchedule:
    """Adam and the official lr schedule (x lr_decay_rate every lr_decay_fraction of training, applied
    continuously): the first settings of the zoo's encoder configs."""
    steps: int                        # the length of training (a cap where a validation plateau stops it)
    batch_size: int = 32
    # Official: 1e-4 for ~110k steps of batch 128 on 8 GPUs. With ~3k steps a larger step is needed;
    # a 400-step pilot on an intermediate G reached W+ loss 0.80 at 1e-3 vs 1.00 at 3e-4.
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    lr_decay_rate: float = 0.8        # official: x0.8 per quarter of training, continuous
    lr_decay_fraction: float = 0.25


@dataclass
class EncoderWidths:
    """The zoo's encoder widths (StyleGANEncoder, E4EEncoder and ReStyleEncoder all take these)."""
    encoder_channels_base: int = 32
    encoder_channels_max: int = 128
    use_bn: bool = True


@dataclass
class PlateauRun(EncoderWidths):
    """Widths, seed and bookkeeping of the conventional and the domain-guided encoder, which stop at a
    validation plateau: the last settings of their configs."""
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    val_every_kimg: float = 10.0          # validation MSE on held-out real images this often
    plateau_window_kimg: float = 50.0     # stop when it improved by less than
    plateau_min_improvement: float = 0.01  # this fraction over the last window (issue 12)
    max_minutes: float | None = None      # stop (checkpointed, exported, said so) after this long in one sitting
    channels_last: bool = True            # NHWC layout: 0.85x wall, 0.76x CPU time per step (encoder_speed)


@dataclass
class _ConventionalSampling:
    """How the conventional encoder's training codes are drawn."""
    style_mixing_prob: float = 0.5    # else one w broadcast to all layers
    truncate: bool = False            # regress raw W+ codes (the paper uses no truncation)


@dataclass
class ConventionalEncoderConfig(PlateauRun, _ConventionalSampling, EncoderSchedule):
    """Latent-regression encoder. Defaults: the shipped synthetic-faces recipe (measured: 524 s on the
    2-core dev machine, 1 thread, alongside the domain-guided run; 996 s when it was busier)."""
    steps: int = 20000                # a cap: with validation images, training stops at the plateau
    seed: int = 1
    checkpoint_every: int = 250
    log_every: int = 25


@dataclass
class _DomainGuidance:
    """The domain-guided encoder's loss terms, its discriminator and its real images."""
    lambda_vgg: float | None = None   # None: calibrate_lambda_perceptual at the start (recorded)
    perceptual_to_pixel_ratio: float = PAPER_PERCEPTUAL_TO_PIXEL_RATIO
    lambda_adv: float = 0.08          # official train_encoder.py (the paper text says 0.1)
    r1_gamma: float | None = None     # None: r1_gamma_for_resolution(R)
    r1_interval: int = 4              # lazy R1 (StyleGAN2): every k-th D step, weighted by k
    mirror_augment: bool = True       # official default
    train_images: int = 65536         # size of the real training split drawn from


@dataclass
class DomainEncoderConfig(PlateauRun, _DomainGuidance, EncoderSchedule):
    """Domain-guided encoder (E and D share the schedule). Defaults: the shipped synthetic-faces recipe
    (measured: 581 s on the 2-core dev machine, 1 thread, alongside the conventional run; 1038 s when it
    was busier)."""
    steps: int = 15000                # a cap: with validation images, training stops at the plateau
    seed: int = 2


def build_encoder(generator: nn.Module, config: PlateauRun) -> StyleGANEncoder:
    """An encoder whose W+ shape matches `generator`, with the config's width, initialised from
    `config.seed` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return StyleGANEncoder(resolution=generator.resolution, w_space_dim=generator.w_space_dim,
                               encoder_channels_base=config.encoder_channels_base,
                               encoder_channels_max=config.encoder_channels_max,
                               use_bn=config.use_bn)


# ------------------------------------------------------------------------------------------------
# The training tasks (idinvert.training.loop): the zoo's trainers and `bench train` both run these
# ------------------------------------------------------------------------------------------------

# Fields of the zoo's configs that the loop's settings replace (recorded beside these) or that `bench train`
# sets itself (lambda_vgg: from F); left out of bench train's record of a part's settings.
_ZOO_LOOP_FIELDS = ("checkpoint_every", "log_every", "val_every", "val_every_kimg", "plateau_window_kimg",
                    "plateau_min_improvement", "max_minutes", "channels_last", "train_images", "val_images",
                    "lambda_vgg", "perceptual_to_pixel_ratio", "threads", "eval_images", "domain", "resolution")


def recorded_settings(config) -> dict:
    """A part's config as bench train records it (JSON-able; the loop's own settings left out)."""
    d = config_dict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items() if k not in _ZOO_LOOP_FIELDS}


def _config_dict(config) -> dict:
    d = config_dict(config)
    d["betas"] = list(d["betas"])
    return d


# Fields that may differ between a zoo run and its resumption (bookkeeping only).
_RESUMABLE_CHANGES = ("checkpoint_every", "log_every", "max_minutes", "channels_last")


class EncoderTask(TaskBase):
    """What the encoder tasks share: G frozen, E and its Adam, the official lr schedule, validation MSE on
    held-out images `val_x`, export through `exporter(task, summary)` (bench train's; the zoo's trainers
    return the encoder instead). `zoo=True`: the embedded zoo's trainer -- its work dirs' checkpoint names,
    its config's resume rule, NHWC batches when `config.channels_last`."""

    name = "encoder"
    zoo_records = Records("val_curve.jsonl", "val_mse", "MSE", "best_val", flat=True)
    zoo_resumable = _RESUMABLE_CHANGES
    critic_name: Optional[str] = None   # the adversary trained beside E (self.disc, self.opt_d), if any

    def __init__(self, generator: nn.Module, config, steps: int, val_x: Optional[torch.Tensor],
                 out_dir: Optional[Path], device: torch.device, card: dict, zoo: bool = False,
                 exporter: Optional[Callable] = None):
        self.generator, self.config, self.steps, self.device, self.card = generator, config, steps, device, card
        self.val_x = val_x.to(device) if val_x is not None else None
        self.out_dir, self.exporter, self.zoo = out_dir, exporter, zoo
        self.records = self.zoo_records if zoo else Records()
        self.channels_last = zoo and getattr(config, "channels_last", False)
        self.export_module = self.build().to(device).train()
        # Adam's defaults where a config has none (the classifier's, as the zoo trains it)
        self.opt = torch.optim.Adam([p for p in self.export_module.parameters() if p.requires_grad],
                                    lr=config.lr, betas=tuple(getattr(config, "betas", (0.9, 0.999))),
                                    weight_decay=getattr(config, "weight_decay", 0.0))

    def build(self) -> nn.Module:
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        critic = {} if self.critic_name is None else {"discriminator" if self.zoo else self.critic_name: self.disc}
        return {"encoder": self.export_module, **critic}

    def optimizers(self) -> dict:
        if not self.zoo:
            return {"encoder": self.opt, **({self.critic_name: self.opt_d} if self.critic_name else {})}
        return {"opt_e": self.opt, "opt_d": self.opt_d} if self.critic_name else {"opt": self.opt}

    def settings(self) -> dict:
        return {"part": self.name, **recorded_settings(self.config),
                **{k: v for k, v in self.card.items() if k in ("lambda_vgg", "perceptual")}}

    def checkpoint_config(self, settings: LoopSettings) -> tuple[dict, tuple]:
        if self.zoo:
            return _config_dict(self.config), self.zoo_resumable
        return super().checkpoint_config(settings)

    def lr(self, step: int) -> float:
        c = self.config
        return lr_at(c.lr, step, self.steps, c.lr_decay_rate, c.lr_decay_fraction)

    def set_lr(self, step: int, ctx: StepContext, critic_ratio: float = 1.0) -> None:
        """This step's learning rate for E (and its critic, times `critic_ratio`), logged with the step."""
        lr = ctx.notes["lr"] = self.lr(step)
        set_lr(self.opt, lr)
        if self.critic_name is not None:
            set_lr(self.opt_d, lr * critic_ratio)

    def validate(self) -> float:
        return reconstruction_mse(self.export_module, self.generator, self.val_x)

    def export(self, summary: dict) -> None:
        if self.exporter is not None:
            self.exporter(self, summary)


class ConventionalTask(EncoderTask):
    """Latent regression on G's samples, plus `lambda_pixel` times the pixel MSE of G(E(x)) (bench train's
    default; the zoo's recipe has none, and then logs only the latent loss)."""
    name = "conventional"

    def __init__(self, *args, lambda_pixel: float = 1.0, **kw):
        self.lambda_pixel = lambda_pixel
        super().__init__(*args, **kw)
        self.card = {**self.card, "lambda_pixel": lambda_pixel}

    def build(self) -> nn.Module:
        return build_encoder(self.generator, self.config)

    def step(self, step: int, ctx: StepContext) -> dict:
        c, G, E = self.config, self.generator, self.export_module
        wp = sample_training_codes(G, ctx.batch_size, ctx.rng, c.style_mixing_prob, c.truncate)[ctx.shard]
        with torch.no_grad():
            x = G.synthesis(wp)
        self.set_lr(step, ctx)
        pred = E(x)
        loss_w = F.mse_loss(pred, wp)
        if self.lambda_pixel == 0:
            ctx.update(loss_w, E, self.opt)
            return {"loss_w": loss_w.item()}
        loss_pix = F.mse_loss(G.synthesis(pred), x)
        loss = loss_w + self.lambda_pixel * loss_pix
        ctx.update(loss, E, self.opt)
        return {"loss_w": loss_w.item(), "loss_pix": loss_pix.item(), "loss": loss.item()}


def real_shard(images: Callable, train_range: range, ctx: StepContext, mirror: bool, device) -> torch.Tensor:
    """This rank's shard [b, 3, R, R] of a global batch drawn (with replacement, mirrored at random) from
    the training images `train_range`; every rank draws the same global indices."""
    idx = torch.randint(train_range.start, train_range.stop, (ctx.batch_size,), generator=ctx.rng)
    flip = torch.rand(ctx.batch_size, generator=ctx.rng) < 0.5 if mirror else None
    x = images(idx[ctx.shard].tolist())
    if mirror:
        x = torch.where(flip[ctx.shard].view(-1, 1, 1, 1), x.flip(3), x)
    return x.to(device)


class RealImageTask(EncoderTask):
    """An encoder trained on real images with pixel + lambda_vgg * perceptual (F may be None: no term)."""

    def __init__(self, generator, perceptual: Optional[nn.Module], images: Callable, train_range: range,
                 lambda_vgg: float, *args, **kw):
        self.perceptual, self.images, self.train_range = perceptual, images, train_range
        self.lambda_vgg = lambda_vgg if perceptual is not None else 0.0
        super().__init__(generator, *args, **kw)

    def batch(self, ctx: StepContext) -> torch.Tensor:
        x = real_shard(self.images, self.train_range, ctx, self.config.mirror_augment, self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def reconstruction(self, x: torch.Tensor, rec: torch.Tensor, feat_x: Optional[torch.Tensor]):
        """(pixel MSE, perceptual MSE or 0) of reconstructions `rec` of `x`."""
        pix = F.mse_loss(rec, x)
        if self.perceptual is None or self.lambda_vgg == 0:
            return pix, pix.new_zeros(())
        return pix, F.mse_loss(self.perceptual(rec), feat_x)

    def features(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        if self.perceptual is None or self.lambda_vgg == 0:
            return None
        with torch.no_grad():
            return self.perceptual(x)


def logistic_d_step(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, gamma: float, interval: int,
                    do_r1: bool, ctx: StepContext, opt) -> dict:
    """D step: softplus(D(fake)) + softplus(-D(real)) + lazy R1 (x interval) on the reals."""
    disc.requires_grad_(True)
    real = real.detach().requires_grad_(do_r1)
    real_logits, fake_logits = disc(real), disc(fake.detach())
    loss_real, loss_fake = F.softplus(-real_logits).mean(), F.softplus(fake_logits).mean()
    loss = loss_real + loss_fake
    r1 = None
    if do_r1:
        (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
        r1 = grad.pow(2).sum(dim=tuple(range(1, grad.dim()))).mean()
        loss = loss + 0.5 * gamma * interval * r1
    ctx.update(loss, disc, opt)
    return {"loss_d_real": loss_real.item(), "loss_d_fake": loss_fake.item(),
            "r1": r1.item() if r1 is not None else None}


class DomainTask(RealImageTask):
    """The domain-guided encoder: pixel + perceptual + adversarial against D (a copy, trained beside E)."""
    name = "domain"
    critic_name = "discriminator"

    def __init__(self, generator, discriminator: nn.Module, *args, **kw):
        super().__init__(generator, *args, **kw)
        self.disc = copy.deepcopy(discriminator).to(self.device).train()
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=self.config.lr, betas=tuple(self.config.betas))
        c = self.config
        self.gamma = c.r1_gamma if c.r1_gamma is not None else r1_gamma_for_resolution(generator.resolution)
        self.card = {**self.card, "r1_gamma": self.gamma, "lambda_adv": c.lambda_adv}

    def build(self) -> nn.Module:
        return build_encoder(self.generator, self.config)

    def step(self, step: int, ctx: StepContext) -> dict:
        c, E, D = self.config, self.export_module, self.disc
        x = self.batch(ctx)
        self.set_lr(step, ctx)
        D.requires_grad_(False)   # a fixed critic for E's step
        rec = self.generator.synthesis(E(x))
        loss_pix, loss_feat = self.reconstruction(x, rec, self.features(x))
        loss_adv = F.softplus(-D(rec)).mean()
        loss_e = loss_pix + self.lambda_vgg * loss_feat + c.lambda_adv * loss_adv
        ctx.update(loss_e, E, self.opt)
        do_r1 = self.gamma > 0 and step % c.r1_interval == 0
        d = logistic_d_step(D, x, rec, self.gamma, c.r1_interval, do_r1, ctx, self.opt_d)
        return {"loss_pix": loss_pix.item(), "loss_feat": loss_feat.item(), "loss_adv": loss_adv.item(),
                "loss_e": loss_e.item(), **d}


def train_zoo_task(task: EncoderTask, settings: LoopSettings, work_dir: Path, frozen_nets: tuple,
                   show_progress: bool) -> dict:
    """Run a zoo encoder task on the loop: its trained networks NHWC while training when the config says so,
    `frozen_nets` frozen (and NHWC alike); afterwards the trained ones back in NCHW, in eval mode. The
    summary keeps the keys these trainers' cards have always had."""
    trained = list(task.modules().values())
    if task.channels_last:   # converted for good here; the context restores the frozen nets' layout
        for m in trained:
            m.to(memory_format=torch.channels_last)
    with frozen(*frozen_nets), channels_last(*frozen_nets, enabled=task.channels_last):
        task.export_module.train()
        summary = train(task, settings, work_dir, show_progress=show_progress)
    for m in trained:
        m.to(memory_format=torch.contiguous_format).eval()
    keep = ("steps", "images_seen", "wall_time_s", "final", "val_curve", "plateau_rule", "plateaued", "stopped",
            "exported", "complete")
    return {**{k: summary[k] for k in keep}, "config": _config_dict(task.config)}


def _plateau_settings(config, val_images: Optional[torch.Tensor]) -> LoopSettings:
    """The loop's settings of a plateau-trained zoo encoder: validation every val_every_kimg (when there are
    validation images), the plateau rule over plateau_window_kimg, the best checkpoint exported, and what
    is trained exported also when a sitting's time is up."""
    return LoopSettings(steps=config.steps, batch_size=config.batch_size, seed=config.seed,
                        checkpoint_every=config.checkpoint_every, log_every=config.log_every,
                        val_every=config.val_every_kimg if val_images is not None else 0,
                        plateau_window=config.plateau_window_kimg,
                        plateau_min_improvement=config.plateau_min_improvement, max_minutes=config.max_minutes,
                        position="kimg", validate_last=False, export_incomplete=True)

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
    [N, 3, R, R]; with them, training stops at the validation plateau and exports the best-validation
    weights, else it runs `config.steps`. Returns (encoder in eval mode, summary dict with steps,
    wall_time_s, final losses, the validation curve).
    """
    device = torch.device(device)
    generator = generator.to(device)
    task = ConventionalTask(generator, config, config.steps, val_images, None, device, {}, zoo=True,
                            lambda_pixel=0.0)
    summary = train_zoo_task(task, _plateau_settings(config, val_images), Path(work_dir), (generator,),
                             show_progress)
    return task.export_module, summary



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


def resolve_lambda_vgg(config, generator, perceptual, images, train_indices: range,
                       work_dir: Path) -> tuple[float, Optional[dict]]:
    """config.lambda_vgg, or (None) calibrate_lambda_perceptual on the first 256 training images, kept in
    work_dir/lambda_calibration.json (a resumed run uses the same lambda). -> (lambda, calibration or None)."""
    if config.lambda_vgg is not None:
        return float(config.lambda_vgg), None
    path = Path(work_dir) / "lambda_calibration.json"
    if path.exists():
        cal = json.loads(path.read_text())
    else:
        cal = calibrate_lambda_perceptual(generator, perceptual, images.load(list(train_indices)[:256]),
                                          seed=config.seed, ratio=config.perceptual_to_pixel_ratio)
        path.write_text(json.dumps(cal, indent=1))
    return float(cal["lambda_vgg"]), cal


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
    work_dir, device = Path(work_dir), torch.device(device)
    work_dir.mkdir(parents=True, exist_ok=True)
    generator, perceptual = generator.to(device), perceptual.to(device)
    n_images = min(len(images), config.train_images)
    if n_images < config.batch_size:
        raise ValueError(f"need at least {config.batch_size} training images, got {n_images}")
    lambda_vgg, calibration = resolve_lambda_vgg(config, generator, perceptual, images, range(0, n_images),
                                                 work_dir)
    task = DomainTask(generator, discriminator, perceptual, images.load, range(0, n_images), lambda_vgg, config,
                      config.steps, val_images, None, device, {}, zoo=True)
    summary = train_zoo_task(task, _plateau_settings(config, val_images), work_dir, (generator, perceptual),
                             show_progress)
    summary.update(lambda_vgg=lambda_vgg, lambda_calibration=calibration, r1_gamma=task.gamma)
    return task.export_module, task.disc, summary



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
