"""Attribute boundaries: the common `Boundary` record and readers for the official boundary files.

A boundary is the unit normal of a hyperplane in latent space separating an attribute's two sides
(InterFaceGAN). The official In-Domain GAN Inversion release ships W+ boundaries for FFHQ-256
(`boundaries/stylegan_ffhq256/{age,expression,eyeglasses,gender,pose}.npy`): NumPy *object* arrays
holding `{'boundary': float32 [1, L, D], 'meta_data': {'manipulate_layers': [layer indices]}}`.
InterFaceGAN ships plain float arrays `[1, D]` for W space. Both are read here; the object arrays
through `idinvert.checkpoints.load_npy_restricted`, which never runs code from the file.

Representation chosen for `Boundary`: `normal` is always a W+ tensor `[L, D]` with every row filled
(a W boundary `[1, D]` is repeated on all L rows), and `layers` lists the rows an edit changes and a
distance is measured on (`idinvert.editing`). Rows outside `layers` are kept as stored but unused.
Rows in `layers` are unit norm (normalised on construction), except for a joint normal (`meta
["normalisation"] == "joint"`, `idinvert.boundary_constructions`): its rows keep their proportions,
scaled to mean squared norm 1, so an edit of strength alpha still moves the signed distance by alpha.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from idinvert.checkpoints import load_npy_restricted
from idinvert.errors import UsageError

__all__ = ["Boundary", "BoundaryFileError", "load_boundary_file", "load_boundary_dir"]


class BoundaryFileError(UsageError, ValueError):
    """A boundary file or folder cannot be used (unknown format, shape mismatch, missing)."""


@dataclass
class Boundary:
    """One attribute's boundary in W+.

    attribute: name (the file stem for loaded files); normal: [L, D] float32; layers: W+ rows the
    boundary applies to (sorted, unique, within [0, L)); source: where it came from (a path, or e.g.
    "svm on 10000 samples"); val_accuracy: held-out accuracy of the classifier that produced it,
    where known; offset: signed-distance offset (the SVM intercept over ||coef||; 0 for the official
    files, whose hyperplanes pass through the origin); meta: anything else worth keeping (the
    official files' `meta_data`, training statistics).

    Distances and edits: `idinvert.editing.signed_distance` / `edit_codes`.
    """

    attribute: str
    normal: torch.Tensor
    layers: list[int]
    source: str
    val_accuracy: Optional[float] = None
    offset: float = 0.0
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        normal = torch.as_tensor(self.normal, dtype=torch.float32).detach().clone()
        if normal.ndim != 2:
            raise BoundaryFileError(f"boundary '{self.attribute}' ({self.source}): normal must be "
                                    f"[L, D], got shape {tuple(normal.shape)}")
        num_layers = normal.shape[0]
        layers = sorted({int(i) for i in (range(num_layers) if self.layers is None else self.layers)})
        if not layers:
            raise BoundaryFileError(f"boundary '{self.attribute}' ({self.source}): no layers")
        bad = [i for i in layers if not 0 <= i < num_layers]
        if bad:
            raise BoundaryFileError(f"boundary '{self.attribute}' ({self.source}): layer indices "
                                    f"{bad} outside [0, {num_layers})")
        norms = normal[layers].norm(dim=1)
        joint = (self.meta or {}).get("normalisation") == "joint"
        if not torch.isfinite(normal).all() or (norms.max() if joint else norms.min()) < 1e-12:
            raise BoundaryFileError(f"boundary '{self.attribute}' ({self.source}): zero or "
                                    f"non-finite normal on an applied layer")
        # a joint normal (one direction over all its layers, idinvert.boundary_constructions) keeps its
        # rows' proportions, scaled to mean squared row norm 1; every other boundary has unit rows
        scale = norms.pow(2).mean().sqrt() if joint else norms[:, None]
        normal[layers] = normal[layers] / scale
        self.normal = normal
        self.layers = layers

    @property
    def num_layers(self) -> int:
        return self.normal.shape[0]

    @property
    def w_dim(self) -> int:
        return self.normal.shape[1]


def _shape_error(path: Path, found, num_layers, w_dim) -> BoundaryFileError:
    return BoundaryFileError(
        f"boundary file {path} has shape {tuple(found)}, which does not fit the generator's "
        f"W+ space [{num_layers}, {w_dim}] (expected [1, {num_layers}, {w_dim}], [{num_layers}, "
        f"{w_dim}], [1, {w_dim}] or [{w_dim}]); boundaries belong to one model")


def load_boundary_file(path, num_layers: Optional[int] = None, w_dim: Optional[int] = None,
                       attribute: Optional[str] = None) -> Boundary:
    """Read one boundary file: official idinvert W+ object array, or a plain float array.

    Accepted contents: a dict `{'boundary': [1, L, D] | [L, D] | [1, D] | [D], 'meta_data':
    {'manipulate_layers': [...]}}` (meta data optional; no layers listed means all), or a bare float
    array of one of those shapes. W boundaries are repeated on all `num_layers` rows (needed then).
    `num_layers`/`w_dim`, when given, are checked against the file; a mismatch is an error naming
    both shapes.
    """
    path = Path(path)
    arr, meta = _unpack(path, _read_npy(path))
    arr = _as_wplus(path, arr, num_layers, w_dim)
    layers = meta.get("manipulate_layers")
    if layers is None or len(layers) == 0:
        layers = list(range(arr.shape[0]))
    try:
        layers = [int(i) for i in layers]
    except (TypeError, ValueError):
        raise BoundaryFileError(f"{path}: manipulate_layers {layers!r} is not a list of integers") \
            from None
    val_accuracy = next((float(meta[k]) for k in ("val_accuracy", "accuracy") if meta.get(k) is not None), None)
    return Boundary(attribute=attribute or path.stem, normal=torch.from_numpy(np.ascontiguousarray(arr)),
                    layers=layers, source=str(path), val_accuracy=val_accuracy, meta=meta)


def _read_npy(path: Path) -> np.ndarray:
    """The array in a .npy file, read without unpickling arbitrary objects."""
    try:
        return load_npy_restricted(path)
    except FileNotFoundError:
        raise BoundaryFileError(f"boundary file not found: {path}") from None
    except Exception as e:  # unsafe pickle, not a .npy, ...
        raise BoundaryFileError(f"cannot read boundary file {path}: {e}") from None


def _unpack(path: Path, arr: np.ndarray) -> tuple[np.ndarray, dict]:
    """(the float boundary array, its meta data) of a file's content: the official {'boundary', 'meta_data'}
    object array, or a bare float array (no meta data)."""
    meta: dict = {}
    if arr.dtype == object:
        content = arr[()] if arr.shape == () else None
        if not isinstance(content, dict) or "boundary" not in content:
            raise BoundaryFileError(f"{path}: object array without a 'boundary' entry; expected the "
                                    "official {'boundary': ..., 'meta_data': ...} dict")
        meta = dict(content.get("meta_data") or {})
        arr = np.asarray(content["boundary"])
    if not np.issubdtype(arr.dtype, np.floating):
        raise BoundaryFileError(f"{path}: boundary has dtype {arr.dtype}, expected floating point")
    return arr, meta


def _as_wplus(path: Path, arr: np.ndarray, num_layers: Optional[int], w_dim: Optional[int]) -> np.ndarray:
    """A boundary of shape [1, L, D], [L, D], [1, D] or [D] as [L, D] (a W boundary repeated on all
    ``num_layers`` rows), checked against the generator's W+ shape where given."""
    shape = arr.shape
    if arr.ndim == 3 and shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise _shape_error(path, shape, num_layers, w_dim)
    if w_dim is not None and arr.shape[1] != w_dim:
        raise _shape_error(path, shape, num_layers, w_dim)
    if arr.shape[0] == 1 and (num_layers is None or num_layers != 1) and len(shape) < 3:
        # A W-space boundary: the same normal on every layer.
        if num_layers is None:
            raise BoundaryFileError(f"{path}: a W boundary {tuple(shape)} needs num_layers to be "
                                    "placed in W+")
        return np.repeat(arr, num_layers, axis=0)
    if num_layers is not None and arr.shape[0] != num_layers:
        raise _shape_error(path, shape, num_layers, w_dim)
    return arr


def load_boundary_dir(directory, num_layers: int, w_dim: int) -> dict[str, Boundary]:
    """All `*.npy` boundaries in a folder, keyed by attribute (file stem), checked against the
    generator's W+ shape [num_layers, w_dim]."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BoundaryFileError(f"boundary folder not found: {directory}")
    files = sorted(directory.glob("*.npy"))
    if not files:
        raise BoundaryFileError(f"no boundary files (*.npy) in {directory}")
    return {f.stem: load_boundary_file(f, num_layers, w_dim) for f in files}
