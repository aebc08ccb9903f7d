"""Which way of running an optimisation method's networks is fastest on this machine -- eager or compiled
(``torch.compile``), fp32 or bf16 autocast, 1 or 2 threads -- measured, not assumed, and cached per
machine fingerprint.

A measurement times a few Adam steps of the method itself (its own loss terms, on a batch of the run's
images) for every variant, interleaved over rounds so that a busy shared machine slows all of them
alike, and keeps per variant: wall and CPU seconds per image-step, the untimed first call (which holds
the compile), and how far the codes and the reconstruction MSE move against eager fp32 after those
steps. A variant that moves them beyond ``speed.CODE_TOLERANCE`` / ``MSE_TOLERANCE`` is never chosen
(bf16 on a CPU without bf16 instructions is also slower: measured, not assumed).

The runner asks ``choose`` per method and run: compiling wins only when the time it saves over the
run's steps exceeds the measured compile time, which is paid once per process and shape.
The cache is ``<results>/cache/speed.json``: one entry per machine fingerprint (CPU model and flags,
cores, torch version, compiler, GPU); a missing file or a changed machine means measuring again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from idinvert import speed as speed_mod
from idinvert.speed import CODE_TOLERANCE, EAGER, Speed
from idinvert.utils import atomic_write_text

# Relative difference of the reconstruction MSE after the measured steps beyond which a variant is
# rejected (fp32 compiled: ~1e-5; bf16 autocast on the embedded bundle: measured per machine).
MSE_TOLERANCE = 1e-2
STEPS = 5      # Adam steps per timed call
ROUNDS = 3     # interleaved rounds; the median is kept
CACHE_NAME = "speed.json"
CACHE_VERSION = 1


def machine_fingerprint(device: torch.device) -> dict[str, Any]:
    """What the best variant depends on: the CPU (model, vector and bf16 flags, cores), torch, the
    compiler's availability, the GPU."""
    flags = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    keep = sorted(f for f in flags if f.startswith(("avx", "amx")) or "bf16" in f or f == "fma")
    fp = {"cpu": model, "cpu_flags": keep, "cores": os.cpu_count(), "torch": torch.__version__,
          "compiler": speed_mod.compiler_problem(device.type) or "ok", "device": device.type}
    if device.type == "cuda":
        fp["gpu"] = torch.cuda.get_device_name(device)
    return fp


