"""Sliced Wasserstein distance on Laplacian-pyramid patches, after ProGAN (Karras et al., 2018).

The algorithm of ProGAN's ``metrics/sliced_wasserstein.py``, written anew in torch:

1. A Laplacian pyramid per image (5x5 binomial filter, mirror padding; ``pyr_down`` = blur then take every
   second pixel, ``pyr_up`` = zero-insertion then blur x4). Levels from the full resolution down to the
   smallest one >= 16 px; the last level is the low-pass residual, the others are band-pass.
2. At each level, 7x7x3 patches at random positions (128 per image by default, never more than the
   number of distinct positions, so small images get fewer).
3. Each set's descriptors at a level are normalised per colour channel by that set's own mean and
   standard deviation (as ProGAN does; hence SWD ignores a global per-channel affine change of a set),
   then flattened to 147-d vectors.
4. Sliced W1: ``repeats`` rounds of ``dirs_per_repeat`` random unit directions (ProGAN: 4 x 128); project
   both sets, sort each direction's projections, mean absolute difference; mean over rounds.

Units: like ProGAN's ``SWDx1e3_<res>`` columns, every value returned here is multiplied by 1e3; the
metric ``swd`` is the mean over levels. Randomness comes from one ``seed``: both sets are patched at the
same positions when they have the same shape, so identical sets give exactly 0.
Sets of different sizes are compared through the quantile functions of the projections, resampled at
the midpoints of the smaller set's ranks (ProGAN requires equal sizes).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

SWD_SCALE = 1e3
PATCH_SIZE = 7
MIN_RESOLUTION = 16

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: Tensor, gain: float = 1.0) -> Tensor:
    """Depthwise 5x5 binomial filter with mirror ('reflect') padding; x: [N, C, H, W]."""
    kernel = (torch.outer(_BINOMIAL, _BINOMIAL) * gain).to(x)
    channels = x.shape[1]
    weight = kernel.expand(channels, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), weight, groups=channels)


def pyr_down(x: Tensor) -> Tensor:
    return _blur(x)[:, :, ::2, ::2]


def pyr_up(x: Tensor, size: tuple[int, int]) -> Tensor:
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _blur(up, gain=4.0)[:, :, : size[0], : size[1]]


def laplacian_pyramid(images: Tensor, num_levels: int) -> list[Tensor]:
    """images [N, C, H, W]  ->  num_levels tensors, resolution halving; band-pass levels, low-pass last."""
    levels = [images.float()]
    for _ in range(1, num_levels):
        low = pyr_down(levels[-1])
        levels[-1] = levels[-1] - pyr_up(low, levels[-1].shape[-2:])
        levels.append(low)
    return levels


def pyramid_resolutions(size: int, min_resolution: int = MIN_RESOLUTION) -> list[int]:
    """ProGAN's level list: size, size/2, ... while >= min_resolution (32 px -> [32, 16])."""
    if size < min_resolution:
        raise ValueError(f"SWD needs images of at least {min_resolution} px, got {size}")
    out = []
    while size >= min_resolution:
        out.append(size)
        size //= 2
    return out


def patch_descriptors(level: Tensor, patches_per_image: int, generator: torch.Generator,
                      patch_size: int = PATCH_SIZE) -> Tensor:
    """Random patches of one pyramid level [N, C, h, w]  ->  [N * k, C, p, p], k = min(asked, positions)."""
    n, c, h, w = level.shape
    ny, nx = h - patch_size + 1, w - patch_size + 1
    if ny < 1 or nx < 1:
        raise ValueError(f"level {h}x{w} is smaller than the {patch_size}x{patch_size} patch")
    k = min(patches_per_image, ny * nx)
    ys = torch.randint(0, ny, (n, k), generator=generator)
    xs = torch.randint(0, nx, (n, k), generator=generator)
    offsets = torch.arange(patch_size)
    img = torch.arange(n)[:, None, None, None, None]
    chan = torch.arange(c)[None, None, :, None, None]
    yy = (ys[:, :, None, None, None] + offsets[None, None, None, :, None])
    xx = (xs[:, :, None, None, None] + offsets[None, None, None, None, :])
    return level[img, chan, yy.to(level.device), xx.to(level.device)].reshape(n * k, c, patch_size, patch_size)


