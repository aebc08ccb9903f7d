"""``idinvert``: in-domain inversion — domain-guided encoder start + domain-regularised optimisation
(paper Eq. 5): ||x - G(w)||^2 + lambda_vgg ||F(x) - F(G(w))||^2 + lambda_dom ||w - E(G(w))||^2."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from idinvert.inversion import DEFAULT_LAMBDA_DOM, DEFAULT_LR, DEFAULT_STEPS, encode, optimize_codes
from methods.base import InversionMethod, InversionResult
from methods.image2stylegan import (WARMUP_STEPS, bundle_lambda_vgg, check, check_common,
                                    generator_device, mean_codes, to_result)
from methods.registry import register

INITS = ("encoder", "mean")


@register
@dataclass
class IDInvert(InversionMethod):
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

    iters: int = DEFAULT_STEPS
    lr: float = DEFAULT_LR
    lambda_vgg: Optional[float] = None
    lambda_dom: float = DEFAULT_LAMBDA_DOM
    init: str = "encoder"

    def __post_init__(self) -> None:
        check_common(self)
        check(self.lambda_dom >= 0, f"idinvert.lambda_dom must be >= 0, got {self.lambda_dom}")
        check(self.init in INITS, f"idinvert.init must be one of {INITS}, got {self.init!r}")

    def prepare(self, bundle: Any) -> None:
        super().prepare(bundle)
        self.device = generator_device(bundle)
        self._lambda_vgg = bundle_lambda_vgg(bundle, self.lambda_vgg)

    def _run(self, images: torch.Tensor, steps: int) -> InversionResult:
        b = self.bundle
        x = images.to(self.device)
        if self.init == "encoder":
            init = encode(b.encoder, x, batch_size=max(1, x.shape[0])).to(self.device)
        else:
            init = mean_codes(b, x.shape[0], self.device)
        # A NaN image gives a NaN start; the loop then marks it failed at step 0 and keeps that start.
        opt = optimize_codes(b.generator, x, init, steps=steps, lr=self.lr,
                             lambda_perceptual=self._lambda_vgg, perceptual=b.perceptual,
                             lambda_dom=self.lambda_dom, encoder=b.encoder, space="wp")
        return to_result(opt)

    def invert(self, images: torch.Tensor) -> InversionResult:
        return self._run(images, self.iters)

    def warmup(self, images: torch.Tensor) -> None:
        self._run(images[:1], min(self.iters, WARMUP_STEPS))
