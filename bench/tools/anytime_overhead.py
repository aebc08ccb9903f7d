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
import functools
import os
import platform
from pathlib import Path

import torch

from bench.cli_table import opt
from bench.tools.workload import emit, interleaved_times, load_images, timer_parser
from idinvert.inversion import LoopOptions, anytime_milestones, encode, optimize_codes
from idinvert.loss_terms import DomainLoss, PerceptualLoss, PixelLoss


def build_parser() -> argparse.ArgumentParser:
    return timer_parser("python -m bench.tools.anytime_overhead", __doc__, 100,
                        opt("--loss", choices=("idinvert", "image2stylegan"), default="idinvert"),
                        opt("--threads", type=int, default=1), opt("--out", type=Path, default=None))


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
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
    runs = {name: functools.partial(optimize_codes, bundle.generator, images, init, terms, steps=args.steps,
                                    options=LoopOptions(milestones=ms)) for name, ms in schedules.items()}
    times, cpu, results = interleaved_times(runs, args.repeats)
    finals = {name: res.codes for name, res in results.items()}
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
