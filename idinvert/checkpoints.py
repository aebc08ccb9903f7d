"""Safe loading of weight files: no file we read can run code on this machine.

Python pickles can call any function while they are being read, and most checkpoint formats are
pickles. The policy here:

- PyTorch files (`.pth`, `.pt`) are read with `torch.load(weights_only=True)`, whose unpickler builds
  only tensors and plain containers. `argparse.Namespace` is also admitted, because rosinality's
  training checkpoints store their command-line `args` in one (building a Namespace and setting its
  attributes runs no user code).
- NVIDIA StyleGAN pickles (`.pkl`) are refused, always. Reading them means unpickling NVIDIA's network
  classes (`dnnlib`, `torch_utils`), i.e. running code from the file. There is deliberately no
  `--trust-pickle` switch: convert the pickle once, with a tool you trust and in an environment where
  you accept that risk (e.g. rosinality's `convert_weight.py`), to a rosinality `.pt`, which then
  loads here without unpickling anything but tensors. `refuse_pickle` explains this to the user.
- NumPy object arrays (`.npy` with dtype object, e.g. the official idinvert boundary files) are read by
  `load_npy_restricted`, whose unpickler admits only NumPy array/dtype reconstruction and plain
  containers (dict, list, tuple, str, bytes, int, float, bool, None) and raises on anything else.
"""

from __future__ import annotations

import argparse
import importlib
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from idinvert.errors import UserError

__all__ = [
    "CheckpointError",
    "CheckpointMissing",
    "UnsafeCheckpointError",
    "PICKLE_SUFFIXES",
    "safe_torch_load",
    "refuse_pickle",
    "RestrictedNumpyUnpickler",
    "restricted_pickle_loads",
    "load_npy_restricted",
]

PICKLE_SUFFIXES = (".pkl", ".pickle")

# Globals that torch's weights-only unpickler may build in addition to its own allowlist.
_EXTRA_TORCH_SAFE_GLOBALS = [argparse.Namespace]

# A legacy (pre-zip) torch.save file starts with a pickled magic number; these are its bytes.
_LEGACY_TORCH_MAGIC = b"\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


class CheckpointError(UserError, ValueError):
    """A weight file exists but cannot be used (not a checkpoint, wrong contents, refused)."""


class CheckpointMissing(CheckpointError, FileNotFoundError):
    """A weight file is not where it should be."""


class UnsafeCheckpointError(CheckpointError):
    """A file would need arbitrary code (pickled classes or functions) to be loaded; refused."""


def refuse_pickle(path, what: str = "checkpoint") -> None:
    """Raise UnsafeCheckpointError explaining why an NVIDIA `.pkl` is not loaded and what to do."""
    raise UnsafeCheckpointError(
        f"refusing to load {what} {path}: it is a Python pickle (NVIDIA StyleGAN .pkl format). "
        "Loading a pickle executes code stored in the file (here NVIDIA's dnnlib/torch_utils network "
        "classes), so idinvert-bench never unpickles one, and there is no switch to make it. "
        "Convert it once, with a tool you trust and in an environment where you accept that risk "
        "(e.g. rosinality/stylegan2-pytorch's `convert_weight.py --repo NVIDIA_STYLEGAN2_DIR FILE.pkl`), "
        "to a rosinality .pt checkpoint (a dict with 'g_ema' and 'latent_avg'), and pass that instead.")


def _is_raw_pickle(path: Path) -> bool:
    """True for a bare pickle stream (e.g. a renamed NVIDIA .pkl): starts with the pickle PROTO
    opcode but is neither a zip (torch.save's format) nor a legacy torch file (whose first pickled
    object is torch's magic number)."""
    with open(path, "rb") as f:
        head = f.read(64)
    return head[:1] == b"\x80" and _LEGACY_TORCH_MAGIC not in head and not zipfile.is_zipfile(path)


