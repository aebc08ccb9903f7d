"""``python -m bench.tools.anytime_overhead``: what milestones cost the optimisation loop.

A benchmark, not a test. On the bundle's test images it runs ``idinvert.inversion.optimize_codes``
with the idinvert loss (encoder start, lambda_dom) -- or the image2stylegan loss with ``--loss
image2stylegan`` -- ``--repeats`` times each way, interleaved (plain, with milestones, plain, ...),
and reports the best wall time and the best process CPU time (``time.process_time``, far less
sensitive to other jobs on a shared machine) of each and their ratios, plus the max abs difference of the final
codes (must be 0: milestones only copy). Two schedules: the anytime one (``anytime_milestones``) and,
as a worst case, a milestone at every step.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from idinvert.inversion import LoopOptions, anytime_milestones, encode, optimize_codes
from idinvert.loss_terms import DomainLoss, PerceptualLoss, PixelLoss


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.tools.anytime_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default="synthetic-faces")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--loss", choices=("idinvert", "image2stylegan"), default="idinvert")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    from bench.tools.workload import emit, load_images
    from idinvert.zoo import load_bundle

    bundle = load_bundle(args.bundle)
    images = load_images(bundle, args.images, 0, tiny=False)
    lam_vgg = float(bundle.info.lambda_vgg_default or 0.0)
    if args.loss == "idinvert":
        init = encode(bundle.encoder, images, batch_size=images.shape[0])
        terms = [PixelLoss(), PerceptualLoss(bundle.perceptual, lam_vgg), DomainLoss(bundle.encoder, 2.0)]
    else:
        init = bundle.w_avg.reshape(1, 1, -1).expand(images.shape[0], bundle.num_layers, -1).clone()
        terms = [PixelLoss(), PerceptualLoss(bundle.perceptual, lam_vgg)]
    schedules = {"none": None, "anytime": anytime_milestones(args.steps),
                 "every_step": list(range(args.steps + 1))}
    optimize_codes(bundle.generator, images[:2], init[:2], terms, steps=2)  # warm-up
    times = {k: [] for k in schedules}
    cpu = {k: [] for k in schedules}
    finals = {}
    for _ in range(args.repeats):
        for name, ms in schedules.items():
            t0, c0 = time.perf_counter(), time.process_time()
            res = optimize_codes(bundle.generator, images, init, terms, steps=args.steps,
                                 options=LoopOptions(milestones=ms))
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            finals[name] = res.codes
    best = {k: min(v) for k, v in times.items()}
    best_cpu = {k: min(v) for k, v in cpu.items()}
    out = {
        "bundle": args.bundle, "loss": args.loss, "images": args.images, "steps": args.steps,
        "repeats": args.repeats, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "seconds": times, "best_seconds": best, "cpu_seconds": cpu, "best_cpu_seconds": best_cpu,
        "ratio_anytime": best["anytime"] / best["none"],
        "ratio_every_step": best["every_step"] / best["none"],
        "cpu_ratio_anytime": best_cpu["anytime"] / best_cpu["none"],
        "cpu_ratio_every_step": best_cpu["every_step"] / best_cpu["none"],
        "milestones_anytime": schedules["anytime"],
        "max_abs_code_diff": {k: float((finals[k] - finals["none"]).abs().max()) for k in schedules},
    }
    return emit(out, args.out)


if __name__ == "__main__":
    main()
