"""Operations on W+ codes relative to attribute boundaries: signed distance, edits, interpolation.

A boundary (``idinvert.official_boundaries.Boundary``) holds one unit normal per W+ layer,
``normal [L, D]``, and the layers it applies to, ``layers``. Boundaries trained here
(``idinvert.boundaries``) live in W: every row of ``normal`` is the same unit vector n. Official
idinvert boundaries have a different unit vector per layer.

Signed distance of a W+ code ``w [L, D]`` to a boundary (the InterFaceGAN score ``n·w + b`` extended
to W+):

    d(w) = mean_{l in layers} ( normal_l · w_l ) + offset

``offset`` is the SVM intercept divided by ``||coef||`` (so ``d`` is a Euclidean distance in W, in the
same units as the edit step ``alpha``); official boundaries carry none (0). For a code that is one w
broadcast to every layer this is exactly InterFaceGAN's distance ``n·w + b/||coef||``. The mean (not
the sum) keeps the scale of a single layer, so distances of W codes and W+ codes are comparable.

An edit moves every applied layer by ``alpha`` along its normal: ``w_l + alpha * normal_l`` for l in
``layers`` (the official ``manipulate`` with ``layerwise_manipulation``); this changes ``d`` by exactly
``alpha`` (rows are unit vectors).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["boundary_offset", "layer_mask", "signed_distance", "edit_codes", "interpolate_codes"]


def boundary_offset(boundary: Any) -> float:
    """The boundary's intercept in distance units (0.0 when it has none, as official files)."""
    for name in ("offset", "intercept"):
        value = getattr(boundary, name, None)
        if value is not None:
            return float(value)
    return 0.0


def layer_mask(boundary: Any, num_layers: int, device=None) -> Tensor:
    """[L] float: 1 on the boundary's layers, 0 elsewhere."""
    layers = list(boundary.layers) if boundary.layers is not None else list(range(num_layers))
    if not layers:
        raise ValueError(f"boundary {getattr(boundary, 'attribute', '?')!r} applies to no layer")
    bad = [l for l in layers if not 0 <= int(l) < num_layers]
    if bad:
        raise ValueError(f"boundary {getattr(boundary, 'attribute', '?')!r}: layers {bad} out of range "
                         f"for a {num_layers}-layer code")
    mask = torch.zeros(num_layers, device=device)
    mask[torch.as_tensor([int(l) for l in layers], dtype=torch.long)] = 1.0
    return mask


def _normal_for(codes: Tensor, boundary: Any) -> Tensor:
    normal = torch.as_tensor(boundary.normal).to(device=codes.device, dtype=codes.dtype)
    if normal.ndim == 1:
        normal = normal.expand(codes.shape[1], -1)
    if normal.shape != codes.shape[1:]:
        raise ValueError(f"boundary {getattr(boundary, 'attribute', '?')!r} has normal "
                         f"{tuple(normal.shape)}, codes are [B, {codes.shape[1]}, {codes.shape[2]}]")
    return normal


def signed_distance(codes: Tensor, boundary: Any) -> Tensor:
    """codes [B, L, D] -> signed distance [B] (see the module docstring); positive = attribute side."""
    if codes.ndim != 3:
        raise ValueError(f"codes must be W+ [B, L, D], got {tuple(codes.shape)}")
    normal = _normal_for(codes, boundary)
    mask = layer_mask(boundary, codes.shape[1], codes.device).to(codes.dtype)
    per_layer = (codes * normal).sum(dim=2)  # [B, L]
    return (per_layer * mask).sum(dim=1) / mask.sum() + boundary_offset(boundary)


def edit_codes(codes: Tensor, boundary: Any, alphas: Sequence[float] | Tensor) -> Tensor:
    """codes [B, L, D], alphas [K] -> edited codes [B, K, L, D]: layer l in ``boundary.layers`` moves
    by ``alpha * normal_l``; the other layers are unchanged."""
    if codes.ndim != 3:
        raise ValueError(f"codes must be W+ [B, L, D], got {tuple(codes.shape)}")
    normal = _normal_for(codes, boundary)
    mask = layer_mask(boundary, codes.shape[1], codes.device).to(codes.dtype)
    alphas = torch.as_tensor(alphas, dtype=codes.dtype, device=codes.device).reshape(-1)
    step = normal * mask[:, None]  # [L, D]
    return codes[:, None] + alphas[None, :, None, None] * step[None, None]


def interpolate_codes(codes_a: Tensor, codes_b: Tensor, steps: int) -> Tensor:
    """Linear interpolation in W+: codes_a, codes_b [P, L, D] -> [P, steps, L, D], t = linspace(0, 1,
    steps) so index 0 is codes_a and index steps-1 is codes_b."""
    if codes_a.shape != codes_b.shape or codes_a.ndim != 3:
        raise ValueError(f"expected two [P, L, D] tensors of one shape, got {tuple(codes_a.shape)} and "
                         f"{tuple(codes_b.shape)}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (the two endpoints), got {steps}")
    t = torch.linspace(0, 1, steps, dtype=codes_a.dtype, device=codes_a.device)[None, :, None, None]
    return torch.lerp(codes_a[:, None], codes_b[:, None], t)
