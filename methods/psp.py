"""``psp``: the pixel2style2pixel encoder (Richardson et al. 2021), one forward pass per batch.

The bundle's ``psp_encoder`` part (the pSp release's ``GradualStyleEncoder``, ``idinvert.nets.psp_encoders``,
loaded by the ``psp-ffhq`` bundle) maps an image to one offset per W+ row, added to the release's average
code. A bundle without that part skips the method with a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from methods.base import InversionResult
from methods.encoder import ConventionalEncoder, encoder_result
from methods.registry import register


@register
@dataclass
class PSP(ConventionalEncoder):
    """E_pSp(x) + latent_avg -> W+. No hyperparameters: a single forward pass (batch norm in eval mode)."""

    name = "psp"
    summary = "pSp: one map2style head per W+ row on an IR-SE50 feature pyramid, no optimisation"
    needs = ("generator", "psp_encoder")
    part: ClassVar[str] = "psp_encoder"

    def invert(self, images: torch.Tensor) -> InversionResult:
        enc = self.bundle.psp_encoder
        return encoder_result(enc.codes, images, self.device, batch_size=max(1, images.shape[0]))
