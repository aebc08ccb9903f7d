"""The parts `bench train` trains for a user's generator, each a task of `idinvert.training.loop`.

Each task holds its networks and optimisers and supplies one step on this rank's shard of the global batch
(`StepContext.shard`); the losses and their settings are the embedded zoo's (the config dataclasses of
`encoders`, `e4e` and `restyle` are reused as they are), the generator is any of ours (StyleGAN, or a
rosinality StyleGAN2 through `StyleGAN2Generator`), and the perceptual network F may be absent (then its
term is off, and the card says so).

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

import copy
import dataclasses
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from idinvert.codes import expand_code, mapping_codes
from idinvert.training.common import config_dict, export_fp16_state_dict
from idinvert.training.e4e import E4EConfig, build_e4e_encoder, progressive_stage, validation_mse
from idinvert.training.encoders import (ConventionalEncoderConfig, DomainEncoderConfig, build_encoder,
                                        r1_gamma_for_resolution, reconstruction_mse, sample_training_codes)
from idinvert.training.loop import StepContext
from idinvert.training.loop_utils import lr_at, set_lr
from idinvert.training.classifier import ClassifierConfig
from idinvert.training.restyle import ReStyleConfig, build_restyle_encoder, restyle_validation_mse

__all__ = ["PART_FILES", "EncoderTask", "ConventionalTask", "DomainTask", "E4ETask", "ReStyleTask",
           "TASKS", "write_part"]

# part -> (bundle field, weights file)
PART_FILES = {
    "conventional": ("conventional_encoder", "conventional_encoder.pt"),
    "domain": ("encoder", "encoder.pt"),
    "e4e": ("e4e_encoder", "e4e_encoder.pt"),
    "restyle": ("restyle_encoder", "restyle_encoder.pt"),
    "classifier": ("classifier", "classifier.pt"),
}


def write_part(module: nn.Module, path: Path, card: dict) -> Path:
    """<path> (fp16 state dict) and <path>.json ({"model", "constructor", **card}), both atomic."""
    full = {"model": type(module).__name__, "constructor": dict(module.config), **card}
    return export_fp16_state_dict(module, path, full)


# Fields of the zoo's configs that its own loops read and `idinvert.training.loop` replaces (its settings are
# recorded beside these), or that `bench train` sets itself (lambda_vgg: from F); left out of the record.
_ZOO_LOOP_FIELDS = ("checkpoint_every", "log_every", "val_every", "val_every_kimg", "plateau_window_kimg",
                    "plateau_min_improvement", "max_minutes", "channels_last", "train_images", "val_images",
                    "lambda_vgg", "perceptual_to_pixel_ratio", "threads", "eval_images", "domain", "resolution")


def _jsonable(config) -> dict:
    d = config_dict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items() if k not in _ZOO_LOOP_FIELDS}


class EncoderTask:
    """What the four encoder tasks share: G frozen, E and its Adam, the official lr schedule, validation
    MSE on held-out images, export of E with a card. `images(idx)` loads folder images [n, 3, R, R]."""

    name = "encoder"

    def __init__(self, generator: nn.Module, config, steps: int, val_x: torch.Tensor, out_dir: Path,
                 device: torch.device, card: dict):
        self.generator, self.config, self.steps = generator, config, steps
        self.val_x, self.out_dir, self.device, self.card = val_x.to(device), Path(out_dir), device, card
        self.export_module = self.build().to(device).train()
        # Adam's defaults where a config has none (the classifier's, as the zoo trains it)
        self.opt = torch.optim.Adam([p for p in self.export_module.parameters() if p.requires_grad],
                                    lr=config.lr, betas=tuple(getattr(config, "betas", (0.9, 0.999))),
                                    weight_decay=getattr(config, "weight_decay", 0.0))

    def build(self) -> nn.Module:
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.export_module}

    def optimizers(self) -> dict:
        return {"encoder": self.opt}

    def settings(self) -> dict:
        return {"part": self.name, **_jsonable(self.config), **{k: v for k, v in self.card.items()
                                                                 if k in ("lambda_vgg", "perceptual")}}

    def lr(self, step: int) -> float:
        c = self.config
        return lr_at(c.lr, step, self.steps, c.lr_decay_rate, c.lr_decay_fraction)

    def validate(self) -> float:
        return reconstruction_mse(self.export_module, self.generator, self.val_x)

    def export(self, summary: dict) -> None:
        field, filename = PART_FILES[self.name]
        self.export_module.eval()
        write_part(self.export_module, self.out_dir / filename,
                   {"part": field, "settings": _jsonable(self.config), **self.card, "training": summary})


class ConventionalTask(EncoderTask):
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
        set_lr(self.opt, self.lr(step))
        pred = E(x)
        loss_w = F.mse_loss(pred, wp)
        loss_pix = F.mse_loss(G.synthesis(pred), x) if self.lambda_pixel > 0 else pred.new_zeros(())
        loss = loss_w + self.lambda_pixel * loss_pix
        ctx.update(loss, E, self.opt)
        return {"loss_w": loss_w.item(), "loss_pix": loss_pix.item(), "loss": loss.item()}


def real_shard(images: Callable, n_train: int, offset: int, ctx: StepContext, mirror: bool,
               device) -> torch.Tensor:
    """This rank's shard [b, 3, R, R] of a global batch drawn (with replacement, mirrored at random) from
    the training images `offset .. offset + n_train`; every rank draws the same global indices."""
    idx = torch.randint(offset, offset + n_train, (ctx.batch_size,), generator=ctx.rng)
    flip = torch.rand(ctx.batch_size, generator=ctx.rng) < 0.5
    x = images(idx[ctx.shard].tolist())
    if mirror:
        x = torch.where(flip[ctx.shard].view(-1, 1, 1, 1), x.flip(3), x)
    return x.to(device)


class _RealTask(EncoderTask):
    """An encoder trained on the folder's images with pixel + lambda_vgg * perceptual (F may be None)."""

    def __init__(self, generator, perceptual: Optional[nn.Module], images: Callable, train_range: range,
                 lambda_vgg: float, *args, **kw):
        self.perceptual, self.images, self.train_range = perceptual, images, train_range
        self.lambda_vgg = lambda_vgg if perceptual is not None else 0.0
        super().__init__(generator, *args, **kw)

    critic_name: Optional[str] = None   # the adversary trained beside E (self.disc, self.opt_d), if any

    def modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.export_module, **({self.critic_name: self.disc} if self.critic_name else {})}

    def optimizers(self) -> dict:
        return {"encoder": self.opt, **({self.critic_name: self.opt_d} if self.critic_name else {})}

    def batch(self, ctx: StepContext) -> torch.Tensor:
        r = self.train_range
        return real_shard(self.images, len(r), r.start, ctx, self.config.mirror_augment, self.device)

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


