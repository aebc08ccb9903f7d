"""The method protocol: a dataclass of hyperparameters with ``prepare`` (untimed) and ``invert`` (timed).

A method knows nothing of metrics, files or the store. It receives the bundle once and then maps image
batches ``[B, 3, H, W]`` in ``[-1, 1]`` to W+ codes ``[B, L, D]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from idinvert.speed import EAGER, Speed


@dataclass
class InversionResult:
    """Codes for a batch; ``failed[i]`` marks an image whose inversion diverged (NaN/inf loss).

    ``decoders``: for a method whose output is more than a code (PTI tunes G per image), one generator
    per image (each with ``.synthesis(codes [1, L, D])``); the harness then decodes image i with
    ``decoders[i]`` instead of the bundle's G. None: every image decodes with the bundle's G.

    ``milestones``: for an anytime method, its state after some of its steps
    (``idinvert.inversion.Milestone``: ``step``, ``seconds`` since the start of ``invert`` (its own
    start codes included), ``codes`` [B, L, D], ``failed`` [B]); None: the result is one point.
    """

    codes: torch.Tensor  # [B, L, D]
    failed: torch.Tensor | None = None  # [B] bool
    reasons: list[str | None] = field(default_factory=list)
    decoders: list[Any] | None = None
    milestones: list[Any] | None = None

    def __post_init__(self) -> None:
        b = self.codes.shape[0]
        if self.failed is None:
            self.failed = torch.zeros(b, dtype=torch.bool)
        if not self.reasons:
            self.reasons = [None] * b


@dataclass
class InversionMethod:
    """Base class. Subclasses are dataclasses whose fields are their hyperparameters."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # Bundle parts the method needs (see ``idinvert.zoo.Bundle.has``); the runner skips the method with a
    # message naming the missing part instead of crashing.
    needs: ClassVar[tuple[str, ...]] = ("generator",)
    # Set by the runner around each timed batch: ``on_step(done, total)`` for a method with many steps per
    # batch to show its progress inside the batch (a 5,000-step batch takes minutes). Not a hyperparameter.
    on_step: ClassVar[Any] = None
    # How the method runs its networks (``idinvert.speed.Speed``: eager or compiled, fp32 or autocast).
    # Set by the runner from the measurement on this machine; the numbers do not depend on it beyond
    # float rounding, so it is not a hyperparameter (not in the run id).
    speed: ClassVar[Speed] = EAGER

    def prepare(self, bundle: Any) -> None:
        self.bundle = bundle

    def invert(self, images: torch.Tensor) -> InversionResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def warmup(self, images: torch.Tensor) -> None:
        """Run once, untimed, before timing starts (kernel selection, allocator warm-up)."""
        self.invert(images)

    # -- hyperparameters --------------------------------------------------------------------------------
    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """Field name -> default value."""
        out = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
        return out

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
