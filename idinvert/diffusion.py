"""Semantic diffusion (paper Fig. 8): blend a target's masked region into a context image by inversion.

As the official ``diffuse`` (genforce/idinvert_pytorch ``utils/inverter.py``), written anew here:

1. composite = target * mask + context * (1 - mask) (default mask: a centre box, as the official
   script copies the face centre: a 110 px square centred at (125, 145) of a 256 px image);
2. start from the domain-guided encoder's code of the composite, E(composite);
3. optimise the W+ code with the pixel and perceptual losses restricted to the mask —
   ``mean((mask * (x - G(w)))^2)`` and ``F(mask * x)`` vs ``F(mask * G(w))`` — and *no* encoder
   regulariser, so the generator is free to fill in the outside region in its own way, in domain.

Pixels outside the mask never enter the loss: the result depends on the context only through the
encoder start. With ``init="mean"`` (or given codes) the context's outside pixels do not matter at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from idinvert.grids import image_row, stack_rows
from idinvert.inversion import DEFAULT_LR, DEFAULT_STEPS, LoopOptions, encode, optimize_codes
from idinvert.loss_terms import PerceptualLoss, PixelLoss
from idinvert.utils import device_of

__all__ = ["OFFICIAL_CROP", "center_box", "box_mask", "resize_mask", "composite", "DiffusionResult",
           "diffuse", "diffusion_grid"]

# The official script's crop at 256 px: size 110, centre (x=125, y=145). Kept as fractions of the side.
OFFICIAL_CROP = {"size": 110 / 256, "center_x": 125 / 256, "center_y": 145 / 256}


def center_box(resolution: int, size: float = OFFICIAL_CROP["size"],
               center_x: float = OFFICIAL_CROP["center_x"],
               center_y: float = OFFICIAL_CROP["center_y"]) -> tuple[int, int, int, int]:
    """The official crop scaled to ``resolution``: (x0, y0, x1, y1) in pixels, x1/y1 exclusive."""
    side = max(1, round(size * resolution))
    x0 = round(center_x * resolution) - side // 2
    y0 = round(center_y * resolution) - side // 2
    x0 = min(max(0, x0), resolution - side)
    y0 = min(max(0, y0), resolution - side)
    return x0, y0, x0 + side, y0 + side


def box_mask(resolution: int, box: Sequence[int]) -> Tensor:
    """[1, 1, R, R] float mask, 1 inside ``box`` = (x0, y0, x1, y1) (pixels, x1/y1 exclusive)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(resolution, x1), min(resolution, y1)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {tuple(box)} is empty inside a {resolution} px image")
    mask = torch.zeros(1, 1, resolution, resolution)
    mask[..., y0:y1, x0:x1] = 1.0
    return mask


def resize_mask(mask: Tensor, resolution: int, threshold: float = 0.5) -> Tensor:
    """Any [H, W] / [1, H, W] / [1, 1, H, W] mask in [0, 1] -> binary [1, 1, R, R] (area-resampled, then
    thresholded, so a thin mask does not vanish unevenly)."""
    m = mask.float()
    while m.ndim < 4:
        m = m[None]
    if m.shape[1] != 1:
        m = m.mean(dim=1, keepdim=True)
    if m.shape[-2:] != (resolution, resolution):
        m = F.interpolate(m, size=(resolution, resolution), mode="area")
    m = (m >= threshold).float()
    if not m.any():
        raise ValueError("the mask selects no pixel at this resolution")
    return m


def composite(target: Tensor, context: Tensor, mask: Tensor) -> Tensor:
    """target, context [B, 3, R, R] (target may be [1, ...] for all), mask [1|B, 1, R, R] ->
    target inside the mask, context outside."""
    return target * mask + context * (1 - mask)


@dataclass
class DiffusionResult:
    """composite / result: [B, 3, R, R] in [-1, 1]; codes, init_codes: [B, L, D]; mask [B, 1, R, R];
    masked_mse: per image, mean over the *mask's* pixels of the squared error (a readable number; the
    loss itself is the official un-normalised one); loss_history [T, B]."""

    composite: Tensor
    result: Tensor
    init_result: Tensor
    codes: Tensor
    init_codes: Tensor
    mask: Tensor
    masked_mse: Tensor
    loss_history: Tensor



