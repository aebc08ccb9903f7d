"""The In-Domain GAN Inversion encoder: image -> the whole W+ code, with the official state-dict layout.

Re-implements the network of genforce/idinvert_pytorch (`models/stylegan_encoder_network.py`) so that
the released `styleganinv_ffhq256_encoder.pth` loads with strict keys and computes the same function.
Structure for resolution R (num_blocks = log2(R)):

    block0                 3x3 conv (no bias) [* wscale] -> BN -> lrelu              at R
    block1 .. block{n-2}   residual blocks, each after a 2x average-pool             R/2 .. 4
    block{n-1}             dense layer (equalised lr) of the flattened 4x4 map -> BN  -> L * D values

Channels start at `encoder_channels_base` and double per block up to `encoder_channels_max`;
L = 2 * (log2(R) - 1) matches the generator's W+ layers. The official FFHQ-256 encoder is
`StyleGANEncoder(256)` (base 64, max 1024, batch norm, no wscale) and outputs [B, 14, 512].

Key layout (every name and shape follows the official checkpoint):

    block0.conv.weight, block0.bn.bn.{weight,bias,running_mean,running_var,num_batches_tracked}
    block{i}.conv.weight + block{i}.bn.bn.*          (1x1 shortcut, only where channels change)
    block{i}.conv1.weight, block{i}.wscale1.bias, block{i}.bn1.bn.*
    block{i}.conv2.weight, block{i}.wscale2.bias, block{i}.bn2.bn.*
    block{n-1}.fc.weight, block{n-1}.bn.bn.*

Two quirks of the official code are reproduced on purpose: batch norm learns only its shift (the
scale stays 1, as in the TF original where BN had no gamma), and in the residual branch the
"wscale" layer only adds a bias unless `use_wscale=True` (the constant it multiplies by is divided
out first).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["StyleGANEncoder", "EncoderBackbone", "official_idinvert_ffhq256_encoder_config"]

_RESOLUTIONS = (8, 16, 32, 64, 128, 256, 512, 1024)
_INIT_RES = 4
_LRELU_SLOPE = 0.2
_GAIN = math.sqrt(2.0)


def official_idinvert_ffhq256_encoder_config() -> dict:
    """Constructor kwargs reproducing `styleganinv_ffhq256_encoder.pth` (official model settings)."""
    return dict(resolution=256, w_space_dim=512, image_channels=3, encoder_channels_base=64,
                encoder_channels_max=1024, use_wscale=False, use_bn=True)


class _BatchNorm(nn.Module):
    """BatchNorm2d wrapped in `.bn` (the official key path) with a frozen unit scale."""

    def __init__(self, channels: int):
        super().__init__()
        # TF's decay 0.9 is PyTorch's momentum 0.1.
        self.bn = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1, affine=True,
                                 track_running_stats=True)
        self.bn.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


def _norm(channels: int, use_bn: bool) -> nn.Module:
    return _BatchNorm(channels) if use_bn else nn.Identity()


class _Bias(nn.Module):
    """Learned per-channel bias, stored as `.bias` (the official `wscale{k}` layers)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.view(1, -1, 1, 1)


def _scaled_conv(conv: nn.Conv2d, x: torch.Tensor, scale: float, bias: torch.Tensor | None = None):
    """conv(x) * scale (+ bias), with the equalised-lr scale on the small weight rather than on the
    activations, and the bias inside the conv: the same product in one pass."""
    return F.conv2d(x, conv.weight * scale, bias, conv.stride, conv.padding)


class _FirstBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, use_wscale: bool, use_bn: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)
        self.scale = _GAIN / math.sqrt(in_channels * 9) if use_wscale else 1.0
        self.bn = _norm(out_channels, use_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.bn(_scaled_conv(self.conv, x, self.scale)), _LRELU_SLOPE)


