"""Shared machinery for the zoo's training loops: atomic checkpoints, resume, EMA, loss logs, export.

Every training loop here keeps its state in a work directory:
    <work_dir>/checkpoint.pt   latest resumable state (written atomically: temp file, then rename)
    <work_dir>/log.jsonl       one JSON object per logged step (appended; truncated back on resume)
A killed run restarted with the same config and work dir continues from the last checkpoint.

A work dir holds caches (rendered images, sample grids) that need not survive a change of machine; a
*carry dir* (`carry_state` / `restore_carried_state`) mirrors only what resuming needs -- the
checkpoint, the log and small fp16 copies of any snapshots -- so that it can live in a git-tracked
folder and the next sitting, on any machine, resumes from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
import torch.nn as nn

from idinvert.utils import atomic_save, atomic_write_text  # noqa: F401  (re-exported)

__all__ = [
    "atomic_save", "atomic_write_text", "load_checkpoint", "save_checkpoint", "CHECKPOINT_NAME",
    "LossLog", "ema_update", "export_fp16_state_dict", "fp16_rounded", "load_fp16_state_dict", "config_dict",
    "check_resume_config", "progress", "rng_state", "set_rng_state", "Stopwatch",
    "carry_state", "restore_carried_state", "builtin_domain",
]

CHECKPOINT_NAME = "checkpoint.pt"


def builtin_domain(name: str, resolution: int):
    """The domain a zoo config names (only the synthetic faces are built in)."""
    if name != "synthetic-faces":
        raise ValueError(f"unknown domain {name!r} (only 'synthetic-faces' is built in)")
    from idinvert.domains.synthetic_faces import SyntheticFaces
    return SyntheticFaces(resolution=resolution)


def config_dict(config: Any) -> dict:
    """A dataclass config as a plain JSON-able dict."""
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


def save_checkpoint(work_dir: str | os.PathLike, state: dict) -> Path:
    """Atomically write the resumable training state to <work_dir>/checkpoint.pt."""
    return atomic_save(state, Path(work_dir) / CHECKPOINT_NAME)


def load_checkpoint(work_dir: str | os.PathLike) -> Optional[dict]:
    """The state saved by save_checkpoint, or None when the work dir has none yet.

    Checkpoints hold optimizer and RNG state (not only tensors), written by this code itself, so
    they are read with weights_only=False; shipped weights are plain tensors loaded weights_only.
    """
    path = Path(work_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def _fp16_copy(obj):
    if isinstance(obj, torch.Tensor):
        return obj.half() if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: _fp16_copy(v) for k, v in obj.items()}
    return obj


def carry_state(work_dir: str | os.PathLike, carry_dir: str | os.PathLike,
                snapshot_glob: Optional[str] = None) -> None:
    """Mirror what resuming needs from work_dir into carry_dir: the checkpoint and log.jsonl as they
    are, and each file matching `snapshot_glob` (relative to work_dir) as an fp16 copy, written once.
    Every write is atomic, so a kill mid-mirror leaves the previous carried state whole."""
    work_dir, carry_dir = Path(work_dir), Path(carry_dir)
    carry_dir.mkdir(parents=True, exist_ok=True)
    ckpt = work_dir / CHECKPOINT_NAME
    if ckpt.exists():
        _atomic_copy(ckpt, carry_dir / CHECKPOINT_NAME)
    log = work_dir / "log.jsonl"
    if log.exists():
        _atomic_copy(log, carry_dir / "log.jsonl")
    for path in sorted(work_dir.glob(snapshot_glob)) if snapshot_glob else ():
        target = carry_dir / path.relative_to(work_dir)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_save(_fp16_copy(torch.load(path, map_location="cpu", weights_only=True)), target)


def restore_carried_state(carry_dir: Optional[str | os.PathLike], work_dir: str | os.PathLike) -> bool:
    """When work_dir has no checkpoint and carry_dir has one, copy the carried files into work_dir
    (snapshots stay fp16; loading them into a model casts them back). Returns whether it did."""
    if carry_dir is None:
        return False
    carry_dir, work_dir = Path(carry_dir), Path(work_dir)
    if (work_dir / CHECKPOINT_NAME).exists() or not (carry_dir / CHECKPOINT_NAME).exists():
        return False
    for path in sorted(p for p in carry_dir.rglob("*") if p.is_file()):
        target = work_dir / path.relative_to(carry_dir)
        if path.name != CHECKPOINT_NAME:
            target.parent.mkdir(parents=True, exist_ok=True)
            _atomic_copy(path, target)
    _atomic_copy(carry_dir / CHECKPOINT_NAME, work_dir / CHECKPOINT_NAME)   # last: it marks "restored"
    return True


def _atomic_copy(src: Path, dst: Path) -> None:
    import shutil
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def check_resume_config(saved: dict, current: dict, ignore: Iterable[str] = ()) -> None:
    """Refuse to resume a checkpoint made with different settings (fields in `ignore` may differ,
    e.g. the total length of training, which may be extended)."""
    diffs = [k for k in sorted(set(saved) | set(current))
             if k not in ignore and saved.get(k) != current.get(k)]
    if diffs:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in diffs)
        raise ValueError(f"cannot resume: the work dir's checkpoint was made with other settings "
                         f"({details}); use a fresh work dir")


def rng_state() -> dict:
    """The global torch RNG state (CPU, and CUDA when present), for exact resumption."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class LossLog:
    """Append-only JSON-lines log of training losses; on resume it drops lines past the checkpoint
    (rows whose `key`, the step or the kimg, is past `resume_step` in that unit)."""

    def __init__(self, path: str | os.PathLike, resume_step: Optional[float] = None, key: str = "step"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            keep = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get(key, 0) <= resume_step + 1e-9]
            atomic_write_text("".join(line + "\n" for line in keep), self.path)

    def write(self, **row: Any) -> None:
        clean = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in row.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema_params <- beta * ema_params + (1 - beta) * params; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def fp16_rounded(module: nn.Module, build) -> nn.Module:
    """A fresh ``build()`` holding ``module``'s weights rounded to fp16: the network as shipped."""
    shipped = build()
    shipped.load_state_dict({k: v.half().float() for k, v in module.state_dict().items()})
    return shipped


def export_fp16_state_dict(module: nn.Module, path: str | os.PathLike,
                           card: Optional[dict] = None) -> Path:
    """Save the module's state dict with floating tensors in fp16 (atomically), plus `card` as JSON
    beside it (same name, .json). Loadable with torch.load(weights_only=True)."""
    sd = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu())
          for k, v in module.state_dict().items()}
    path = atomic_save(sd, path)
    if card is not None:
        atomic_write_text(json.dumps(card, indent=2, sort_keys=False) + "\n", path.with_suffix(".json"))
    return path


def load_fp16_state_dict(module: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Strictly load an exported (fp16) state dict into `module`, casting to the module's dtypes."""
    from idinvert.nets.loading import load_state_dict_strict
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {path}")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return load_state_dict_strict(module, sd, str(path))


def progress(total: int, initial: int = 0, desc: str = "", unit: str = "step", enabled: bool = True):
    """A tqdm bar (to stderr); disabled quietly when tqdm is unavailable or `enabled` is False."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        enabled = False
    if not enabled:
        class _Null:
            def update(self, n=1): pass
            def set_postfix(self, *a, **k): pass
            def close(self): pass
        return _Null()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                mininterval=5.0)


class Stopwatch:
    """Wall time that survives resumption: seconds spent in earlier runs plus this run's."""

    def __init__(self, previous: float = 0.0):
        self.previous = previous
        self.start = time.time()

    def total(self) -> float:
        return self.previous + time.time() - self.start
