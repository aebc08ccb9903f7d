"""`ImageSet`: the one thing a domain hands to the runner — ids, labels and a lazy image loader."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence, Union

import torch
from torch import Tensor

LABEL_SOURCES = ("renderer", "csv", "classifier", "none")

Indices = Union[int, slice, range, Sequence[int], Tensor]

# A folder holding one of these files is a results folder written by the benchmark harness (its SQLite
# store); readers of user folders never take such a folder, or anything under it, as input images.
OUTPUT_MARKERS = ("bench.sqlite",)


def fingerprint_of(*parts: object) -> str:
    """A short stable hash (hex sha256, 16 chars) of the `repr` of everything that determines a set."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode("utf-8"))
        digest.update(b"\x1f")  # separator, so ("ab", "c") and ("a", "bc") differ
    return digest.hexdigest()[:16]


@dataclass(eq=False, repr=False)  # eq on tensors is ambiguous; a 50k-id repr is noise
class ImageSet:
    """A fixed, ordered set of images with stable ids and (optional) attribute labels.

    Images are produced on demand by `loader(indices: list[int]) -> Tensor[n, 3, R, R]` so a 50k-image
    split costs nothing until it is read.

    name:         human-readable name, e.g. "synthetic-faces/test" or "folder:/data/faces"
    ids:          one stable id per image (e.g. "test-000042" or a relative file name)
    fingerprint:  hash of everything that determines the images (a cache / result key)
    attributes:   attribute names, one per label column
    labels:       int64 [N, A] in {0, 1}, or None when unknown
    label_source: "renderer" | "csv" | "classifier" | "none"
    loader:       indices -> float32 [n, 3, R, R] in [-1, 1]
    resolution:   R
    skipped:      (file, reason) for every input that was left out
    true_codes:   float32 [N, L, D], the W+ codes that generated the images where they are known (the
                  known-answer set of G's own samples, ``idinvert.domains.generator_samples``), else None
    """

    name: str
    ids: list[str]
    fingerprint: str
    attributes: tuple[str, ...]
    labels: Tensor | None
    label_source: str
    loader: Callable[[list[int]], Tensor]
    resolution: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    true_codes: Tensor | None = None

    def __post_init__(self) -> None:
        self.ids = list(self.ids)
        self.attributes = tuple(self.attributes)
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"ImageSet {self.name!r}: ids are not unique")
        if self.label_source not in LABEL_SOURCES:
            raise ValueError(f"ImageSet {self.name!r}: label_source must be one of {LABEL_SOURCES}, "
                             f"got {self.label_source!r}")
        if self.labels is not None:
            if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.ids), len(self.attributes)):
                raise ValueError(f"ImageSet {self.name!r}: labels must be int64 [{len(self.ids)}, "
                                 f"{len(self.attributes)}], got {self.labels.dtype} {tuple(self.labels.shape)}")
        if self.true_codes is not None and (self.true_codes.ndim != 3 or self.true_codes.shape[0] != len(self.ids)):
            raise ValueError(f"ImageSet {self.name!r}: true_codes must be [{len(self.ids)}, L, D], got "
                             f"{tuple(self.true_codes.shape)}")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, n={len(self)}, resolution={self.resolution}, "
                f"attributes={self.attributes}, label_source={self.label_source!r}, "
                f"fingerprint={self.fingerprint!r}, skipped={len(self.skipped)})")

    def __len__(self) -> int:
        return len(self.ids)

    def _normalise(self, indices: Indices) -> list[int]:
        n = len(self)
        if isinstance(indices, slice):
            return list(range(n))[indices]
        if isinstance(indices, Tensor):
            indices = indices.reshape(-1).tolist()
        elif isinstance(indices, int):
            indices = [indices]
        out = []
        for i in indices:
            i = int(i)
            if not -n <= i < n:
                raise IndexError(f"ImageSet {self.name!r}: index {i} out of range for {n} images")
            out.append(i % n)
        return out

    def load(self, indices: Indices) -> Tensor:
        """Images for `indices` (int, slice, range, list or 1-D tensor): float32 [n, 3, R, R] in [-1, 1]."""
        idx = self._normalise(indices)
        r = self.resolution
        if not idx:
            return torch.empty(0, 3, r, r)
        images = self.loader(idx)
        if images.shape != (len(idx), 3, r, r):
            raise RuntimeError(f"ImageSet {self.name!r}: loader returned {tuple(images.shape)}, "
                               f"expected {(len(idx), 3, r, r)}")
        return images.to(torch.float32)

    def batches(self, batch_size: int) -> Iterator[tuple[list[int], Tensor]]:
        """Yield (indices, images) over the whole set, in order."""
        for start in range(0, len(self), batch_size):
            idx = list(range(start, min(start + batch_size, len(self))))
            yield idx, self.load(idx)

    @classmethod
    def from_tensor(cls, name: str, images: Tensor, labels: Tensor | None = None,
                    attributes: Sequence[str] = (), label_source: str | None = None,
                    ids: Sequence[str] | None = None) -> "ImageSet":
        """An in-memory set (tests, small experiments). images: [N, 3, R, R] in [-1, 1]."""
        images = images.detach().to(torch.float32).cpu()
        n = images.shape[0]
        ids = list(ids) if ids is not None else [f"{i:06d}" for i in range(n)]
        if label_source is None:
            label_source = "none" if labels is None else "classifier"
        return cls(name=name, ids=ids,
                   fingerprint=fingerprint_of("tensor", name, images.shape, images.sum().item(),
                                              images.abs().sum().item()),
                   attributes=tuple(attributes), labels=labels, label_source=label_source,
                   loader=lambda idx: images[idx].clone(), resolution=images.shape[-1])
