"""``idinvert``: in-domain inversion — domain-guided encoder start + domain-regularised optimisation
(paper Eq. 5): ||x - G(w)||^2 + lambda_vgg ||F(x) - F(G(w))||^2 + lambda_dom ||w - E(G(w))||^2."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from idinvert.inversion import DEFAULT_LAMBDA_DOM, encode
from idinvert.loss_terms import DomainLoss, LossTerm, PixelLoss
from methods.optimisation import OptimisationMethod, check, checked_lambda_vgg, perceptual_terms
from methods.registry import register

INITS = ("encoder", "mean")


@register
@dataclass
class IDInvert(OptimisationMethod):
    """In-domain GAN inversion.

    Defaults, and why (all from the paper and the official idinvert_pytorch inverter):
    - iters = 100, lr = 0.01 (Adam): the official settings; the encoder start is what makes 100 enough.
    - lambda_dom = 2.0: the paper's weight of the encoder regulariser (``bench ablate lambda_dom``
      sweeps it: larger = worse reconstruction, better editing).
    - lambda_vgg = None: the bundle's weight for its F — 5e-5 for VGG16 conv4_3 (paper), a
      domain-rescaled value for the embedded domain's classifier features.
    - init = "encoder": the paper's start E(x); "mean" (the mean w) is there for the ablation of the
      start point, keeping the regulariser.
    """

    name = "idinvert"
    summary = "domain-guided encoder init + domain-regularised optimisation (in-domain inversion)"
    needs = ("generator", "encoder", "perceptual")

    lambda_vgg: Optional[float] = None
    lambda_dom: float = DEFAULT_LAMBDA_DOM
    init: str = "encoder"

    def validate(self) -> None:
        self.lambda_vgg = checked_lambda_vgg(self.lambda_vgg, self.name)
        check(self.lambda_dom >= 0, f"idinvert.lambda_dom must be >= 0, got {self.lambda_dom}")
        check(self.init in INITS, f"idinvert.init must be one of {INITS}, got {self.init!r}")

    def init_codes(self, images: torch.Tensor) -> torch.Tensor:
        # A NaN image gives a NaN start; the loop then marks it failed at step 0 and keeps that start.
        if self.init == "encoder":
            return encode(self.bundle.encoder, images, batch_size=max(1, images.shape[0])).to(self.device)
        return super().init_codes(images)

    def loss_terms(self) -> list[LossTerm]:
        """Paper Eq. 5: pixel + lambda_vgg * perceptual + lambda_dom * domain regulariser (a zero weight
        drops its term)."""
        domain = [DomainLoss(self.bundle.encoder, self.lambda_dom)] if self.lambda_dom else []
        return [PixelLoss(), *perceptual_terms(self.bundle, self.lambda_vgg), *domain]
