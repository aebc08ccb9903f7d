"""Strict state-dict loading that fails loudly and names every offending key, and the constructor record
(``config``) a network keeps so that its card can rebuild it before its weights are loaded.

The official idinvert code logs a warning and runs with random weights when a file is missing or
does not fit; here a mismatch is always an error that says exactly what is wrong.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from idinvert.errors import UserError

__all__ = ["StateDictMismatch", "check_state_dict", "load_state_dict_strict", "pyramid_config", "run_chain"]


class StateDictMismatch(UserError, ValueError):
    """A state dict does not fit a module: missing, unexpected or wrongly shaped entries."""


def check_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Human-readable problems with loading `state_dict` into `module` (empty list: it fits)."""
    own = module.state_dict()
    problems = []
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing:
        problems.append("missing keys: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected))
    for k, v in state_dict.items():
        if k in own and not isinstance(v, torch.Tensor):
            problems.append(f"{k}: not a tensor ({type(v).__name__})")
        elif k in own and tuple(v.shape) != tuple(own[k].shape):
            problems.append(f"shape mismatch for {k}: file has {tuple(v.shape)}, "
                            f"model expects {tuple(own[k].shape)}")
    return problems


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor],
                           source_name: str = "state dict") -> nn.Module:
    """Load `state_dict` into `module` with strict keys and shapes; dtypes are cast to the module's.

    Raises StateDictMismatch (a ValueError) listing every missing key, unexpected key and shape
    mismatch by name, prefixed with `source_name` (e.g. the file path).
    """
    problems = check_state_dict(module, state_dict)
    if problems:
        raise StateDictMismatch(f"{source_name} does not fit {type(module).__name__}: "
                                + "; ".join(problems))
    own = module.state_dict()
    cast = {k: v.to(dtype=own[k].dtype) for k, v in state_dict.items()}
    module.load_state_dict(cast, strict=True)
    return module


def pyramid_config(resolution: int, **settings) -> dict:
    """The ``config`` of a network whose blocks halve images from ``resolution`` down to 4 x 4 (the
    embedded domain's classifier, discriminator and judge): its constructor keywords, resolution first.
    Refuses a resolution that is not a power of two >= 8."""
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
    return dict(resolution=resolution, **settings)


def run_chain(module: nn.Module, prefix: str, count: int, x: torch.Tensor) -> torch.Tensor:
    """x through ``module``'s submodules ``<prefix>0`` .. ``<prefix><count - 1>`` in order: the official
    layouts name their layers so (not an ``nn.Sequential``) for their checkpoints' keys to load."""
    for i in range(count):
        x = getattr(module, f"{prefix}{i}")(x)
    return x