def normalize_descriptors(desc: Tensor) -> Tensor:
    """[M, C, p, p]: subtract per-channel mean, divide by per-channel std (of this set)  ->  [M, C*p*p]."""
    desc = desc.double()
    desc = desc - desc.mean(dim=(0, 2, 3), keepdim=True)
    std = desc.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    desc = desc / std.clamp_min(1e-12)
    return desc.reshape(desc.shape[0], -1).float()


def _quantiles(sorted_values: Tensor, m: int) -> Tensor:
    """Resample sorted columns [n, D] at the m rank midpoints (i + 0.5) / m by linear interpolation."""
    n = sorted_values.shape[0]
    if n == m:
        return sorted_values
    pos = ((torch.arange(m, dtype=torch.float64) + 0.5) * n / m - 0.5).clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    frac = (pos - lo).to(sorted_values.dtype)[:, None]
    return sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac


def sliced_wasserstein(a: Tensor, b: Tensor, repeats: int, dirs_per_repeat: int,
                       generator: torch.Generator) -> float:
    """Sliced W1 between descriptor sets a [Ma, D] and b [Mb, D] (unscaled)."""
    if a.shape[1] != b.shape[1]:
        raise ValueError("descriptor dimensions differ")
    results = []
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], dirs_per_repeat, generator=generator)
        dirs = (dirs / dirs.norm(dim=0, keepdim=True)).to(a)
        proj_a = torch.sort(a @ dirs, dim=0).values
        proj_b = torch.sort(b @ dirs, dim=0).values
        m = min(proj_a.shape[0], proj_b.shape[0])
        proj_a, proj_b = _quantiles(proj_a, m), _quantiles(proj_b, m)
        results.append((proj_a - proj_b).abs().mean().item())
    return sum(results) / len(results)


@dataclass(frozen=True)
class SWDResult:
    levels: dict[int, float]  # resolution -> SWD x 1e3 at that pyramid level
    mean: float  # mean over levels, x 1e3: the value stored as the `swd` metric
    descriptors: dict[int, tuple[int, int]]  # resolution -> (patches of set a, patches of set b)
    scale: float = SWD_SCALE


@torch.no_grad()
def swd(images_a: Tensor, images_b: Tensor, seed: int = 0, patches_per_image: int = 128,
        repeats: int = 4, dirs_per_repeat: int = 128,
        min_resolution: int = MIN_RESOLUTION) -> SWDResult:
    """Sliced Wasserstein distance (x1e3) between two image sets.

    images_a: [Na, 3, H, W], images_b: [Nb, 3, H, W], values in [-1, 1] (any affine range works: the
    descriptors are normalised). Square or not; levels follow min(H, W). Deterministic given ``seed``.
    """
    if images_a.dim() != 4 or images_a.shape[1:] != images_b.shape[1:]:
        raise ValueError(f"expected two [N, C, H, W] sets of one image shape, got "
                         f"{tuple(images_a.shape)} and {tuple(images_b.shape)}")
    resolutions = pyramid_resolutions(min(images_a.shape[-2:]), min_resolution)
    pyr_a = laplacian_pyramid(images_a, len(resolutions))
    pyr_b = laplacian_pyramid(images_b, len(resolutions))
    levels, counts = {}, {}
    directions = torch.Generator().manual_seed(seed)
    for res, level_a, level_b in zip(resolutions, pyr_a, pyr_b):
        # fresh position streams with the same seed: same-shape sets are cut at the same places
        desc_a = patch_descriptors(level_a, patches_per_image, torch.Generator().manual_seed(seed + res))
        desc_b = patch_descriptors(level_b, patches_per_image, torch.Generator().manual_seed(seed + res))
        counts[res] = (desc_a.shape[0], desc_b.shape[0])
        value = sliced_wasserstein(normalize_descriptors(desc_a), normalize_descriptors(desc_b),
                                   repeats, dirs_per_repeat, directions)
        levels[res] = value * SWD_SCALE
    return SWDResult(levels=levels, mean=sum(levels.values()) / len(levels), descriptors=counts)
