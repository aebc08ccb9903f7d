"""What one `bench train` step of each part costs: measured seconds on this machine, and counted FLOPs.

    python -m idinvert.training.own_cost --resolution 32 --batch-size 8 --steps 3      # time + FLOPs
    python -m idinvert.training.own_cost --resolution 256 --batch-size 8 --flops-only  # FLOPs only

Uses a random-initialised rosinality StyleGAN2 of the given size (style_dim 512, channel multiplier 2, as
config-f), random images in place of a folder, and F = VGG16 conv4_3 (random weights: the cost is the
same). FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` over one step (forward and
backward; convolutions and matrix products, which dominate) of a step without the lazy R1 term (every
4th discriminator step; e4e's every 16th); a GPU time derived from them is an estimate, not a
measurement -- the README says which.
"""

from __future__ import annotations

import argparse
import time

import torch

from idinvert.training.loop import Dist, StepContext
from idinvert.training.loop_utils import step_generator

__all__ = ["step_costs", "main"]


class _RandomImages:
    """Stands in for an ImageSet: `load(indices)` returns fixed random images [n, 3, R, R]."""

    def __init__(self, n: int, resolution: int):
        self.x = torch.rand(n, 3, resolution, resolution, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def __len__(self) -> int:
        return self.x.shape[0]

    def load(self, idx):
        return self.x[list(idx)]


def step_costs(resolution: int, batch_size: int, steps: int, parts, flops_only: bool = False) -> dict:
    """{part: {"seconds_per_step": s or None, "gflops_per_step": g}} for one process, fp32."""
    from torch.utils.flop_counter import FlopCounterMode

    from idinvert.nets.perceptual import PAPER_LAMBDA_VGG, VGG16Perceptual
    from idinvert.nets.stylegan2 import StyleGAN2Generator
    from idinvert.training.own_generator import Source, TrainSettings, _make_task
    from idinvert.utils import freeze

    G = StyleGAN2Generator(resolution, 512, 8, channel_multiplier=2).eval()
    F = VGG16Perceptual().eval()
    freeze(G, F)
    images = _RandomImages(batch_size + 4, resolution)
    settings = TrainSettings(steps=steps + 2, batch_size=batch_size, val_images=4)
    fcard = {"name": "vgg16-conv4_3 (random weights: cost only)", "lambda_vgg": PAPER_LAMBDA_VGG}
    out = {}
    for part in parts:
        task = _make_task(part, Source("random", G), F, fcard, images, settings, "/nonexistent", torch.device("cpu"))
        ctx = lambda s: StepContext(step_generator(0, s), Dist(), batch_size)  # noqa: E731
        with FlopCounterMode(display=False) as counter:   # step 1: no lazy R1 (its double backward and the
            task.step(1, ctx(1))                           # counter's module hooks do not go together)
        seconds = None
        if not flops_only:
            t = time.perf_counter()
            for s in range(2, steps + 2):
                task.step(s, ctx(s))
            seconds = (time.perf_counter() - t) / steps
        out[part] = {"seconds_per_step": seconds, "gflops_per_step": counter.get_total_flops() / 1e9}
        print(f"{part:13s} {resolution} px, batch {batch_size}: {out[part]['gflops_per_step']:.1f} GFLOP/step"
              + (f", {seconds:.2f} s/step here" if seconds is not None else ""), flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m idinvert.training.own_cost", description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps per part (after one counted step)")
    p.add_argument("--parts", default="conventional,domain,e4e,restyle")
    p.add_argument("--flops-only", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    step_costs(a.resolution, a.batch_size, a.steps, a.parts.split(","), a.flops_only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
