"""Strict state-dict loading that fails loudly and names every offending key.

The official idinvert code logs a warning and runs with random weights when a file is missing or
does not fit; here a mismatch is always an error that says exactly what is wrong.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from idinvert.errors import UserError

__all__ = ["StateDictMismatch", "check_state_dict", "load_state_dict_strict"]


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
