"""IR-SE ResNets (the "improved residual" blocks with squeeze-excitation of InsightFace), in the state-dict
layout of the pSp / e4e / ReStyle releases, and the ArcFace IR-SE50 identity network built from them.

The same trunk serves two purposes in those papers: (1) the encoders of pSp, e4e and ReStyle are an
IR-SE50 trunk with style heads (`idinvert.nets.psp_encoders`); (2) identity similarity is the cosine of
two faces' ArcFace IR-SE50 embeddings (`model_ir_se50.pth`, from TreB1eN/InsightFace_Pytorch), computed
on a fixed crop of the aligned 256 px face pooled to 112 px (`identity_crop`, as their `IDLoss`).

Key layout (what the release files hold; `N` counts bottleneck units 0 .. 23 for 50 layers):

    input_layer.0.weight [64, C, 3, 3]; input_layer.1.* BatchNorm2d(64); input_layer.2.weight PReLU [64]
    body.N.shortcut_layer.{0.weight [d, c, 1, 1], 1.* BatchNorm2d}   (only where channels change)
    body.N.res_layer.{0.* BN(c), 1.weight [d, c, 3, 3], 2.weight PReLU [d], 3.weight [d, d, 3, 3],
                      4.* BN(d), 5.fc1.weight [d/16, d, 1, 1], 5.fc2.weight [d, d/16, 1, 1]}
    (IR-SE50 only) output_layer.{0.* BN2d(512), 3.weight [512, 25088], 3.bias, 4.* BN1d(512)}

Written from the published architecture and checked by hand against the official classes on the same
random state dict (see the note of issue 24); no code of theirs is used.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["IRSEBackbone", "IRSE50", "UNITS", "identity_crop", "resized", "IDENTITY_CROP", "IDENTITY_SIZE"]

# (in channels, depth, units) per stage for 50 layers; the first unit of each stage has stride 2.
UNITS = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))
# The region of an aligned 256 px face the identity network sees (rows 35:223, cols 32:220), pooled to
# 112 x 112: the crop of the pSp / e4e / ReStyle `IDLoss.extract_feats`.
IDENTITY_CROP = (35, 223, 32, 220)
IDENTITY_SIZE = 112


class SEModule(nn.Module):
    """Squeeze-excitation: x * sigmoid(fc2(relu(fc1(mean over space))))."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class BottleneckIRSE(nn.Module):
    """One IR-SE unit: BN-conv-PReLU-conv(stride)-BN-SE plus a shortcut (subsampling, or 1x1 conv + BN
    where the width changes)."""

    def __init__(self, in_channel: int, depth: int, stride: int):
        super().__init__()
        self.stride = stride
        if in_channel != depth:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        else:
            self.shortcut_layer = None   # a 1x1 max-pool of stride s: plain subsampling, no weights
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel), nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth), SEModule(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = x[:, :, ::self.stride, ::self.stride] if self.shortcut_layer is None else self.shortcut_layer(x)
        return self.res_layer(x) + short


class IRSEBackbone(nn.Module):
    """The IR-SE50 trunk: `input_layer` (3x3 conv, BN, PReLU) and `body` (24 units, 4 stages).

    `trunk(x [B, C, H, W]) -> [c1, c2, c3]`: the outputs of units 6, 20 and 23 (ends of stages 2-4:
    128 ch at H/4, 256 at H/8, 512 at H/16), the feature pyramid the pSp / e4e heads read.
    Subclasses add their heads; the keys stay those of the releases (no prefix).
    """

    TAPS = (6, 20, 23)

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.in_channels = in_channels
        self.input_layer = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
                                         nn.BatchNorm2d(64), nn.PReLU(64))
        units = []
        for cin, depth, n in UNITS:
            units += [BottleneckIRSE(cin, depth, 2)] + [BottleneckIRSE(depth, depth, 1) for _ in range(n - 1)]
        self.body = nn.Sequential(*units)

    def trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.input_layer(x)
        taps = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.TAPS:
                taps.append(x)
        return taps


class IRSE50(IRSEBackbone):
    """ArcFace IR-SE50 for 112 px faces: images [B, 3, 112, 112] in [-1, 1] -> unit embeddings [B, 512].

    The official `Backbone(input_size=112, num_layers=50, mode='ir_se')`: trunk, BN, dropout (inactive
    in eval), a dense layer on the flattened 7 x 7 map, BN1d, L2 normalisation. Use `embed` for any
    aligned face: it applies `identity_crop` first.
    """

    def __init__(self):
        super().__init__(3)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(0.6), nn.Flatten(),
                                          nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, IDENTITY_SIZE, IDENTITY_SIZE):
            raise ValueError(f"IR-SE50 expects faces [B, 3, {IDENTITY_SIZE}, {IDENTITY_SIZE}], got {tuple(x.shape)}")
        return F.normalize(self.output_layer(self.trunk(x)[-1]), dim=1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Aligned faces [B, 3, R, R] in [-1, 1] (any R) -> embeddings [B, 512] of their identity crop."""
        return self(identity_crop(images))


def identity_crop(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, R, R] aligned faces -> [B, 3, 112, 112]: resized to 256 px (`resized`), rows 35:223 and
    columns 32:220 cut out, average-pooled to 112 (the papers' IDLoss crop)."""
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"identity_crop expects square images [B, 3, R, R], got {tuple(images.shape)}")
    top, bottom, left, right = IDENTITY_CROP
    return F.adaptive_avg_pool2d(resized(images, 256)[:, :, top:bottom, left:right], IDENTITY_SIZE)


def resized(x: torch.Tensor, size: int) -> torch.Tensor:
    """x [B, C, H, W] at size x size: unchanged when it is, area-averaged when smaller (as the releases'
    face_pool), bilinear when larger."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    if x.shape[-1] > size:
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
