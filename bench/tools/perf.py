"""``python -m bench perf``: throughput of batched vs one-at-a-time inversion by an optimisation method
(``--method``, default ``idinvert``; e.g. ``image2stylegan``), and the GFLOP/s its loop reaches against
this machine's measured fp32 matmul peak.

A benchmark, not a test: it prints a small table and writes JSON (``--out``). What is measured:

- images/s of ``idinvert.invert`` on all ``--images`` images in one batch, and one image at a time
  (each after an untimed warm-up), and the max abs difference of the two sets of final codes (the
  loop sums per-image losses, so they should agree to float rounding);
- FLOPs of the inversion, counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
  convolutions, forward and backward; elementwise work is not counted, so GFLOP/s is a lower bound
  on the arithmetic done). Per-step FLOPs = count(iters=2) - count(iters=1); the total for the
  timed run = count(iters=1) + (iters - 1) * per-step, which includes the encoder start and F(x);
- the fp32 matmul peak: the best of several timed ``torch.mm`` of two n x n float32 matrices
  (2 n^3 FLOPs each), on the same device and thread count;
- what anytime evaluation costs the loop: the batched run with its milestones kept (the codes at
  ``anytime_milestones(iters)``, as ``bench run`` keeps them) and without, alternated over
  ``--rounds`` rounds in this process so that a busy machine slows both alike; the ratio of the
  medians (with / without; 1.0 = free).

The 1e-7 start-perturbation floor is measured for ``idinvert`` (whose start is the encoder's code);
other methods report it as not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Callable, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import defaults
from bench.cli_table import standalone_parser
from bench.tools.workload import build_method, load_images  # noqa: F401  (load_images: for callers)

DEFAULT_IMAGES = defaults.PERF_IMAGES
DEFAULT_ITERS = defaults.PERF_ITERS   # the paper's / official setting of idinvert
DEFAULT_VARIANT_IMAGES = defaults.PERF_VARIANT_IMAGES  # image2stylegan's 32 images: one batch of the default run


def build_parser() -> argparse.ArgumentParser:
    """``bench perf``'s parser, from the command table (``bench.cli_table``)."""
    return standalone_parser("perf", description=__doc__.split("\n\n")[0])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def matmul_peak(device: torch.device, n: int, repeats: int = 5) -> dict:
    """Best-of-``repeats`` fp32 GFLOP/s of an n x n @ n x n matmul (TF32 disabled on CUDA)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        torch.mm(a, b)   # warm-up
        best = float("inf")
        for _ in range(repeats):
            _, dt = _timed(lambda: torch.mm(a, b), device)
            best = min(best, dt)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    return {"n": n, "seconds": best, "gflops": 2.0 * n ** 3 / best / 1e9}


def count_flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@torch.no_grad()
def _recon_mse(bundle: Any, codes: torch.Tensor, images: torch.Tensor) -> float:
    return float(((bundle.generator.synthesis(codes) - images) ** 2).mean())


def _perturbed_floor(bundle: Any, images: torch.Tensor, iters: int, codes: torch.Tensor,
                     seed: int) -> float:
    """Max abs difference between ``codes`` and the batched run started 1e-7 away from E(x)."""
    from idinvert.inversion import encode, optimize_codes

    m = build_method(iters, "idinvert")
    m.prepare(bundle)
    init = encode(bundle.encoder, images, batch_size=images.shape[0])
    gen = torch.Generator().manual_seed(seed + 1)
    init = init + 1e-7 * torch.randn(init.shape, generator=gen).to(init.device)
    out = optimize_codes(bundle.generator, images, init, m.loss_terms(), steps=iters, lr=m.lr)
    return (out.codes - codes).abs().max().item()


def _flops(bundle, images: torch.Tensor, iters: int, name: str = "idinvert") -> tuple[int, int, int, int]:
    """FLOPs of the method at ``iters`` steps, from counting 1 and 2 steps: (per batched step, batched
    total, per single-image step, one-at-a-time total)."""
    def flops_of(steps: int, batch: torch.Tensor) -> int:
        m = build_method(steps, name)
        m.prepare(bundle)
        return count_flops(lambda: m.invert(batch))

    f1, f2 = flops_of(1, images), flops_of(2, images)
    s1, s2 = flops_of(1, images[:1]), flops_of(2, images[:1])
    return f2 - f1, f1 + (iters - 1) * (f2 - f1), s2 - s1, images.shape[0] * (s1 + (iters - 1) * (s2 - s1))


def _setup(args: argparse.Namespace) -> tuple[torch.device, Any, torch.Tensor]:
    """The device, the bundle and the images to time."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.images is None:
        args.images = DEFAULT_VARIANT_IMAGES if args.variants else DEFAULT_IMAGES
    device = torch.device(args.device)
    if args.images < 1 or args.iters < 1:
        raise SystemExit("bench perf: --images and --iters must be >= 1")
    from methods.registry import get, names

    if args.method not in names():
        raise SystemExit(f"bench perf: unknown method {args.method!r}; known: {', '.join(names())}")
    if "iters" not in get(args.method).hyperparameters():
        raise SystemExit(f"bench perf: {args.method} has no iters: it is not an optimisation method")
    if args.tiny:
        from idinvert.zoo import tiny_random_bundle
        bundle = tiny_random_bundle(seed=args.seed).to(device)
    else:
        from idinvert.zoo import load_bundle
        bundle = load_bundle(args.bundle, weights_dir=args.weights_dir, device=device)
    return device, bundle, load_images(bundle, args.images, args.seed, args.tiny).to(device)