class _ResBlock(nn.Module):
    """Two 3x3 convs (bias, BN, lrelu each) plus an identity or 1x1-conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int, use_wscale: bool, use_bn: bool):
        super().__init__()
        self.add_shortcut = in_channels != out_channels
        if self.add_shortcut:
            self.conv = nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False)
            self.scale = _GAIN / math.sqrt(in_channels) if use_wscale else 1.0
            self.bn = _norm(out_channels, use_bn)
        hidden = min(in_channels, out_channels)
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, 1, 1, bias=False)
        self.scale1 = _GAIN / math.sqrt(in_channels * 9) if use_wscale else 1.0
        self.wscale1 = _Bias(hidden)
        self.bn1 = _norm(hidden, use_bn)
        self.conv2 = nn.Conv2d(hidden, out_channels, 3, 1, 1, bias=False)
        self.scale2 = _GAIN / math.sqrt(hidden * 9) if use_wscale else 1.0
        self.wscale2 = _Bias(out_channels)
        self.bn2 = _norm(out_channels, use_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.add_shortcut:
            y = F.leaky_relu(self.bn(_scaled_conv(self.conv, x, self.scale)), _LRELU_SLOPE)
        else:
            y = x
        h = F.leaky_relu(self.bn1(_scaled_conv(self.conv1, x, self.scale1, self.wscale1.bias)), _LRELU_SLOPE)
        h = F.leaky_relu(self.bn2(_scaled_conv(self.conv2, h, self.scale2, self.wscale2.bias)), _LRELU_SLOPE)
        return h + y


class _LastBlock(nn.Module):
    """Dense layer with equalised learning rate (gain 1) over the flattened map, then BN."""

    def __init__(self, in_features: int, out_features: int, use_bn: bool):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features, bias=False)
        self.scale = 1.0 / math.sqrt(in_features)
        self.bn = _norm(out_features, use_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(x.flatten(1)) * self.scale
        return self.bn(x[:, :, None, None]).flatten(1)


class StyleGANEncoder(nn.Module):
    """Encoder E: images [B, C, R, R] in [-1, 1] (RGB) -> W+ codes [B, L, D].

    Attributes: `resolution`, `w_space_dim`, `num_layers` (L = 2 * (log2(R) - 1)), `config`
    (constructor kwargs, for saving beside the weights). Batch norm makes the output depend on
    train/eval mode: use `.eval()` for inversion.
    """

    def __init__(self, resolution: int, w_space_dim: int = 512, image_channels: int = 3,
                 encoder_channels_base: int = 64, encoder_channels_max: int = 1024,
                 use_wscale: bool = False, use_bn: bool = True):
        super().__init__()
        if resolution not in _RESOLUTIONS:
            raise ValueError(f"resolution {resolution} not in {_RESOLUTIONS}")
        self.config = dict(resolution=resolution, w_space_dim=w_space_dim,
                           image_channels=image_channels,
                           encoder_channels_base=encoder_channels_base,
                           encoder_channels_max=encoder_channels_max,
                           use_wscale=use_wscale, use_bn=use_bn)
        self.resolution = resolution
        self.w_space_dim = w_space_dim
        self.image_channels = image_channels
        self.num_blocks = int(math.log2(resolution))
        self.num_layers = 2 * (self.num_blocks - 1)

        in_ch, out_ch = image_channels, encoder_channels_base
        for i in range(self.num_blocks):
            if i == 0:
                block: nn.Module = _FirstBlock(in_ch, out_ch, use_wscale, use_bn)
            elif i == self.num_blocks - 1:
                out_ch = w_space_dim * self.num_layers
                block = _LastBlock(in_ch * _INIT_RES * _INIT_RES, out_ch, use_bn)
            else:
                block = _ResBlock(in_ch, out_ch, use_wscale, use_bn)
            self.add_module(f"block{i}", block)
            in_ch, out_ch = out_ch, min(out_ch * 2, encoder_channels_max)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, R, R] in [-1, 1] -> W+ [B, L, D]."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (
                self.image_channels, self.resolution, self.resolution):
            raise ValueError(f"encoder expects images [B, {self.image_channels}, {self.resolution}, "
                             f"{self.resolution}], got {tuple(images.shape)}")
        x = images
        for i in range(self.num_blocks):
            if 0 < i < self.num_blocks - 1:
                x = F.avg_pool2d(x, kernel_size=2, stride=2)
            x = getattr(self, f"block{i}")(x)
        return x.view(x.shape[0], self.num_layers, self.w_space_dim)


class EncoderBackbone(nn.Module):
    """The convolutional part of `StyleGANEncoder` (block0 and the residual blocks down to 4 x 4),
    without its dense W+ head, for encoders that put other heads on the same trunk (e4e, ReStyle).

    forward(x [B, C, R, R]) -> features [B, out_channels, 4, 4]. Same blocks, widths and options as
    StyleGANEncoder(resolution, ..., image_channels=C), so the encoders the harness compares differ
    in their heads and training, not in capacity.
    """

    def __init__(self, resolution: int, image_channels: int = 3, encoder_channels_base: int = 64,
                 encoder_channels_max: int = 1024, use_wscale: bool = False, use_bn: bool = True):
        super().__init__()
        if resolution not in _RESOLUTIONS:
            raise ValueError(f"resolution {resolution} not in {_RESOLUTIONS}")
        self.resolution = resolution
        self.image_channels = image_channels
        self.num_blocks = int(math.log2(resolution)) - 1   # StyleGANEncoder's blocks minus the head
        in_ch, out_ch = image_channels, encoder_channels_base
        for i in range(self.num_blocks):
            block = (_FirstBlock(in_ch, out_ch, use_wscale, use_bn) if i == 0
                     else _ResBlock(in_ch, out_ch, use_wscale, use_bn))
            self.add_module(f"block{i}", block)
            in_ch, out_ch = out_ch, min(out_ch * 2, encoder_channels_max)
        self.out_channels = in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.image_channels, self.resolution, self.resolution):
            raise ValueError(f"backbone expects input [B, {self.image_channels}, {self.resolution}, "
                             f"{self.resolution}], got {tuple(x.shape)}")
        for i in range(self.num_blocks):
            if i > 0:
                x = F.avg_pool2d(x, kernel_size=2, stride=2)
            x = getattr(self, f"block{i}")(x)
        return x
