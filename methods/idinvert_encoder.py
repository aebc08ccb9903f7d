"""``idinvert-encoder``: the domain-guided encoder alone (trained on real images through the frozen
generator, pixel + perceptual + adversarial loss), one forward pass per batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from methods.base import InversionMethod, InversionResult
from methods.encoder import encoder_result, module_device
from methods.registry import register


@register
@dataclass
class IDInvertEncoder(InversionMethod):
    """E_domain(x) -> W+. No hyperparameters: a single forward pass (batch norm in eval mode)."""

    name = "idinvert-encoder"
    summary = "domain-guided encoder alone, no optimisation"
    needs = ("generator", "encoder")

    def prepare(self, bundle: Any) -> None:
        super().prepare(bundle)
        self.device = module_device(bundle.encoder)

    def invert(self, images: torch.Tensor) -> InversionResult:
        return encoder_result(self.bundle.encoder, images, self.device,
                              batch_size=max(1, images.shape[0]))
