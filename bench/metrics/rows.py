"""What a set-level or semantic metric function returns: one ``MetricRow`` per stored value (standard
library only, so that metric modules and the store share it without importing each other)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass
class MetricRow:
    """One set-level metric value. ``arrays``: its per-unit ingredients, key -> (ids, array whose first
    axis follows ids) -- e.g. the embeddings behind a Fréchet distance -- stored beside the row so that
    a bootstrap over images can recompute the metric (``bench claims``)."""

    name: str
    value: float | None
    status: str = "ok"
    detail: dict[str, Any] = None  # type: ignore[assignment]
    arrays: dict[str, tuple[Sequence[str], Any]] | None = None

    def __post_init__(self) -> None:
        if self.detail is None:
            self.detail = {}
        for key, (ids, array) in (self.arrays or {}).items():
            if len(ids) != len(array):
                raise ValueError(f"metric {self.name}: ingredient {key!r} has {len(array)} rows for "
                                 f"{len(ids)} ids")

    @classmethod
    def unavailable(cls, name: str, reason: str, **detail: Any) -> "MetricRow":
        return cls(name, None, "unavailable", {"reason": reason, **detail})
