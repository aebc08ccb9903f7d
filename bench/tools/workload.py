"""What the timing commands share: the optimisation method under test and the images it inverts."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


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