def _logistic_d_step(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, gamma: float, interval: int,
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
        r1 = grad.pow(2).flatten(1).sum(1).mean()
        loss = loss + 0.5 * gamma * interval * r1
    ctx.update(loss, disc, opt)
    return {"loss_d_real": loss_real.item(), "loss_d_fake": loss_fake.item(),
            "r1": r1.item() if r1 is not None else None}


class DomainTask(_RealTask):
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

    def export(self, summary: dict) -> None:
        super().export(summary)
        self.disc.eval()
        write_part(self.disc, self.out_dir / "discriminator.pt",
                   {"part": "discriminator", "trained": self.card["discriminator"], "training": summary["part"]})

    def step(self, step: int, ctx: StepContext) -> dict:
        c, E, D = self.config, self.export_module, self.disc
        x = self.batch(ctx)
        lr = self.lr(step)
        set_lr(self.opt, lr)
        set_lr(self.opt_d, lr)
        D.requires_grad_(False)
        rec = self.generator.synthesis(E(x))
        loss_pix, loss_feat = self.reconstruction(x, rec, self.features(x))
        loss_adv = F.softplus(-D(rec)).mean()
        loss_e = loss_pix + self.lambda_vgg * loss_feat + c.lambda_adv * loss_adv
        ctx.update(loss_e, E, self.opt)
        do_r1 = self.gamma > 0 and step % c.r1_interval == 0
        d = _logistic_d_step(D, x, rec, self.gamma, c.r1_interval, do_r1, ctx, self.opt_d)
        return {"loss_pix": loss_pix.item(), "loss_feat": loss_feat.item(), "loss_adv": loss_adv.item(),
                "loss_e": loss_e.item(), **d}


class E4ETask(_RealTask):
    name = "e4e"
    critic_name = "latent_discriminator"

    def __init__(self, generator, *args, **kw):
        super().__init__(generator, *args, **kw)
        from idinvert.nets.e4e_encoder import LatentDiscriminator

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + 1)
            self.disc = LatentDiscriminator(generator.w_space_dim, self.config.w_disc_layers).to(self.device)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=self.config.lr * self.config.w_disc_lr_ratio,
                                      betas=tuple(self.config.betas))

    def build(self) -> nn.Module:
        return build_e4e_encoder(self.generator, self.config)

    def stage(self, step: int) -> int:
        c = self.config
        return progressive_stage(step, self.generator.num_layers, c.progressive_start, c.progressive_step_every)

    def validate(self) -> float:
        return validation_mse(self.export_module, self.generator, self.val_x)

    def step(self, step: int, ctx: StepContext) -> dict:
        c, E, D = self.config, self.export_module, self.disc
        x = self.batch(ctx)
        real_w = mapping_codes(self.generator, ctx.batch_size, ctx.rng).to(self.device)[ctx.shard]
        k = self.stage(step)
        E.set_progressive_stage(k)
        set_lr(self.opt, self.lr(step))
        set_lr(self.opt_d, self.lr(step) * c.w_disc_lr_ratio)
        D.requires_grad_(False)
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
        real = real_w[:, :k + 1].reshape(-1, wp.shape[-1])
        do_r1 = c.r1_gamma > 0 and step % c.r1_interval == 0
        d = _logistic_d_step(D, real, used, c.r1_gamma, c.r1_interval, do_r1, ctx, self.opt_d)
        return {"loss_pix": loss_pix.item(), "loss_feat": loss_feat.item(), "loss_delta": loss_delta.item(),
                "loss_adv": loss_adv.item(), "loss_e": loss_e.item(), **d}

    def export(self, summary: dict) -> None:
        self.export_module.set_progressive_stage(self.stage(self.steps - 1))
        super().export(summary)


