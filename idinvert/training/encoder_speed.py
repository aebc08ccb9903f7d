"""A/B benchmark of one domain-guided encoder training step (E step + D step, lazy R1) on this CPU.

    python -m idinvert.training.encoder_speed [--rounds 4] [--steps 4] [--batch 32]

The step is the one of ``train_domain_encoder`` (pixel + perceptual + adversarial loss through the frozen
G and F, then the logistic D loss with R1 every ``r1_interval`` steps), on the shipped bundle's
networks. Variants run interleaved in one process (round-robin, medians), so a busy machine slows each
the same: fp32 with 1 thread (the recipe's layout), channels_last, bf16 autocast, and 2 torch threads.
Prints wall and process CPU time per step and each variant's ratio to fp32; a variant is worth taking
only if it is faster on this machine (the encoders' docstring quotes a run).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from idinvert.training.loop_utils import interleaved_speed, speed_arguments

# name -> (threads, (channels_last, bf16))
VARIANTS = {"fp32": (1, (False, False)), "channels_last": (1, (True, False)), "bf16": (1, (False, True)),
            "2 threads": (2, (False, False))}


def _make(parts: dict, channels_last: bool):
    from idinvert.training.encoders import DomainEncoderConfig, build_encoder

    cfg = DomainEncoderConfig()
    G, D, Fp = (copy.deepcopy(parts[k]) for k in ("generator", "discriminator", "perceptual"))
    E = build_encoder(G, cfg)
    for m in (G, Fp):
        m.eval().requires_grad_(False)
    if channels_last:
        E, G, D, Fp = (m.to(memory_format=torch.channels_last) for m in (E, G, D, Fp))
    opt_e = torch.optim.Adam(E.parameters(), cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), cfg.lr, betas=cfg.betas)
    return E, G, D, Fp, opt_e, opt_d, cfg


def _step(state, x: torch.Tensor, i: int, bf16: bool, channels_last: bool) -> None:
    E, G, D, Fp, opt_e, opt_d, cfg = state
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    D.requires_grad_(False)
    with ctx:
        rec = G.synthesis(E(x))
        loss = (F.mse_loss(rec, x) + 0.1 * F.mse_loss(Fp(rec), Fp(x).detach())
                + cfg.lambda_adv * F.softplus(-D(rec)).mean())
    opt_e.zero_grad(set_to_none=True)
    loss.backward()
    opt_e.step()
    D.requires_grad_(True)
    r1 = i % cfg.r1_interval == 0
    real = x.detach().requires_grad_(r1)
    with ctx:
        real_logits = D(real)
        loss_d = F.softplus(-real_logits).mean() + F.softplus(D(rec.detach())).mean()
    if r1:
        (g,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
        loss_d = loss_d + g.pow(2).sum(dim=(1, 2, 3)).mean()
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()


def main(argv=None) -> None:
    args = speed_arguments(__doc__, argv, steps=4)
    from idinvert.nets.perceptual import DomainPerceptual
    from idinvert.zoo import SYNTHETIC_FACES_DIR, load_part

    parts = {k: load_part(SYNTHETIC_FACES_DIR, k) for k in ("generator", "discriminator")}
    parts["perceptual"] = DomainPerceptual(load_part(SYNTHETIC_FACES_DIR, "classifier"))
    x = torch.rand(args.batch, 3, parts["generator"].resolution, parts["generator"].resolution) * 2 - 1
    states = {k: _make(parts, v[1][0]) for k, v in VARIANTS.items()}
    interleaved_speed(VARIANTS, lambda k, i: _step(states[k], x, i, VARIANTS[k][1][1], VARIANTS[k][1][0]),
                      args.rounds, args.steps, args.batch)


if __name__ == "__main__":
    main()
