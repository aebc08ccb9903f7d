"""The encoders of the pSp, e4e and ReStyle releases (Richardson et al. 2021, Tov et al. 2021, Alaluf et al.
2021), in the key layout of their `encoder.*` state dicts, each with the interface the harness's methods use.

All four are an IR-SE50 trunk (`idinvert.nets.irse.IRSEBackbone`) read by "map2style" heads
(`GradualStyleBlock`: stride-2 3x3 convolutions with LeakyReLU(0.01) down to 1 x 1, then an
equalised-lr dense layer, 512 -> 512), one head per W+ row (`style_count` = 2 log2(stylegan_size) - 2):

    GradualStyleEncoder (pSp)        rows 0-2 from the 16 x 16 map (c3), 3-6 from the 32 x 32 FPN level
                                     (c3 upsampled + 1x1 conv of c2), 7.. from 64 x 64 (+ 1x1 conv of c1)
    Encoder4Editing (e4e)            the same pyramid; row 0's head gives w_0 for every row, each other
                                     head an offset added to its row
    BackboneEncoder (ReStyle-pSp)    6 input channels [x, current reconstruction]; every head on c3
    ProgressiveBackboneEncoder       (ReStyle-e4e) as BackboneEncoder, w_0 + offsets as e4e

Inputs are 256 x 256 (the heads' pooling depth is built for it); images of another size are resized
(`idinvert.nets.irse.resized`) first. A non-persistent buffer `latent_avg` [L, D] holds the release's
average code (zeros when the release does not start from it), so the state dict is exactly the file's
`encoder.*` entries.
Interfaces: `GradualStyleEncoder.codes(x)`; `Encoder4Editing.forward_parts / codes_from_parts` and
`num_unlocked` (as `idinvert.nets.e4e_encoder.E4EEncoder`); the ReStyle encoders `forward(x, y) -> residual`
with `latent_avg`, as `idinvert.nets.restyle_encoder.ReStyleEncoder` (so `restyle_invert` drives them).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from idinvert.nets.irse import IRSEBackbone, resized
from idinvert.nets.stylegan2 import EqualLinear

__all__ = ["GradualStyleBlock", "GradualStyleEncoder", "Encoder4Editing", "BackboneEncoder",
           "ProgressiveBackboneEncoder", "RELEASE_ENCODERS", "INPUT_SIZE", "style_count"]

INPUT_SIZE = 256
COARSE, MIDDLE = 3, 7     # first rows read from the 32 x 32 and 64 x 64 pyramid levels


def style_count(stylegan_size: int) -> int:
    """W+ rows of a rosinality StyleGAN2 of that size (18 at 1024 px)."""
    return 2 * int(math.log2(stylegan_size)) - 2


class GradualStyleBlock(nn.Module):
    """map2style: [B, 512, s, s] -> [B, 512] by log2(s) stride-2 convolutions and a dense layer."""

    def __init__(self, in_c: int, out_c: int, spatial: int):
        super().__init__()
        self.out_c = out_c
        layers: list[nn.Module] = [nn.Conv2d(in_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        for _ in range(int(math.log2(spatial)) - 1):
            layers += [nn.Conv2d(out_c, out_c, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).reshape(-1, self.out_c))


class _ReleaseEncoder(IRSEBackbone):
    """Trunk + one head per W+ row; `spatial(i)` is the pyramid level head i reads."""

    def __init__(self, stylegan_size: int, in_channels: int, w_dim: int = 512):
        super().__init__(in_channels)
        self.stylegan_size = stylegan_size
        self.num_layers = self.style_count = style_count(stylegan_size)
        self.w_space_dim = w_dim
        self.resolution = INPUT_SIZE
        self.styles = nn.ModuleList(GradualStyleBlock(512, 512, self.spatial(i)) for i in range(self.style_count))
        self.register_buffer("latent_avg", torch.zeros(self.style_count, w_dim), persistent=False)

    def spatial(self, i: int) -> int:
        return 16

    @torch.no_grad()
    def set_latent_avg(self, avg: Optional[torch.Tensor]) -> None:
        """The release's average code ([D] or [L, D]); None: zeros (a release not started from it)."""
        if avg is None:
            self.latent_avg.zero_()
            return
        avg = avg.detach().to(self.latent_avg).reshape(-1, self.w_space_dim)
        if avg.shape[0] not in (1, self.style_count):
            raise ValueError(f"latent_avg must be [{self.w_space_dim}] or [{self.style_count}, "
                             f"{self.w_space_dim}], got {list(avg.shape)}")
        self.latent_avg.copy_(avg.expand(self.style_count, -1))

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        return resized(x, INPUT_SIZE)


