"""``optim-w``: optimisation of a single w per image (W space, broadcast to every layer), for the
paper's W vs W+ comparison. Same loss and budget as ``image2stylegan``; only the space differs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from idinvert.inversion import optimize_codes
from methods.base import InversionMethod, InversionResult
from methods.image2stylegan import (WARMUP_STEPS, bundle_lambda_vgg, check_common, generator_device,
                                    mean_codes, to_result)
from methods.registry import register


@register
@dataclass
class OptimW(InversionMethod):
    """Optimise one w [D] per image from the mean w; loss = pixel MSE + lambda_vgg * perceptual MSE.

    Defaults, and why: iters = 100, lr = 0.01, lambda_vgg = None (the bundle's weight) — exactly
    ``image2stylegan``'s, so that a difference between the two rows is due to W vs W+ alone. The
    returned code repeats the optimised w on all L layers (every layer identical).
    """

    name = "optim-w"
    summary = "W-space optimisation (one w per image) from the mean w, pixel + perceptual loss"
    needs = ("generator", "perceptual")

    iters: int = 100
    lr: float = 0.01
    lambda_vgg: Optional[float] = None

    def __post_init__(self) -> None:
        check_common(self)

    def prepare(self, bundle: Any) -> None:
        super().prepare(bundle)
        self.device = generator_device(bundle)
        self._lambda_vgg = bundle_lambda_vgg(bundle, self.lambda_vgg)

    def _run(self, images: torch.Tensor, steps: int) -> InversionResult:
        b = self.bundle
        x = images.to(self.device)
        opt = optimize_codes(b.generator, x, mean_codes(b, x.shape[0], self.device), steps=steps,
                             lr=self.lr, lambda_perceptual=self._lambda_vgg, perceptual=b.perceptual,
                             space="w")
        return to_result(opt)

    def invert(self, images: torch.Tensor) -> InversionResult:
        return self._run(images, self.iters)

    def warmup(self, images: torch.Tensor) -> None:
        self._run(images[:1], min(self.iters, WARMUP_STEPS))
