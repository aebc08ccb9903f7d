"""``g-samples``: not an inversion — fresh samples of the generator, as a reference row (issue 12).

Its "codes" are W+ codes of random z (untruncated, the generator's own layout), one per test image, so
its reconstructions are G samples and its set-level numbers (``fid_domain``, ``fid``, ``swd`` against
the real test images) and its interpolations (between random codes) are the generator's own level. A
method's realism or interpolation number can then be read against what G produces anyway: an inversion
cannot be expected to interpolate more realistically than G samples. The tables show this row only in
the realism and interpolation columns (``bench.tables.REFERENCE_METHODS``) and never mark it best; its
per-image and semantic numbers mean nothing and are not shown.

Each image's code is drawn from a generator seeded by a hash of the image's pixels and ``seed``, so a
batch gives exactly what one image at a time gives, and a resumed run draws the same samples.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from methods.base import InversionMethod, InversionResult
from methods.registry import register


@register
@dataclass
class GSamples(InversionMethod):
    """Reference: W+ codes of random z, one per image (no inversion)."""

    name = "g-samples"
    summary = "reference row: fresh G samples (not an inversion; realism and interpolation only)"
    needs = ("generator",)
    seed: int = 0

    def _code_for(self, image: torch.Tensor) -> torch.Tensor:
        pixels = image.detach().float().cpu().contiguous().numpy().astype(np.float32).tobytes()
        digest = hashlib.sha256(pixels + str(int(self.seed)).encode()).digest()
        rng = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        g = self.bundle.generator
        z = torch.randn(1, g.z_space_dim, generator=rng).to(self.bundle.device)
        return g.z_to_wp(z, truncate=False)

    @torch.no_grad()
    def invert(self, images: torch.Tensor) -> InversionResult:
        return InversionResult(torch.cat([self._code_for(x) for x in images]))

    def warmup(self, images: torch.Tensor) -> None:
        pass
