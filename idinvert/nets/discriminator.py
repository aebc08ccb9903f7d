"""A StyleGAN-style residual discriminator (equalised learning rate, minibatch standard deviation).

It need not match any official layout: the embedded bundle trains it with the GAN and reuses it as the
initial discriminator of the domain-guided encoder's adversarial loss (as the paper does).

    images [B, 3, R, R] -> fromRGB (1x1) -> residual blocks, each halving the resolution, down to 4 px
    -> minibatch stddev -> 3x3 conv -> dense -> dense -> logits [B]
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from idinvert.nets.loading import pyramid_config

__all__ = ["Discriminator", "EqualConv2d", "EqualLinear"]


class EqualConv2d(nn.Module):
    """Conv with equalised learning rate: weight ~ N(0, 1), scaled by gain / sqrt(fan_in) at run time."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 gain: float = math.sqrt(2.0)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate."""

    def __init__(self, in_dim: int, out_dim: int, gain: float = math.sqrt(2.0)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = gain / math.sqrt(in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class DiscriminatorBlock(nn.Module):
    """conv3x3 -> lrelu -> conv3x3 -> lrelu -> 2x average-pool, plus a pooled 1x1 skip; sum / sqrt 2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _lrelu(self.conv0(x))
        y = F.avg_pool2d(_lrelu(self.conv1(y)), 2)
        s = self.skip(F.avg_pool2d(x, 2))
        return (y + s) * (1.0 / math.sqrt(2.0))


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append one channel: the mean over features of the per-group standard deviation (ProGAN).

    x: [B, C, H, W] -> [B, C + 1, H, W]; groups of min(group_size, B) consecutive-stride samples
    (B must be divisible by the group size; falls back to the whole batch otherwise).
    """
    b, c, h, w = x.shape
    g = min(group_size, b)
    if b % g != 0:
        g = b
    y = x.view(g, -1, c, h, w)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()          # [B/g, C, H, W]
    y = y.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)                 # [B/g, 1, 1, 1]
    y = y.repeat(g, 1, h, w)                                    # [B, 1, H, W]
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """Residual discriminator: images [B, C, R, R] in [-1, 1] -> logits [B] (real > 0).

    Channels at resolution r: min(fmaps_base // r, fmaps_max), as in the generator.
    """

    def __init__(self, resolution: int = 32, image_channels: int = 3, fmaps_base: int = 2048,
                 fmaps_max: int = 128, mbstd_group_size: int = 4):
        super().__init__()
        self.config = pyramid_config(resolution, image_channels=image_channels, fmaps_base=fmaps_base,
                                     fmaps_max=fmaps_max, mbstd_group_size=mbstd_group_size)
        self.resolution = resolution
        self.mbstd_group_size = mbstd_group_size
        nf = lambda r: min(fmaps_base // r, fmaps_max)  # noqa: E731
        self.from_rgb = EqualConv2d(image_channels, nf(resolution), 1)
        blocks = []
        r = resolution
        while r > 4:
            blocks.append(DiscriminatorBlock(nf(r), nf(r // 2)))
            r //= 2
        self.blocks = nn.ModuleList(blocks)
        self.final_conv = EqualConv2d(nf(4) + 1, nf(4), 3)
        self.final_dense = EqualLinear(nf(4) * 16, nf(4))
        self.out = EqualLinear(nf(4), 1, gain=1.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[-1] != self.resolution:
            raise ValueError(f"Discriminator expects [B, C, {self.resolution}, {self.resolution}], "
                             f"got {tuple(images.shape)}")
        x = _lrelu(self.from_rgb(images))
        for block in self.blocks:
            x = block(x)
        x = minibatch_stddev(x, self.mbstd_group_size)
        x = _lrelu(self.final_conv(x))
        x = _lrelu(self.final_dense(x.flatten(1)))
        return self.out(x).squeeze(1)