def diffuse(bundle: Any, target: Tensor, context: Tensor, mask: Optional[Tensor] = None, *,
            steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR, lambda_perceptual: Optional[float] = None,
            init: str | Tensor = "encoder", seed: Optional[int] = 0) -> DiffusionResult:
    """Semantic diffusion of ``target`` into ``context`` with the bundle's G (and E, F).

    target: [1 | B, 3, R, R], context: [B, 3, R, R], in [-1, 1]; mask: [1 | B, 1, R, R] in {0, 1}
      (default: ``center_box``). lambda_perceptual: weight of the masked perceptual term (None: the
      bundle's ``info.lambda_vgg_default``, the weight the inversion methods use for its F; 0 turns
      it off). init: "encoder" (official: E(composite)), "mean" (the mean w), or codes [B, L, D].
    """
    g = bundle.generator
    device = device_of(g)
    res = g.resolution
    if context.ndim != 4 or target.ndim != 4 or context.shape[1:] != (3, res, res) \
            or target.shape[1:] != (3, res, res):
        raise ValueError(f"target and context must be [B, 3, {res}, {res}], got {tuple(target.shape)} and "
                         f"{tuple(context.shape)}")
    b = context.shape[0]
    if target.shape[0] not in (1, b):
        raise ValueError(f"target batch {target.shape[0]} must be 1 or the context batch {b}")
    if mask is None:
        mask = box_mask(res, center_box(res))
    mask = resize_mask(mask, res) if mask.shape[-2:] != (res, res) else mask.float()
    while mask.ndim < 4:
        mask = mask[None]
    mask = mask.expand(b, 1, res, res).to(device)
    x = composite(target.to(device).float(), context.to(device).float(), mask)

    if lambda_perceptual is None:
        lambda_perceptual = float(bundle.info.lambda_vgg_default or 0.0)
    perceptual = getattr(bundle, "perceptual", None)
    if lambda_perceptual and perceptual is None:
        raise ValueError("lambda_perceptual > 0 needs the bundle's perceptual model F")

    if isinstance(init, Tensor):
        init_codes = init.to(device).float()
    elif init == "encoder":
        if getattr(bundle, "encoder", None) is None:
            raise ValueError(f"bundle {getattr(bundle, 'name', '?')!r} has no domain-guided encoder; "
                             "use init='mean'")
        init_codes = encode(bundle.encoder, x, batch_size=max(1, b)).to(device)
    elif init == "mean":
        w_avg = bundle.w_avg.detach().to(device=device, dtype=torch.float32).reshape(1, 1, -1)
        init_codes = w_avg.expand(b, g.num_layers, w_avg.shape[-1]).clone()
    else:
        raise ValueError(f"init must be 'encoder', 'mean' or a code tensor, got {init!r}")

    terms = [PixelLoss(mask=mask)]
    if lambda_perceptual:
        terms.append(PerceptualLoss(perceptual, lambda_perceptual, mask=mask))
    opt = optimize_codes(g, x, init_codes, terms, steps=steps, lr=lr, space="wp", options=LoopOptions(seed=seed))
    with torch.no_grad():
        result = g.synthesis(opt.codes).clamp(-1, 1)
        init_result = g.synthesis(init_codes).clamp(-1, 1)
        err = ((x - result) * mask).pow(2).sum(dim=(1, 2, 3)) / (mask.sum(dim=(1, 2, 3)) * 3)
    return DiffusionResult(composite=x.cpu(), result=result.float().cpu(),
                           init_result=init_result.float().cpu(),
                           codes=opt.codes.cpu(), init_codes=init_codes.cpu(), mask=mask.cpu(),
                           masked_mse=err.float().cpu(), loss_history=opt.loss_history)


def diffusion_grid(target: Tensor, context: Tensor, result: DiffusionResult, min_tile: int = 128,
                   gap: int = 2) -> Tensor:
    """One row per context: target | context | composite | result, nearest-upscaled to ``min_tile`` px
    with white gaps -> [3, H', W'] in [-1, 1]."""
    b = result.result.shape[0]
    rows = []
    for i in range(b):
        tiles = [target[min(i, target.shape[0] - 1)], context[i], result.composite[i], result.result[i]]
        rows.append(image_row(tiles, min_tile, gap))
    return stack_rows(rows, gap)
