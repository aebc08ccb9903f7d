"""``g-codes``: not an inversion -- the positive control, "G codes (truth)" (issue 22).

It answers every image of the known-answer set (``--data gsamples:N``, G's own samples) with the code
that made it, so its numbers are what a method that recovered every code exactly would score: the AP
ceiling of each attribute boundary (codes scored against the judge's labels of their images), edits
of true codes (the edit-success ceiling), code metrics at G's own level (code FD at its floor, G's
layer spread) and ``code_recovery`` 0. On any other data the runner gives it the known-answer set of
the same size instead (``known_answer``), and the tables show its row beside the methods of that data,
labelled as the positive control and never marked best (``bench.tables.REFERENCE_METHODS``). The
negative control is ``g-samples``: codes unrelated to the test images (chance AP).

An image is matched to its code by the nearest image of the set (it must agree to ``tolerance`` in
every pixel); an image that is not in the set is marked failed with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from methods.base import InversionMethod, InversionResult
from methods.registry import register


@register
@dataclass
class GCodes(InversionMethod):
    """Reference: the true codes of G's own samples (the known-answer set; no inversion)."""

    name = "g-codes"
    summary = "reference row (positive control): the true codes of G's own samples, the known-answer set"
    needs = ("generator",)
    known_answer: ClassVar[bool] = True  # the runner hands it the known-answer set (bind_dataset)
    tolerance: float = 1e-4

    def bind_dataset(self, dataset: Any) -> None:
        """The set whose images it answers: needs ``dataset.true_codes`` [N, L, D]."""
        if getattr(dataset, "true_codes", None) is None:
            raise ValueError(f"g-codes needs a set with known codes (--data gsamples:N), got {dataset.name}")
        self._codes = dataset.true_codes.float()
        self._images = dataset.load(list(range(len(dataset)))).flatten(1)

    @torch.no_grad()
    def invert(self, images: torch.Tensor) -> InversionResult:
        if not hasattr(self, "_codes"):
            raise RuntimeError("g-codes: bind_dataset(known-answer set) was not called")
        flat = images.detach().float().cpu().flatten(1)
        gap = torch.cdist(flat, self._images)                 # [B, N]
        nearest = gap.argmin(1)
        off = (flat - self._images[nearest]).abs().amax(1) > self.tolerance
        codes = self._codes[nearest].clone()  # kept for a failed image too: it is never scored
        reasons = ["not an image of the known-answer set" if o else None for o in off.tolist()]
        return InversionResult(codes.to(images.device), failed=off, reasons=reasons)

    def warmup(self, images: torch.Tensor) -> None:
        pass
