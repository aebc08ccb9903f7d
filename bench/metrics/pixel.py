"""Pixel-space reconstruction metrics: per-image MSE and PSNR on images in [-1, 1]."""
from __future__ import annotations

import math

import torch
from torch import Tensor

# Peak-to-peak range of images in [-1, 1]. PSNR with this peak on [-1, 1] equals PSNR with peak 1 on
# the same images mapped to [0, 1] (both the error and the peak scale by 2), so the numbers are the usual ones.
PEAK_TO_PEAK = 2.0


def _check_pair(images: Tensor, recons: Tensor) -> None:
    if images.shape != recons.shape or images.dim() != 4:
        raise ValueError(f"expected two [B, 3, H, W] tensors of one shape, got "
                         f"{tuple(images.shape)} and {tuple(recons.shape)}")


def mse(images: Tensor, recons: Tensor) -> Tensor:
    """Mean squared error per image, over all pixels and channels, values in [-1, 1].

    images, recons: [B, 3, H, W] in [-1, 1]  ->  [B] (float32).
    The official idinvert code reports MSE on this scale (4x the MSE of the same images in [0, 1]).
    """
    _check_pair(images, recons)
    return (images.float() - recons.float()).pow(2).mean(dim=(1, 2, 3))


def psnr(images: Tensor, recons: Tensor, peak_to_peak: float = PEAK_TO_PEAK) -> Tensor:
    """Peak signal-to-noise ratio per image in dB: 10·log10(peak² / mse); +inf for identical images.

    images, recons: [B, 3, H, W] in [-1, 1]  ->  [B].
    """
    return psnr_from_mse(mse(images, recons), peak_to_peak)


def psnr_from_mse(mse_values: Tensor, peak_to_peak: float = PEAK_TO_PEAK) -> Tensor:
    """PSNR in dB from per-image MSE values [B] (same peak convention as :func:`psnr`)."""
    return 10.0 * (math.log10(peak_to_peak ** 2) - torch.log10(mse_values))