def _describe_non_checkpoint(path: Path) -> str:
    """Why a file that torch.load could not read is not a checkpoint (best guess from its bytes)."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "the file is empty"
    if zipfile.is_zipfile(path):
        return "it is a zip archive but not a readable PyTorch checkpoint (truncated or damaged?)"
    if _LEGACY_TORCH_MAGIC in head:
        return "it is a legacy PyTorch file that could not be read (truncated or damaged?)"
    return "it is not a PyTorch checkpoint (torch.save zip or legacy format)"


def safe_torch_load(path, *, what: str = "checkpoint", expected_location: Optional[str] = None,
                    map_location="cpu", mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)` with errors that say what went wrong and what to do.

    what: what the file is, for messages ("generator weights"); expected_location: a hint where
    the file should be put, appended to the missing-file message; mmap: map the tensors' storage
    instead of reading it (cheap shape checks of big files; zip-format files only, others are read).
    Raises CheckpointMissing (file absent), UnsafeCheckpointError (a `.pkl`, or a file that needs
    pickled code), CheckpointError (anything else that is not a readable checkpoint).
    """
    path = Path(path)
    if not path.exists():
        hint = f"; it goes at {expected_location}" if expected_location else ""
        raise CheckpointMissing(f"{what} not found: {path}{hint}")
    if path.is_dir():
        raise CheckpointError(f"{what} path {path} is a directory, expected a file")
    if path.suffix.lower() in PICKLE_SUFFIXES or _is_raw_pickle(path):
        refuse_pickle(path, what)
    try:
        with torch.serialization.safe_globals(_EXTRA_TORCH_SAFE_GLOBALS):
            if mmap and zipfile.is_zipfile(path):
                return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # The weights-only unpickler met something it will not build (a class or function).
        detail = str(e).strip().splitlines()
        reason = next((ln.strip() for ln in detail if "GLOBAL" in ln or "Unsupported" in ln),
                      detail[-1].strip() if detail else "")
        if "Unsupported operand" in reason:
            raise CheckpointError(
                f"{what} {path} cannot be read by the weights-only loader ({reason}; e.g. a legacy "
                f"torch.save file written with a pickle protocol above 2). Re-save it with a current "
                f"torch.save, using a tool you trust.") from None
        raise UnsafeCheckpointError(
            f"refusing to load {what} {path}: it contains pickled objects other than tensors and "
            f"plain containers, which could run code when loaded ({reason}). Re-save only the state "
            f"dict (torch.save(model.state_dict(), ...)) with a tool you trust.") from None
    except MemoryError:
        raise
    except Exception as e:  # torch reports damaged or foreign files in many ways
        raise CheckpointError(f"{what} {path} is not a valid checkpoint: "
                              f"{_describe_non_checkpoint(path)} ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None


# --------------------------------------------------------------------------------------------------
# Restricted unpickling of NumPy object arrays
# --------------------------------------------------------------------------------------------------

def _numpy_multiarray():
    for name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("cannot find numpy's multiarray module")


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """`_codecs.encode` as NumPy's Python-2-compatible pickles use it (str -> bytes via latin1)."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1") \
            or not isinstance(text, str):
        raise pickle.UnpicklingError(f"restricted unpickler: _codecs.encode with encoding "
                                     f"{encoding!r} is not allowed")
    return text.encode("latin1", errors)


class RestrictedNumpyUnpickler(pickle.Unpickler):
    """Unpickler that builds only NumPy arrays, dtypes and scalars plus plain containers.

    Plain containers and scalars (dict, list, tuple, str, bytes, int, float, bool, None) come from
    pickle opcodes that call nothing; the only named callables allowed are NumPy's array, dtype and
    scalar reconstructors and a latin1-only `_codecs.encode`. Anything else (e.g. `os.system`,
    `builtins.eval`, any class) raises pickle.UnpicklingError naming it, before it is called.
    """

    def find_class(self, module: str, name: str):
        multiarray = _numpy_multiarray()
        allowed = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy.core.multiarray", "scalar"): multiarray.scalar,
            ("numpy._core.multiarray", "scalar"): multiarray.scalar,
            ("_codecs", "encode"): _latin1_encode,
        }
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(
            f"restricted unpickler: refusing global '{module}.{name}' (only NumPy arrays and plain "
            "containers may be loaded; this file would run other code)")


def restricted_pickle_loads(data: bytes) -> Any:
    """Unpickle `data` with RestrictedNumpyUnpickler."""
    return RestrictedNumpyUnpickler(io.BytesIO(data)).load()


def load_npy_restricted(path) -> np.ndarray:
    """Read a `.npy` file; object arrays are unpickled with RestrictedNumpyUnpickler.

    Numeric arrays are read as usual (no pickle involved). Raises FileNotFoundError, ValueError
    (not a .npy file) or pickle.UnpicklingError (object array needing anything but NumPy arrays
    and plain containers), never executing code from the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such .npy file: {path}")
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
        except ValueError as e:
            raise ValueError(f"{path} is not a .npy file: {e}") from None
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"{path}: unsupported .npy format version {version}")
        if not dtype.hasobject:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        # NumPy writes object arrays as one pickle of the whole array after the header.
        array = RestrictedNumpyUnpickler(f).load()
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path}: the pickled payload is a {type(array).__name__}, not an array")
    if array.shape != tuple(shape):
        raise ValueError(f"{path}: header says shape {tuple(shape)}, payload has {array.shape}")
    return array
