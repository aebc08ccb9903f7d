"""``bench perf --variants``: per optimisation method, how fast its loop runs eager vs compiled
(``torch.compile``), in fp32 vs bf16 autocast, on 1 vs 2 threads, and as 2 processes of 1 thread --
ratios from one run, the in-process variants interleaved round by round so that a busy machine slows
them alike -- and whether each variant keeps the numbers (codes and reconstruction MSE after the same
steps, against eager fp32). Writes what it measured to the runner's cache (``bench.speed_choice``), so
``bench run`` then uses the measured best on this machine.

Two notes on what is measured. Compiled kernels keep the thread count they were compiled with, so the
2-thread rows are eager (a compiled 2-thread variant would need its own process). The 2-process row runs
two worker processes at once, each on half the batch with 1 thread, after both have warmed up (and
compiled); it is timed apart from the interleaved rows, so its ratio carries the machine's drift between
the two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.speed_choice import (EAGER, Speed, cache_key, cache_path, fingerprint_id, has_bf16, load_cache,
                                machine_fingerprint, measure, save_cache, variant_label, within_tolerance)

OPTIMISATION_METHODS = ("image2stylegan", "idinvert", "mse-optim", "optim-w")


def variants_for(fp: dict[str, Any], all_variants: bool) -> list[tuple[Speed, int]]:
    """Eager / compiled fp32 and eager bf16 on 1 thread (compiled bf16 too where the CPU has bf16
    instructions, or with --all-variants), then eager fp32 on 2 threads."""
    one = [EAGER, Speed(autocast="bf16")]
    if fp["compiler"] == "ok":
        one.insert(1, Speed(compile=True))
        if has_bf16(fp) or all_variants:
            one.append(Speed(compile=True, autocast="bf16"))
    return [(s, 1) for s in one] + [(EAGER, 2)]


def _method(name: str, bundle: Any) -> Any:
    from bench.tools.workload import build_method

    m = build_method(100, name)
    m.record_milestones = False  # the bare loop
    m.prepare(bundle)
    return m


def run_variants(args: Any, bundle: Any, images: torch.Tensor) -> dict[str, Any]:
    device = images.device
    fp = machine_fingerprint(device)
    names = [n.strip() for n in (args.methods or ",".join(OPTIMISATION_METHODS)).split(",") if n.strip()]
    from methods.registry import get, names as known

    for name in names:
        if name not in known() or not callable(getattr(get(name), "optimise", None)):
            raise SystemExit(f"bench perf: --methods: {name!r} is not an optimisation method "
                             f"(these are: {', '.join(OPTIMISATION_METHODS)})")
    out: dict[str, Any] = {"fingerprint": fp, "bundle": bundle.name, "images": images.shape[0],
                           "steps": args.steps, "rounds": args.rounds, "methods": {}}
    cache = load_cache(cache_path(args.results), fingerprint_id(fp))
    for name in names:
        method = _method(name, bundle)
        say = (lambda s: print(f"bench perf: {s}", file=sys.stderr)) if not args.quiet else (lambda s: None)
        res = measure(method, images, variants_for(fp, args.all_variants), steps=args.steps,
                      rounds=args.rounds, say=say)
        if args.processes and device.type == "cpu":
            res["two_processes"] = two_processes(name, args, res)
        out["methods"][name] = res
        cache[cache_key(method, bundle, images.shape[0])] = res
    save_cache(cache_path(args.results), fp, cache)
    out["cache"] = str(cache_path(args.results))
    return out


def _best_one_thread(res: dict[str, Any]) -> str:
    ok = {k: v for k, v in res["variants"].items() if v["threads"] == 1 and within_tolerance(v)}
    return min(ok, key=lambda k: ok[k]["s_per_image_step"])


def two_processes(name: str, args: Any, res: dict[str, Any]) -> dict[str, Any]:
    """Two worker processes at once, 1 thread each, half the batch each, with the best 1-thread variant."""
    label = _best_one_thread(res)
    speed = res["variants"][label]["speed"]
    half = max(1, args.images // 2)
    sync = Path(args.results) / "cache" / f"perf-sync-{os.getpid()}"
    sync.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "bench.tools.perf_variants", "--worker", name, json.dumps(speed), str(half),
           str(args.steps), str(args.rounds), str(sync), args.bundle, "1" if args.tiny else "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd + [str(i)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
             for i in range(2)]
    walls = [json.loads(p.communicate()[0].strip().splitlines()[-1])["wall"] for p in procs]
    for f in sync.iterdir():
        f.unlink()
    sync.rmdir()
    s_per = max(walls) / (2 * half * args.steps)
    one = res["variants"][label]["s_per_image_step"]
    return {"variant": label, "images_per_process": half, "s_per_image_step": s_per,
            "ratio": res["variants"][res["reference"]]["s_per_image_step"] / s_per,
            "vs_same_variant_one_process": one / s_per}


def worker(argv: list[str]) -> None:
    """One of the two processes: warm up (compile), wait for the other, time the rounds, print JSON."""
    name, speed, half, steps, rounds, sync, bundle_name, tiny, index = argv
    torch.set_num_threads(1)
    from bench.tools.workload import load_images
    from idinvert.zoo import load_bundle, tiny_random_bundle

    bundle = tiny_random_bundle(seed=0) if tiny == "1" else load_bundle(bundle_name)
    images = load_images(bundle, 2 * int(half), 0, tiny == "1")[int(index) * int(half):][:int(half)]
    method = _method(name, bundle)
    method.speed = Speed.from_json(json.loads(speed))
    method.optimise(images, int(steps))  # untimed: compile, allocator
    Path(sync, f"ready{index}").touch()
    while len(list(Path(sync).glob("ready*"))) < 2:
        time.sleep(0.05)
    walls = []
    for _ in range(int(rounds)):
        t0 = time.perf_counter()
        method.optimise(images, int(steps))
        walls.append(time.perf_counter() - t0)
    print(json.dumps({"wall": sorted(walls)[len(walls) // 2]}))


def print_variants(res: dict[str, Any], file=sys.stdout) -> None:
    fp = res["fingerprint"]
    print(f"loop speed by variant: {res['bundle']}, batch {res['images']}, {res['steps']} Adam steps x "
          f"{res['rounds']} interleaved rounds (median); {fp['cpu']} ({fp['cores']} cores; "
          f"bf16 instructions: {'yes' if has_bf16(fp) else 'no'}), torch {fp['torch']}, compiler: {fp['compiler']}",
          file=file)
    print(f"{'method':<16}{'variant':<28}{'ms/img-step':>12}{'CPU ms':>9}{'x eager':>9}{'compile s':>11}"
          f"{'max|dcode|':>12}{'dMSE rel':>10}  ok", file=file)
    for name, m in res["methods"].items():
        for label, v in m["variants"].items():
            comp = f"{v['compile_s']:.1f}" if v["speed"]["compile"] else "-"
            print(f"{name:<16}{label:<28}{1e3 * v['s_per_image_step']:>12.2f}{1e3 * v['cpu_s_per_image_step']:>9.2f}"
                  f"{v['ratio']:>9.2f}{comp:>11}{v['max_code_diff']:>12.1e}{v['mse_rel_diff']:>10.1e}  "
                  f"{'yes' if within_tolerance(v) else 'NO'}", file=file)
        two = m.get("two_processes")
        if two:
            print(f"{name:<16}{'2 processes x 1 thread':<28}{1e3 * two['s_per_image_step']:>12.2f}{'':>9}"
                  f"{two['ratio']:>9.2f}   ({two['variant']}; x{two['vs_same_variant_one_process']:.2f} "
                  f"against it in one process)", file=file)
    print(f"measurements cached for bench run in {res['cache']}", file=file)


if __name__ == "__main__":   # pragma: no cover - the worker process of two_processes
    if sys.argv[1:2] != ["--worker"]:
        sys.exit("bench.tools.perf_variants: use bench perf --variants")
    worker(sys.argv[2:])
