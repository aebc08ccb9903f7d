"""``mse-optim``: W+ optimisation from the mean w with the pixel loss only (the paper's "MSE-based
optimisation" row of Table 1)."""

from __future__ import annotations

from dataclasses import dataclass

from methods.optimisation import OptimisationMethod
from methods.registry import register


@register
@dataclass
class MSEOptim(OptimisationMethod):
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
