"""A rosinality StyleGAN2 generator seen at a smaller comparison resolution, as the pSp / e4e / ReStyle
releases use theirs: the 1024 px decoder's images are average-pooled to 256 px (their `face_pool`) before
any loss or metric, and their encoders read 256 px images.

`PooledStyleGAN2(decoder, resolution)` has the generator interface of the harness (`mapping`,
`truncation`, `synthesis`, `num_layers`, `w_space_dim`, `resolution`, ...). Its `synthesis` is a module
(`PooledSynthesis`), so PTI can tune its weights per image with `torch.func.functional_call`; the decoder's
own state-dict keys are untouched (`synthesis.decoder.<rosinality key>`). `native_resolution` is the
decoder's size.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from idinvert.nets.stylegan2 import StyleGAN2Generator
from idinvert.nets.stylegan_generator import LatentSampling

__all__ = ["PooledSynthesis", "PooledStyleGAN2"]


class PooledSynthesis(nn.Module):
    """W+ [B, L, D] -> the decoder's image [B, 3, S, S] average-pooled to [B, 3, R, R] (R divides S)."""

    def __init__(self, decoder: StyleGAN2Generator, resolution: int):
        super().__init__()
        if resolution > decoder.resolution or decoder.resolution % resolution:
            raise ValueError(f"cannot pool a {decoder.resolution} px generator to {resolution} px")
        self.decoder = decoder
        self.resolution = resolution

    def forward(self, wp: torch.Tensor, noise: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        x = self.decoder.synthesis(wp, noise)
        if x.shape[-1] == self.resolution:
            return x
        return F.adaptive_avg_pool2d(x, self.resolution)


class PooledStyleGAN2(LatentSampling, nn.Module):
    """A StyleGAN2Generator whose images come out at `resolution` (<= its own size).

    One w of the mapping is broadcast to every W+ row (`repeat_w`), so the average code is the decoder's
    `truncation.w_avg` (the release's `latent_avg`).
    """

    repeat_w = True

    def __init__(self, decoder: StyleGAN2Generator, resolution: int):
        super().__init__()
        self.synthesis = PooledSynthesis(decoder, resolution)
        self.resolution = resolution
        self.native_resolution = decoder.resolution
        self.z_space_dim = decoder.z_space_dim
        self.w_space_dim = decoder.w_space_dim
        self.num_layers = decoder.num_layers
        self.config = {**decoder.config, "output_resolution": resolution}

    @property
    def decoder(self) -> StyleGAN2Generator:
        return self.synthesis.decoder

    @property
    def truncation(self) -> nn.Module:
        return self.synthesis.decoder.truncation

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder.mapping(z)

    def set_noise_mode(self, mode: str) -> None:
        self.decoder.set_noise_mode(mode)
