"""``e4e``: the encoder4editing encoder (Tov et al. 2021), one forward pass per batch.

The bundle's ``e4e_encoder`` part predicts a base code w_0 and per-layer offsets, trained with e4e's
progressive unlocking, delta regulariser and latent discriminator so that its codes stay where G's
mapping puts codes (training and its sources: ``idinvert/training/e4e.py``; the network:
``idinvert/nets/e4e_encoder.py``). A bundle without that part skips the method with a message
(``python -m bench zoo train --target e4e-encoder`` builds it). With the ``e4e-ffhq`` release bundle the
part is the official release's ``Encoder4Editing`` (``idinvert/nets/psp_encoders.py``), with the same
interface (all its offsets unlocked, as released).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from idinvert.utils import device_of
from methods.base import InversionMethod, InversionResult
from methods.optimisation import check
from methods.registry import register


@register
@dataclass
class E4E(InversionMethod):
    """E_e4e(x) -> W+ = avg + w_0 + offsets of layers 1 .. k.

    Defaults, and why:
    - offsets = -1: use as many per-layer offsets as the encoder was trained with (the shipped one:
      all L - 1; e4e's inference uses every offset it unlocked). 0 .. L-1 uses only the first k
      offsets (0: one w for all layers, e4e's first training stage): ``bench ablate offsets
      --methods e4e`` sweeps the reconstruction-vs-editability dial e4e is built around, without
      retraining (the offsets of later layers were trained with the earlier ones on, so k < L-1 is an
      ablation of the trained encoder, not a separately trained one).
    """

    name = "e4e"
    summary = "encoder4editing: base code + per-layer offsets kept in W by a latent discriminator"
    needs = ("generator", "e4e_encoder")

    offsets: int = -1

    def __post_init__(self) -> None:
        check(isinstance(self.offsets, int) and self.offsets >= -1,
              f"e4e.offsets must be -1 (as trained) or a number of offsets >= 0, got {self.offsets!r}")

    def prepare(self, bundle: Any) -> None:
        super().prepare(bundle)
        enc = bundle.e4e_encoder
        self.device = device_of(enc)
        trained = int(enc.num_unlocked)
        check(self.offsets <= enc.num_layers - 1,
              f"e4e.offsets must be at most {enc.num_layers - 1} (L - 1), got {self.offsets}")
        self._k = trained if self.offsets < 0 else self.offsets

    @torch.no_grad()
    def invert(self, images: torch.Tensor) -> InversionResult:
        enc = self.bundle.e4e_encoder
        x = images.to(self.device)
        # The bundle's encoder is shared: the offsets are masked here, its stored stage is not changed.
        w0, deltas = enc.forward_parts(x)   # offsets of layers 1 .. num_unlocked (as trained)
        if self._k < enc.num_layers - 1:
            keep = (torch.arange(enc.num_layers, device=deltas.device) <= self._k).to(deltas.dtype)
            deltas = deltas * keep.view(1, -1, 1)
        codes = enc.codes_from_parts(w0, deltas)
        bad = (~torch.isfinite(codes).flatten(1).all(1)).cpu()
        reasons = ["encoder produced a non-finite code" if f else None for f in bad.tolist()]
        return InversionResult(codes=codes, failed=bad, reasons=reasons)
