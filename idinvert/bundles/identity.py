"""The identity network's file: ArcFace IR-SE50 (`model_ir_se50.pth`, TreB1eN/InsightFace_Pytorch, as
shipped with pSp / e4e / ReStyle for their identity loss). Not part of any bundle: it enables the
benchmark's `id_similarity` metric on aligned faces, and nothing else uses it.

It goes in the weights folder (`--weights-dir DIR`, or the folder of `--weights-dir FILE.pt`; default
`$BENCH_HOME/weights`). Loaded with `torch.load(weights_only=True)` and strictly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from idinvert.checkpoints import CheckpointError, safe_torch_load
from idinvert.nets.irse import IRSE50
from idinvert.nets.loading import check_state_dict, load_state_dict_strict

__all__ = ["IDENTITY_FILE", "IDENTITY_SOURCE", "identity_weights_path", "identity_problem", "load_identity_network"]

IDENTITY_FILE = "model_ir_se50.pth"
IDENTITY_SOURCE = ("the pSp / e4e / ReStyle READMEs, 'Auxiliary Models' / 'IR-SE50 Model' (taken from "
                   "TreB1eN/InsightFace_Pytorch)")


def identity_weights_path(weights_dir: Optional[Path] = None) -> Path:
    """Where `model_ir_se50.pth` is looked for: the weights folder (a file's folder when `weights_dir` is
    a release file)."""
    from idinvert.real_bundles import resolve_weights_dir

    folder = resolve_weights_dir(weights_dir)
    return (folder.parent if folder.is_file() else folder) / IDENTITY_FILE


def identity_problem(path: Path) -> Optional[str]:
    """None when `path` holds IR-SE50 weights that fit; otherwise why not (missing: where it goes)."""
    if not path.is_file():
        return (f"ArcFace IR-SE50 weights are missing: put {IDENTITY_FILE} (from {IDENTITY_SOURCE}) at "
                f"{path} (or in the folder passed as --weights-dir)")
    try:
        sd = safe_torch_load(path, what="ArcFace IR-SE50 weights", mmap=True)
    except CheckpointError as exc:
        return str(exc)
    if not isinstance(sd, dict):
        return f"{path}: holds a {type(sd).__name__}, expected an IR-SE50 state dict"
    with torch.device("meta"):
        problems = check_state_dict(IRSE50(), sd)
    return f"{path} does not fit IR-SE50: {problems[0]}" if problems else None


def load_identity_network(path: Path) -> IRSE50:
    """IRSE50 from `path`, strictly, in eval mode without gradients."""
    problem = identity_problem(path)
    if problem:
        raise CheckpointError(problem)
    net = load_state_dict_strict(IRSE50(), safe_torch_load(path, what="ArcFace IR-SE50 weights"), str(path))
    return net.eval().requires_grad_(False)
