"""``encoder``: the conventional encoder (trained by latent regression on sampled codes), one forward
pass per batch — the paper's "traditional encoder" baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from idinvert.inversion import encode
from idinvert.utils import device_of
from methods.base import InversionMethod, InversionResult
from methods.registry import register


def encoder_result(encoder: Any, images: torch.Tensor, device: torch.device,
                   batch_size: int) -> InversionResult:
    """Encode and mark images whose code is not finite (e.g. a NaN in the input) as failed."""
    codes = encode(encoder, images.to(device), batch_size=batch_size)
    bad = (~torch.isfinite(codes).flatten(1).all(1)).cpu()
    reasons = ["encoder produced a non-finite code" if f else None for f in bad.tolist()]
    return InversionResult(codes=codes, failed=bad, reasons=reasons)


@register
@dataclass
class ConventionalEncoder(InversionMethod):
    """E_conventional(x) -> W+. No hyperparameters: a single forward pass (batch norm in eval mode)."""

    name = "encoder"
    summary = "conventional encoder (latent regression on generated images), no optimisation"
    needs = ("generator", "conventional_encoder")
    part: ClassVar[str] = "conventional_encoder"  # the bundle part that encodes

    def prepare(self, bundle: Any) -> None:
        super().prepare(bundle)
        self.device = device_of(getattr(bundle, self.part))

    def invert(self, images: torch.Tensor) -> InversionResult:
        return encoder_result(getattr(self.bundle, self.part), images, self.device,
                              batch_size=max(1, images.shape[0]))
