"""``mse-optim``: W+ optimisation from the mean w with the pixel loss only (the paper's "MSE-based
optimisation" row of Table 1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from idinvert.inversion import optimize_codes
from methods.base import InversionMethod, InversionResult
from methods.image2stylegan import WARMUP_STEPS, check_common, generator_device, mean_codes, to_result
from methods.registry import register


@register
@dataclass
class MSEOptim(InversionMethod):
    """Optimise a W+ code from the mean w; loss = pixel MSE only; Adam.

    Defaults, and why:
    - iters = 100: the same budget as ``image2stylegan`` and ``idinvert`` (see ``image2stylegan``:
      the paper's baselines ran thousands of iterations; 100 each keeps the default all-methods run
      within 10 minutes on 2 CPU cores). Same budget, so it differs from image2stylegan only in the
      perceptual term.
    - lr = 0.01: Adam lr of the paper and the official code.
    """

    name = "mse-optim"
    summary = "W+ optimisation from the mean w, pixel MSE only"
    needs = ("generator",)

    iters: int = 100
    lr: float = 0.01

    def __post_init__(self) -> None:
        check_common(self)

    def prepare(self, bundle: Any) -> None:
        super().prepare(bundle)
        self.device = generator_device(bundle)

    def _run(self, images: torch.Tensor, steps: int) -> InversionResult:
        b = self.bundle
        x = images.to(self.device)
        opt = optimize_codes(b.generator, x, mean_codes(b, x.shape[0], self.device), steps=steps,
                             lr=self.lr, space="wp")
        return to_result(opt)

    def invert(self, images: torch.Tensor) -> InversionResult:
        return self._run(images, self.iters)

    def warmup(self, images: torch.Tensor) -> None:
        self._run(images[:1], min(self.iters, WARMUP_STEPS))
