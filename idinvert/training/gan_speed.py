"""A/B benchmark of one GAN training step (G + D, lazy R1) on this machine's CPU.

    python -m idinvert.training.gan_speed [--rounds 4] [--steps 6] [--batch 32]

Variants run interleaved in one process (round-robin, medians), so a busy machine slows each the same:
the default layout (fp32, 1 thread), channels_last, bf16 autocast and 2 torch threads. Prints wall and
process CPU time per step and each variant's ratio to the default; GANConfig's docstring quotes a run.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from idinvert.training.gan import GANConfig, _mixed_wp, build_discriminator, build_generator
from idinvert.training.loop_utils import interleaved_speed, speed_arguments

# name -> (threads, (channels_last, bf16))
VARIANTS = {"fp32": (1, (False, False)), "channels_last": (1, (True, False)), "bf16": (1, (False, True)),
            "2 threads": (2, (False, False))}


def _make(cfg: GANConfig, channels_last: bool):
    torch.manual_seed(0)
    G, D = build_generator(cfg), build_discriminator(cfg)
    G.set_noise_mode("random")
    if channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(G.parameters(), cfg.lr, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), cfg.lr, betas=(0.0, 0.99))
    return G, D, opt_g, opt_d


def _step(state, batch: int, i: int, bf16: bool, cfg: GANConfig) -> None:
    G, D, opt_g, opt_d = state
    real = torch.rand(batch, 3, cfg.resolution, cfg.resolution) * 2 - 1
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    with ctx:
        with torch.no_grad():
            fake = G.synthesis(_mixed_wp(G, batch, cfg.style_mixing_prob, None))
        loss = F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean()
    opt_d.zero_grad()
    loss.backward()
    opt_d.step()
    if i % cfg.r1_interval == 0:
        r = real.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(D(r).sum(), r, create_graph=True)
        opt_d.zero_grad()
        g.pow(2).sum().backward()
        opt_d.step()
    for p in D.parameters():
        p.requires_grad_(False)
    with ctx:
        loss = F.softplus(-D(G.synthesis(_mixed_wp(G, batch, cfg.style_mixing_prob, 0.995)))).mean()
    opt_g.zero_grad()
    loss.backward()
    opt_g.step()
    for p in D.parameters():
        p.requires_grad_(True)


def main(argv=None) -> None:
    args = speed_arguments(__doc__, argv, steps=6)
    cfg = GANConfig()
    states = {k: _make(cfg, v[1][0]) for k, v in VARIANTS.items()}
    interleaved_speed(VARIANTS, lambda k, i: _step(states[k], args.batch, i, VARIANTS[k][1][1], cfg),
                      args.rounds, args.steps, args.batch)


if __name__ == "__main__":
    main()
