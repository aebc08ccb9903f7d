"""``dummy``: a trivial method for tests of the harness — returns the mean w for every image.

Registered only when this module is imported explicitly (it is not in ``methods.builtin``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from methods.base import InversionMethod, InversionResult
from idinvert.utils import device_of
from methods.optimisation import check, mean_codes
from methods.registry import register


@register
@dataclass
class Dummy(InversionMethod):
    """codes = mean w (+ ``offset``) for every image; ``fail_every`` > 0 marks every k-th image failed
    (to exercise the harness's failure path)."""

    name = "dummy"
    summary = "mean w for every image (tests only)"
    needs = ("generator",)

    offset: float = 0.0
    fail_every: int = 0

    def __post_init__(self) -> None:
        check(self.fail_every >= 0, f"dummy.fail_every must be >= 0, got {self.fail_every}")

    def prepare(self, bundle: Any) -> None:
        super().prepare(bundle)
        self.device = device_of(bundle.generator)

    def invert(self, images: torch.Tensor) -> InversionResult:
        n = images.shape[0]
        codes = mean_codes(self.bundle, n, self.device) + self.offset
        failed = torch.zeros(n, dtype=torch.bool)
        if self.fail_every:
            failed[self.fail_every - 1::self.fail_every] = True
        reasons = ["dummy failure" if f else None for f in failed.tolist()]
        return InversionResult(codes=codes, failed=failed, reasons=reasons)