def fingerprint_id(fp: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def has_bf16(fp: dict[str, Any]) -> bool:
    """bf16 arithmetic in hardware (CUDA, or a CPU with avx512_bf16 / amx_bf16)."""
    return fp["device"] == "cuda" or any("bf16" in f for f in fp["cpu_flags"])


def default_variants(fp: dict[str, Any], threads: Sequence[int] = ()) -> list[tuple[Speed, int]]:
    """(speed, threads) pairs to measure: eager / compiled x fp32 / bf16, at each thread count."""
    threads = list(threads) or [torch.get_num_threads()]
    speeds = [EAGER, Speed(compile=True), Speed(autocast="bf16"), Speed(compile=True, autocast="bf16")]
    if fp["compiler"] != "ok":
        speeds = [s for s in speeds if not s.compile]
    return [(s, t) for t in threads for s in (speeds if t == threads[0] else speeds[:2])]


def variant_label(speed: Speed, threads: int) -> str:
    return f"{speed.label()}, {threads} thread{'s' if threads > 1 else ''}"


# -- measuring ---------------------------------------------------------------------------------------

def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0, time.process_time() - c0


def _with_threads(n: int, fn: Callable[[], Any]) -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def _recon_mse(method: Any, codes: torch.Tensor, images: torch.Tensor) -> float:
    with torch.no_grad():
        return float((method.bundle.generator.synthesis(codes.float()) - images).pow(2).mean())


def measure(method: Any, images: torch.Tensor, variants: Sequence[tuple[Speed, int]], steps: int = STEPS,
            rounds: int = ROUNDS, say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Time ``steps`` Adam steps of the prepared optimisation ``method`` on ``images`` [B, 3, H, W] for
    each (speed, threads) variant, interleaved over ``rounds``. The first variant is the reference."""
    device, B = images.device, images.shape[0]
    calls = {}
    for speed, threads in variants:
        def call(speed=speed, threads=threads):
            method.speed = speed
            return _with_threads(threads, lambda: method.optimise(images, steps))
        calls[variant_label(speed, threads)] = call
    first = {}
    for label, call in calls.items():  # untimed first call: compile (if any), allocator, kernel choice
        say(f"speed: first call of {method.name} ({label}) ...")
        first[label] = _timed(call, device)[1]
    wall: dict[str, list[float]] = {k: [] for k in calls}
    cpu: dict[str, list[float]] = {k: [] for k in calls}
    codes = {}
    for _ in range(max(1, rounds)):
        for label, call in calls.items():
            out, w, c = _timed(call, device)
            wall[label].append(w)
            cpu[label].append(c)
            codes[label] = out.codes
    ref = next(iter(calls))
    mse_ref = _recon_mse(method, codes[ref], images)
    out = {}
    for (speed, threads), label in zip(variants, calls):
        w, c = statistics.median(wall[label]), statistics.median(cpu[label])
        mse = _recon_mse(method, codes[label], images)
        out[label] = {"speed": speed.to_json(), "threads": threads, "s_per_image_step": w / (B * steps),
                      "cpu_s_per_image_step": c / (B * steps), "first_call_s": first[label],
                      "compile_s": max(0.0, first[label] - w),
                      "max_code_diff": float((codes[label] - codes[ref]).abs().max()),
                      "mse_rel_diff": abs(mse - mse_ref) / max(mse_ref, 1e-12),
                      "ratio": statistics.median(wall[ref]) / w}
    method.speed = EAGER
    return {"batch": B, "steps": steps, "rounds": max(1, rounds), "reference": ref, "variants": out}


def within_tolerance(v: dict[str, Any]) -> bool:
    return v["max_code_diff"] <= CODE_TOLERANCE and v["mse_rel_diff"] <= MSE_TOLERANCE


def best_variant(m: dict[str, Any], image_steps: float, threads: int) -> tuple[str, dict[str, Any]]:
    """The variant (at ``threads``) with the least expected time for ``image_steps`` image-steps,
    its compile counted once; only variants within tolerance."""
    ok = {k: v for k, v in m["variants"].items() if v["threads"] == threads and within_tolerance(v)}
    ok = ok or {m["reference"]: m["variants"][m["reference"]]}

    def cost(v: dict[str, Any]) -> float:
        return v["s_per_image_step"] * image_steps + (v["compile_s"] if v["speed"]["compile"] else 0.0)
    label = min(ok, key=lambda k: cost(ok[k]))
    return label, ok[label]


# -- the cache ---------------------------------------------------------------------------------------

def cache_key(method: Any, bundle: Any, batch: int) -> str:
    return f"{method.name}|{bundle.name}|{bundle.fingerprint}|batch {batch}"


def load_cache(path: Path, fp_id: str) -> dict[str, Any]:
    """The measurements of this machine (empty when the file is absent, unreadable or of another machine)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("version") != CACHE_VERSION or data.get("fingerprint_id") != fp_id:
        return {}
    return dict(data.get("methods", {}))


def save_cache(path: Path, fp: dict[str, Any], methods: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps({"version": CACHE_VERSION, "fingerprint_id": fingerprint_id(fp),
                                  "fingerprint": fp, "methods": methods}, indent=2) + "\n", path)


def cache_path(results_dir: Path) -> Path:
    return Path(results_dir) / "cache" / CACHE_NAME


def choose(method: Any, images: torch.Tensor, image_steps: float, results_dir: Path,
           say: Callable[[str], None] = print) -> tuple[Speed, Optional[dict[str, Any]]]:
    """The speed to run ``method`` (prepared) with for ``image_steps`` image-steps of batches like
    ``images``: from this machine's cached measurement, measured now when there is none. Returns the
    speed and the chosen variant's record (None: not an optimisation method, eager)."""
    if not callable(getattr(method, "optimise", None)):
        return EAGER, None
    device = images.device
    fp = machine_fingerprint(device)
    path = cache_path(results_dir)
    cached = load_cache(path, fingerprint_id(fp))
    key = cache_key(method, method.bundle, images.shape[0])
    threads = torch.get_num_threads()
    m = cached.get(key)
    if m is None or not any(v["threads"] == threads for v in m["variants"].values()):
        say(f"bench: {method.name}: measuring eager vs compiled on this machine (once; cached in {path}) ...")
        variants = [(s, threads) for s in (EAGER, Speed(compile=True)) if not s.compile or fp["compiler"] == "ok"]
        if has_bf16(fp):
            variants.append((Speed(autocast="bf16"), threads))
        m = measure(method, images, variants)
        save_cache(path, fp, {**load_cache(path, fingerprint_id(fp)), key: m})
    label, v = best_variant(m, image_steps, threads)
    return Speed.from_json(v["speed"]), {"variant": label, **v}
