"""How an optimisation loop runs its networks: eager or compiled (``torch.compile``, inductor on the CPU
and on CUDA), in fp32 or under bf16/fp16 autocast. The numbers are the same up to float rounding
(compiled: fused kernels round differently; tested in ``tests/test_speed.py`` within ``CODE_TOLERANCE``);
which is faster depends on the machine, so ``bench perf`` measures it and the runner uses the measured
best (``bench.speed_choice``).

Compiling happens once per process, network and input shape (``compiled`` keeps one compiled wrapper
per module; ``dynamic=False``: a new batch size is one more compile, not a slower dynamic-shape graph).
The first call at a new shape pays the compile (tens of seconds on a 2-core CPU), so callers warm up
untimed and report that time apart. Without a working compiler (no C++ compiler for inductor on the
CPU, no Triton on CUDA, or a compile that fails) the networks run eagerly and ``notes()`` says why, in
one line. The compiler's own logs and warnings are kept off the user's terminal (``quiet_compiler``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch

__all__ = ["Speed", "EAGER", "compiled", "compiler_problem", "notes", "quiet_compiler", "AUTOCAST_DTYPES", "forget",
           "CODE_TOLERANCE"]

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Max abs difference of the final codes of a compiled and an eager run of the same loop (tiny bundle,
# a few Adam steps): fused kernels change the last bits, and Adam's first steps (close to sign(grad))
# turn a sign flip of a near-zero gradient into a full lr-sized step, so the bound is a few lr.
CODE_TOLERANCE = 5e-2

_NOTES: list[str] = []
_COMPILED: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_BROKEN: set[str] = set()


@dataclass(frozen=True)
class Speed:
    """compile: run the networks through ``torch.compile``; autocast: None (fp32), "bf16" or "fp16"."""

    compile: bool = False
    autocast: Optional[str] = None

    def __post_init__(self) -> None:
        if self.autocast is not None and self.autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast must be one of {sorted(AUTOCAST_DTYPES)} or None, got {self.autocast!r}")

    def run(self, net: Any) -> Any:
        """The callable to use for ``net`` (itself when eager or when compiling is unavailable)."""
        return compiled(net) if self.compile else net

    def context(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Autocast around the loss (a no-op in fp32)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[self.autocast])

    def label(self) -> str:
        return f"{'compiled' if self.compile else 'eager'} {self.autocast or 'fp32'}"

    def to_json(self) -> dict:
        return {"compile": self.compile, "autocast": self.autocast}

    @classmethod
    def from_json(cls, d: dict) -> "Speed":
        return cls(compile=bool(d.get("compile", False)), autocast=d.get("autocast"))


EAGER = Speed()


def compiler_problem(device_type: str = "cpu") -> Optional[str]:
    """Why ``torch.compile`` cannot work here (one line), or None when it can."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if device_type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:
            return "no Triton module in this torch (inductor needs it on CUDA)"
        return None if has_triton() else "Triton is not installed (inductor needs it on CUDA)"
    cxx = os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None and shutil.which("c++") is None and shutil.which("clang++") is None:
        return f"no C++ compiler ({cxx}, c++ or clang++) on PATH (inductor needs one on the CPU)"
    return None


def notes() -> list[str]:
    """One line per reason this process fell back to eager (empty when every compile worked)."""
    return list(_NOTES)


def _note(line: str) -> None:
    if line not in _NOTES:
        _NOTES.append(line)


def quiet_compiler() -> None:
    """Keep dynamo's and inductor's log records and warnings (graph breaks, recompiles, the
    'no CUDA runtime' line) off the terminal; errors still raise."""
    for name in ("torch._dynamo", "torch._inductor", "torch._functorch", "torch.fx",
                 "torch.utils.cpp_extension", "torch._subclasses"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"torch\._(dynamo|inductor|functorch)")


def compiled(net: Any) -> Any:
    """``net`` compiled once per process (one wrapper per module, recompiled per new input shape), or
    ``net`` itself with a note when no compiler works here."""
    device = _device_type(net)
    problem = compiler_problem(device)
    if problem is not None or device in _BROKEN:
        _note(f"networks run eagerly: {problem or 'an earlier compile failed'}")
        return net
    if net not in _COMPILED:
        quiet_compiler()
        _COMPILED[net] = _Fallback(net, torch.compile(net, dynamic=False), device)
    return _COMPILED[net]


class _Fallback:
    """Calls the compiled network; if compiling it fails, notes why and runs ``net`` eagerly from then on."""

    def __init__(self, net: Any, fast: Callable, device: str):
        self.net, self.fast, self.device = net, fast, device

    def __call__(self, *args: Any) -> Any:
        if self.fast is not None:
            try:
                with _quiet_stderr_warnings():
                    return self.fast(*args)
            except Exception as exc:  # a backend failure must not lose the run: eager gives the same numbers
                if not _is_compile_error(exc):
                    raise
                _BROKEN.add(self.device)
                _note(f"networks run eagerly: torch.compile failed ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:160] if str(exc) else ''})")
                self.fast = None
        return self.net(*args)


def _is_compile_error(exc: Exception) -> bool:
    mod = type(exc).__module__ or ""
    return mod.startswith(("torch._dynamo", "torch._inductor")) or "CppCompileError" in type(exc).__name__


@contextlib.contextmanager
def _quiet_stderr_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _device_type(net: Any) -> str:
    if isinstance(net, torch.nn.Module):
        for t in list(net.parameters()) + list(net.buffers()):
            return t.device.type
    return "cpu"


def forget() -> None:
    """Drop the compiled wrappers and notes of this process (tests; a changed network)."""
    _COMPILED.clear()
    _NOTES.clear()
    _BROKEN.clear()