def milestone_overhead(bundle: Any, images: torch.Tensor, iters: int, name: str, rounds: int,
                       device: torch.device) -> dict:
    """Median seconds of the batched run with and without its anytime milestones, alternated
    ``rounds`` times (after one untimed run of each), and the ratio with / without."""
    import statistics

    variants = {}
    for keep in (True, False):
        m = build_method(iters, name)
        m.record_milestones = keep   # an instance attribute shadows the class's default
        m.prepare(bundle)
        variants[keep] = m
    kept = variants[True].invert(images).milestones
    variants[False].invert(images)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(max(1, rounds)):
        for keep, m in variants.items():
            times[keep].append(_timed(lambda: m.invert(images), device)[1])
    with_s, without_s = statistics.median(times[True]), statistics.median(times[False])
    return {"steps": [ms.step for ms in kept or []], "rounds": max(1, rounds),
            "seconds_with": with_s, "seconds_without": without_s, "ratio": with_s / without_s}


def run(args: argparse.Namespace) -> dict:
    device, bundle, images = _setup(args)
    n = images.shape[0]

    method = build_method(args.iters, args.method)
    method.prepare(bundle)

    # Warm-up, untimed: the full batch once for a few steps, and a single image.
    short = build_method(2, args.method)
    short.prepare(bundle)
    short.invert(images)
    short.invert(images[:1])

    batched, t_batched = _timed(lambda: method.invert(images), device)
    singles, t_single = _timed(lambda: [method.invert(images[i:i + 1]) for i in range(n)], device)
    codes_single = torch.cat([r.codes for r in singles])
    max_diff = (batched.codes - codes_single).abs().max().item()
    # Context for max_diff: Adam's per-coordinate normalisation amplifies tiny differences (its first
    # steps are nearly sign(gradient)), so the floor is the same batched run from a start perturbed by
    # 1e-7 -- the size of float32 rounding differences between batched and single-image kernels.
    floor = (_perturbed_floor(bundle, images, args.iters, batched.codes, args.seed)
             if args.method == "idinvert" else None)
    mse_batched = _recon_mse(bundle, batched.codes, images)
    mse_single = _recon_mse(bundle, codes_single, images)

    overhead = milestone_overhead(bundle, images, args.iters, args.method, args.rounds, device)
    per_step, total, per_image_step, total_single = _flops(bundle, images, args.iters, args.method)
    peak_n = args.peak_size or (8192 if device.type == "cuda" else 2048)
    peak = matmul_peak(device, peak_n)

    def row(seconds: float, flops: int) -> dict:
        gflops = flops / seconds / 1e9
        return {"seconds": seconds, "images_per_s": n / seconds, "gflop": flops / 1e9,
                "gflops": gflops, "fraction_of_peak": gflops / peak["gflops"]}

    return {
        "bundle": bundle.name,
        **machine_info(device),
        "method": args.method,
        "params": method.params(),
        "images": n,
        "resolution": bundle.resolution,
        "iters": args.iters,
        "flops_per_step_batched": per_step,
        "flops_per_step_per_image": per_image_step,
        "batched": row(t_batched, total),
        "one_at_a_time": row(t_single, total_single),
        "speedup": t_single / t_batched,
        "max_abs_code_diff": max_diff,
        "max_abs_code_diff_from_1e-7_start_perturbation": floor,
        "recon_mse_batched": mse_batched,
        "recon_mse_one_at_a_time": mse_single,
        "any_failed": bool(batched.failed.any() or any(r.failed.any() for r in singles)),
        "matmul_peak": peak,
        "milestone_overhead": overhead,
        "flop_counting": "FlopCounterMode: matmul/conv forward+backward only",
    }