class ReStyleTask(_RealTask):
    name = "restyle"

    def build(self) -> nn.Module:
        return build_restyle_encoder(self.generator, self.config)

    def validate(self) -> float:
        E = self.export_module
        return restyle_validation_mse(E, self.generator, E.latent_avg, self.val_x, self.config.val_steps)[-1]

    def step(self, step: int, ctx: StepContext) -> dict:
        c, E, G = self.config, self.export_module, self.generator
        x = self.batch(ctx)
        set_lr(self.opt, self.lr(step))
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
        return {"loss_first": losses[0], "loss_last": losses[-1], "loss": sum(losses) / len(losses)}


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
        from idinvert.training.classifier import _lr_at
        return _lr_at(dataclasses.replace(self.config, steps=self.steps), step)

    def step(self, step: int, ctx: StepContext) -> dict:
        r = self.train_range
        idx = torch.randint(r.start, r.stop, (ctx.batch_size,), generator=ctx.rng)[ctx.shard]
        x, y = self.images(idx.tolist()).to(self.device), self.labels[idx].float().to(self.device)
        set_lr(self.opt, self.lr(step))
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

    def export(self, summary: dict) -> None:
        self.export_module.eval()
        write_part(self.export_module, self.out_dir / "classifier.pt",
                   {"part": "classifier", "settings": _jsonable(self.config), **self.card, "training": summary})


# part -> (task class, its config class)
TASKS = {
    "conventional": (ConventionalTask, ConventionalEncoderConfig),
    "domain": (DomainTask, DomainEncoderConfig),
    "e4e": (E4ETask, E4EConfig),
    "restyle": (ReStyleTask, ReStyleConfig),
    "classifier": (ClassifierTask, ClassifierConfig),
}
