"""What the timing commands share: the optimisation method under test and the images it inverts."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from bench import defaults
from bench.cli_table import Opt, opt, parser_of


def build_method(iters: int, name: str = "idinvert"):
    """The method at ``iters`` steps, on all images it is given (no max_images subset)."""
    from methods.registry import build, get

    params = {"iters": str(iters)}
    if "max_images" in get(name).hyperparameters():
        params["max_images"] = "0"
    return build(name, params)


def load_images(bundle: Any, n: int, seed: int, tiny: bool) -> torch.Tensor:
    """Test images of the bundle's built-in domain, or G's own samples (a random test bundle, or a
    bundle without a built-in domain)."""
    from idinvert.domains import domain_of

    domain = None if tiny or bundle.info.random else domain_of(bundle)
    if domain is not None:
        return domain.split("test", n).load(list(range(n)))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        g = bundle.generator
        return g.synthesis(g.sample_wp(n, gen)).clamp(-1, 1).cpu()


def emit(out: dict, path: Path | None) -> dict:
    """A timing command's result: printed as JSON, and written to ``path`` when given."""
    text = json.dumps(out, indent=1)
    print(text)
    if path:
        path.write_text(text)
    return out


def timer_parser(prog: str, doc: str, steps: int, *more: Opt) -> argparse.ArgumentParser:
    """A timer's parser (``python -m bench.tools.<name>``; description: the first paragraph of ``doc``):
    the options every timer has -- the bundle, how many of its test images, steps, repeats -- then ``more``."""
    common = (opt("--bundle", default=defaults.BUNDLE), opt("--images", type=int, default=32),
              opt("--steps", type=int, default=steps), opt("--repeats", type=int, default=3))
    return parser_of(prog, common + more, doc.split("\n\n")[0])


def interleaved_times(runs: dict[str, Callable[[], Any]], repeats: int
                      ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, Any]]:
    """Every run ``repeats`` times, interleaved (a, b, a, b, ...) so that a busy shared machine slows all
    of them alike: ({name: wall seconds}, {name: process CPU seconds, all threads}, {name: last result})."""
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    last: dict[str, Any] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            last[name] = run()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu, last