def machine_info(device: torch.device) -> dict:
    """Where a timing was taken: device, its name, torch's threads, the CPU count, torch's version."""
    return {
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }


def print_table(res: dict, file=sys.stdout) -> None:
    peak = res["matmul_peak"]
    print(f"{res['method']} inversion on {res['bundle']} ({res['resolution']} px), {res['images']} images, "
          f"{res['iters']} iters, {res['device']} ({res['device_name']}), {res['threads']} threads",
          file=file)
    print(f"{'mode':<15}{'seconds':>10}{'images/s':>11}{'GFLOP':>10}{'GFLOP/s':>10}{'% peak':>9}",
          file=file)
    for key, label in (("batched", f"batched ({res['images']})"), ("one_at_a_time", "one-at-a-time")):
        r = res[key]
        print(f"{label:<15}{r['seconds']:>10.2f}{r['images_per_s']:>11.2f}{r['gflop']:>10.2f}"
              f"{r['gflops']:>10.2f}{100 * r['fraction_of_peak']:>8.1f}%", file=file)
    print(f"batched speed-up x{res['speedup']:.2f}; max |codes batched - one-at-a-time| = "
          f"{res['max_abs_code_diff']:.2e}", file=file)
    floor = res["max_abs_code_diff_from_1e-7_start_perturbation"]
    floor = "not measured for this method" if floor is None else f"{floor:.2e}"
    print(f"  (same batched run from a start 1e-7 away: {floor}; "
          f"recon MSE batched {res['recon_mse_batched']:.5f}, one-at-a-time "
          f"{res['recon_mse_one_at_a_time']:.5f})", file=file)
    print(f"fp32 matmul peak: {peak['gflops']:.1f} GFLOP/s ({peak['n']}x{peak['n']} mm); "
          f"FLOPs per step: {res['flops_per_step_per_image'] / 1e6:.2f} MFLOP per image", file=file)
    o = res["milestone_overhead"]
    print(f"anytime milestones {o['steps']}: batched run {o['seconds_with']:.2f} s with, "
          f"{o['seconds_without']:.2f} s without (median of {o['rounds']}); ratio x{o['ratio']:.3f}",
          file=file)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.variants:
        from bench.tools.perf_variants import print_variants, run_variants

        device, bundle, images = _setup(args)
        res = run_variants(args, bundle, images)
        print_variants(res)
    else:
        res = run(args)
        print_table(res)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(json.dumps(res, indent=2) + "\n")
        tmp.replace(args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":   # pragma: no cover
    raise SystemExit(main())
