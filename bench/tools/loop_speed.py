"""``python -m bench.tools.loop_speed``: is the optimisation loop faster with bf16 autocast, channels_last, or
another thread count -- at equal results?

A benchmark, not a test. On the bundle's test images it runs ``optimize_codes`` with the idinvert
loss (encoder start, lambda_dom 2, the bundle's lambda_vgg) in several variants, ``--repeats`` times
each, interleaved so that a busy shared machine slows all of them alike, and reports per variant: the
best wall time and process CPU time (all threads; robust to other jobs, but not the measure
for more threads), their ratios to the fp32 baseline at the same thread count, the mean reconstruction MSE of
the final codes, and the max abs difference of the codes to the baseline's. A variant is only worth
keeping if it is faster *and* its MSE equals the baseline's (within run-to-run noise).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from bench.cli_table import opt
from bench.tools.workload import emit, interleaved_times, load_images, timer_parser
from idinvert.inversion import LoopOptions, encode, optimize_codes
from idinvert.loss_terms import DomainLoss, PerceptualLoss, PixelLoss


def build_parser() -> argparse.ArgumentParser:
    return timer_parser("python -m bench.tools.loop_speed", __doc__, 30,
                        opt("--threads", default="1", help="comma list of thread counts (default: %(default)s)"),
                        opt("--variants", default="fp32,channels_last,bf16_autocast"),
                        opt("--out", type=Path, default=None))


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    from idinvert.zoo import load_bundle

    bundle = load_bundle(args.bundle)
    images = load_images(bundle, args.images, 0, tiny=False)
    init = encode(bundle.encoder, images, batch_size=images.shape[0])
    lam_vgg = float(bundle.info.lambda_vgg_default or 0.0)
    terms = [PixelLoss(), PerceptualLoss(bundle.perceptual, lam_vgg), DomainLoss(bundle.encoder, 2.0)]

    def run(variant: str, steps: int = args.steps, n: int = images.shape[0]):
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if variant == "bf16_autocast" \
            else contextlib.nullcontext()
        fmt = "channels_last" if variant == "channels_last" else "contiguous"
        with ctx:
            return optimize_codes(bundle.generator, images[:n], init[:n], terms, steps=steps,
                                  options=LoopOptions(memory_format=fmt))

    def mse(codes):
        with torch.no_grad():
            return float((bundle.generator.synthesis(codes.float()) - images).pow(2).mean())

    variants = args.variants.split(",")
    results = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for v in variants:  # warm-up
            run(v, steps=2, n=2)
        runs = {v: (lambda v=v: run(v).codes.float()) for v in variants}
        times, cpu, codes = interleaved_times(runs, args.repeats)
        base = min(times["fp32"]) if "fp32" in times else None
        base_cpu = min(cpu["fp32"]) if "fp32" in cpu else None
        for v in variants:
            best = min(times[v])
            results[f"{v}@{threads}t"] = {
                "threads": threads, "variant": v, "seconds": times[v], "best_seconds": best,
                "ratio_to_fp32": best / base if base else None,
                "cpu_seconds": cpu[v], "cpu_ratio_to_fp32": min(cpu[v]) / base_cpu if base_cpu else None,
                "final_mse": mse(codes[v]),
                "max_abs_code_diff_to_fp32": float((codes[v] - codes["fp32"]).abs().max())
                if "fp32" in codes else None,
            }
    out = {"bundle": args.bundle, "images": args.images, "steps": args.steps, "repeats": args.repeats,
           "torch": torch.__version__, "results": results}
    return emit(out, args.out)


if __name__ == "__main__":
    main()