class _Pyramid(_ReleaseEncoder):
    """pSp's feature pyramid: heads 0-2 on c3, 3-6 on p2 = up(c3) + lat1(c2), 7.. on p1 = up(p2) + lat2(c1)."""

    def __init__(self, stylegan_size: int, in_channels: int = 3):
        super().__init__(stylegan_size, in_channels)
        self.latlayer1 = nn.Conv2d(256, 512, 1)
        self.latlayer2 = nn.Conv2d(128, 512, 1)

    def spatial(self, i: int) -> int:
        return 16 if i < COARSE else 32 if i < MIDDLE else 64

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[c3, p2, p1]: the maps the coarse, middle and fine heads read."""
        c1, c2, c3 = self.trunk(self._input(x))
        p2 = _upsample_add(c3, self.latlayer1(c2))
        return [c3, p2, _upsample_add(p2, self.latlayer2(c1))]

    @staticmethod
    def level_of(i: int) -> int:
        return 0 if i < COARSE else 1 if i < MIDDLE else 2


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # bilinear with align_corners=True, as the releases (they chose it over nearest for odd sizes)
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class GradualStyleEncoder(_Pyramid):
    """pSp: images [B, 3, 256, 256] in [-1, 1] -> W+ offsets [B, L, 512] (`codes` adds `latent_avg`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.levels(x)
        return torch.stack([head(maps[self.level_of(i)]) for i, head in enumerate(self.styles)], 1)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """W+ codes [B, L, D] = latent_avg + E(x) (pSp's `start_from_latent_avg`)."""
        return self.latent_avg.unsqueeze(0) + self(x)


class _WPlusOffsets:
    """e4e's output: w_0 from head 0 on every row, head i's offset added to row i (all unlocked)."""

    @property
    def num_unlocked(self) -> int:
        return self.style_count - 1

    def codes_from_parts(self, w0: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """(w_0 [B, D], offsets [B, L, D]) -> W+ [B, L, D] = latent_avg + w_0 + offsets."""
        return self.latent_avg.unsqueeze(0) + w0.unsqueeze(1) + deltas

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        w0, deltas = self.forward_parts(*args)
        return w0.unsqueeze(1) + deltas


class Encoder4Editing(_WPlusOffsets, _Pyramid):
    """e4e: images [B, 3, 256, 256] -> (w_0, offsets) on pSp's pyramid; `forward` gives w_0 + offsets."""

    def forward_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (w_0 [B, D], offsets [B, L, D] with row 0 zero)."""
        maps = self.levels(x)
        w0 = self.styles[0](maps[0])
        rows = [torch.zeros_like(w0)] + [self.styles[i](maps[self.level_of(i)]) for i in range(1, self.style_count)]
        return w0, torch.stack(rows, 1)


class BackboneEncoder(_ReleaseEncoder):
    """ReStyle-pSp: ([x, y] [B, 6, 256, 256]) -> residual [B, L, D], every head on the 16 x 16 map."""

    def __init__(self, stylegan_size: int, in_channels: int = 6):
        super().__init__(stylegan_size, in_channels)

    def features(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[x, y] [B, 6, H, W] (or x and y [B, 3, H, W] each) -> the 16 x 16 map c3 [B, 512, 16, 16]."""
        if y is not None:
            x = torch.cat([resized(x, INPUT_SIZE), resized(y, INPUT_SIZE)], 1)
        return self.trunk(self._input(x))[-1]

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        c3 = self.features(x, y)
        return torch.stack([head(c3) for head in self.styles], 1)


class ProgressiveBackboneEncoder(_WPlusOffsets, BackboneEncoder):
    """ReStyle-e4e: ([x, y]) -> residual w_0 + offsets [B, L, D], every head on the 16 x 16 map."""

    def forward_parts(self, x: torch.Tensor, y: Optional[torch.Tensor] = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        c3 = self.features(x, y)
        w0 = self.styles[0](c3)
        return w0, torch.stack([torch.zeros_like(w0)] + [h(c3) for h in self.styles[1:]], 1)


# opts["encoder_type"] -> class
RELEASE_ENCODERS = {cls.__name__: cls for cls in (GradualStyleEncoder, Encoder4Editing, BackboneEncoder,
                                                  ProgressiveBackboneEncoder)}
