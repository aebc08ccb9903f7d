"""The one batched optimisation loop behind every optimisation-based inversion method.

Objective per image i (paper Eq. 5, reductions as the official genforce/idinvert_pytorch
``utils/inverter.py``, where every term is a *mean* over its elements):

    loss_i = lambda_pixel      * mean_{C,H,W}((x_i - G(w_i))^2)
           + lambda_perceptual * mean_{C,h,w}((F(x_i) - F(G(w_i)))^2)
           + lambda_dom        * mean_{L,D}((w_i - E(G(w_i)))^2)

The official code inverts one image at a time, so its scalar means are exactly these per-image means.
Here a batch is optimised at once and the per-image losses are **summed** (not averaged): the gradient
of image i's code is then the gradient of loss_i alone, whatever the batch size, and Adam acts
elementwise, so a batch yields the same codes as one image at a time (up to float rounding of batched
kernels). Gradients flow through E(G(w)) into w, as in the official code (E is not detached).

With ``mask`` (semantic diffusion) the pixel and perceptual terms follow the official ``diffuse``:
the pixel term is ``mean((mask * (x - G(w)))^2)`` over all pixels (not renormalised by the mask
area), and F sees ``mask * x`` and ``mask * G(w)``.

A non-finite loss stops only its own image: its code is frozen at the last value whose loss was
finite (the start as given if it never was -- e.g. a NaN image's NaN encoder start), it is marked
failed with a reason, and the batch goes on.
Failure bookkeeping stays on the device so the loop makes no host synchronisation per step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
import torch.nn as nn

from idinvert.utils import device_of

__all__ = ["OptimizationResult", "optimize_codes", "encode", "frozen",
           "DEFAULT_LR", "DEFAULT_STEPS", "DEFAULT_LAMBDA_DOM"]

# Paper / official code defaults (Adam lr 0.01, 100 iterations, lambda_dom 2).
DEFAULT_LR = 0.01
DEFAULT_STEPS = 100
DEFAULT_LAMBDA_DOM = 2.0


@dataclass
class OptimizationResult:
    """codes [B, L, D] (detached; the generator's device and dtype); failed [B] bool (CPU);
    reasons per image (None or why it failed); loss_history [T, B] float32 on the CPU: each image's
    total loss at each step taken (NaN once an image has failed)."""

    codes: torch.Tensor
    failed: torch.Tensor
    reasons: list = field(default_factory=list)
    loss_history: torch.Tensor = field(default_factory=lambda: torch.empty(0))


def _modules(*objs) -> list[nn.Module]:
    return [o for o in objs if isinstance(o, nn.Module)]


@contextlib.contextmanager
def frozen(*objs) -> Iterator[None]:
    """Eval mode and ``requires_grad=False`` for every parameter of the given modules, restored after.

    Eval mode matters for the encoder's batch norm: in train mode its output for one image would
    depend on the other images in the batch. Non-module callables are ignored.
    """
    mods = _modules(*objs)
    modes = [(m, m.training) for m in mods]
    flags = [(p, p.requires_grad) for m in mods for p in m.parameters()]
    try:
        for m in mods:
            m.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.train(mode)



def _float_dtype_of(module) -> torch.dtype:
    for t in module.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


@torch.no_grad()
def encode(encoder: Callable, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Encoder-only inversion: images [N, 3, H, W] in [-1, 1] -> W+ codes [N, L, D], in chunks.

    Runs on the encoder's device (eval mode, no gradients); returns codes on that device.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = device_of(encoder) if isinstance(encoder, nn.Module) else images.device
    out = []
    with frozen(encoder):
        for chunk in images.split(batch_size):
            out.append(encoder(chunk.to(device)))
    return torch.cat(out) if out else images.new_zeros(0)


def optimize_codes(generator: nn.Module, targets: torch.Tensor, init_codes: torch.Tensor, *,
                   steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR, lambda_pixel: float = 1.0,
                   lambda_perceptual: float = 0.0, perceptual: Optional[Callable] = None,
                   lambda_dom: float = 0.0, encoder: Optional[Callable] = None, space: str = "wp",
                   mask: Optional[torch.Tensor] = None, progress: bool = False,
                   seed: Optional[int] = None) -> OptimizationResult:
    """Optimise W+ (or W) codes so that ``generator.synthesis(codes)`` reconstructs ``targets``.

    generator: has ``.synthesis(wp [B, L, D]) -> images [B, 3, H, W]``.
    targets: [B, 3, H, W] in [-1, 1].  init_codes: [B, L, D] (for ``space="w"`` also [B, 1, D] or
      [B, D]; a [B, L, D] start is averaged over layers — exact for mean-w or W-space codes).
    perceptual: F, images -> features; used when ``lambda_perceptual > 0``.
    encoder: E, images -> [B, L, D]; the domain regulariser is used when ``lambda_dom > 0``.
    space: "wp" optimises one code per layer; "w" one w per image broadcast to all L layers.
    mask: [B, 1, H, W] (or broadcastable to the images) restricting the image terms.
    seed: if given, the global RNG is seeded inside a forked RNG state (so a generator with random
      noise is reproducible and the caller's RNG stream is untouched).
    Networks are put in eval mode with frozen parameters for the duration and restored afterwards.
    """
    if space not in ("wp", "w"):
        raise ValueError(f"space must be 'wp' or 'w', got {space!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if targets.ndim != 4:
        raise ValueError(f"targets must be [B, 3, H, W], got {tuple(targets.shape)}")
    use_perceptual = bool(lambda_perceptual) and perceptual is not None
    use_dom = bool(lambda_dom) and encoder is not None
    if lambda_perceptual and perceptual is None:
        raise ValueError("lambda_perceptual > 0 needs a perceptual model F")
    if lambda_dom and encoder is None:
        raise ValueError("lambda_dom > 0 needs an encoder E")

    device = device_of(generator)
    # Codes and targets take the generator's dtype: float32 normally; float64 lets tests check the
    # batch-independence of the loop itself, free of float32 rounding.
    dtype = _float_dtype_of(generator)
    x = targets.to(device=device, dtype=dtype)
    B = x.shape[0]
    num_layers = int(getattr(generator, "num_layers", init_codes.shape[1] if init_codes.ndim == 3 else 1))
    init = init_codes.detach().to(device=device, dtype=dtype)
    if space == "w":
        if init.ndim == 2:
            init = init[:, None, :]
        elif init.shape[1] != 1:
            init = init.mean(dim=1, keepdim=True)
    if init.ndim != 3 or init.shape[0] != B:
        raise ValueError(f"init_codes must be [B={B}, L, D], got {tuple(init_codes.shape)}")
    if mask is not None:
        mask = mask.to(device=device, dtype=dtype)

    rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else []) \
        if seed is not None else contextlib.nullcontext()
    with rng, frozen(generator, encoder, perceptual):
        if seed is not None:
            torch.manual_seed(seed)
        x_masked = x * mask if mask is not None else x
        with torch.no_grad():
            target_feat = perceptual(x_masked) if use_perceptual else None

        def per_image_loss(param: torch.Tensor) -> torch.Tensor:
            wp = param.expand(B, num_layers, param.shape[2]) if space == "w" else param
            rec = generator.synthesis(wp)
            diff = (x - rec) if mask is None else (x - rec) * mask
            loss = lambda_pixel * diff.pow(2).flatten(1).mean(1)
            if use_perceptual:
                rec_in = rec if mask is None else rec * mask
                feat = perceptual(rec_in)
                loss = loss + lambda_perceptual * (target_feat - feat).pow(2).flatten(1).mean(1)
            if use_dom:
                w_rec = encoder(rec).reshape(wp.shape)
                loss = loss + lambda_dom * (wp - w_rec).pow(2).flatten(1).mean(1)
            return loss

        param = init.clone().requires_grad_(True)
        last_good = init.clone()
        failed = torch.zeros(B, dtype=torch.bool, device=device)
        fail_step = torch.full((B,), -1, dtype=torch.long, device=device)
        fail_kind = torch.zeros(B, dtype=torch.long, device=device)  # 1 nan, 2 inf, 3 non-finite code
        optimizer = torch.optim.Adam([param], lr=lr)
        history = []
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=steps, desc="invert", leave=False)
        freeze = failed.view(B, 1, 1)
        try:
            for step in range(steps):
                optimizer.zero_grad(set_to_none=False)
                losses = per_image_loss(param)
                ok = torch.isfinite(losses.detach())
                newly = ~ok & ~failed
                fail_step = torch.where(newly, step, fail_step)
                fail_kind = torch.where(newly, torch.where(torch.isnan(losses.detach()), 1, 2), fail_kind)
                failed |= newly
                # Codes of images still going had a finite loss at this step: remember them.
                last_good = torch.where(freeze, last_good, param.detach())
                history.append(torch.where(failed, float("nan"), losses.detach()))
                # where() gives failed images an exactly-zero upstream gradient; their own backward
                # path may still produce NaN (0 * inf), so their gradient is zeroed explicitly too.
                total = torch.where(failed, torch.zeros_like(losses), losses).sum()
                total.backward()
                with torch.no_grad():
                    param.grad.masked_fill_(freeze, 0.0)
                    optimizer.step()
                    param.copy_(torch.where(freeze, last_good, param))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=float(history[-1].nanmean()))
                if step % 10 == 9 and bool(failed.all()):
                    break
            with torch.no_grad():
                # The last update can itself produce a non-finite code (a NaN gradient with a finite
                # loss): such an image is failed too and keeps its last good code.
                bad_code = ~torch.isfinite(param).flatten(1).all(1) & ~failed
                fail_step = torch.where(bad_code, len(history), fail_step)
                fail_kind = torch.where(bad_code, 3, fail_kind)
                failed |= bad_code
                codes = torch.where(freeze, last_good, param.detach())
        finally:
            if bar is not None:
                bar.close()

    if space == "w":
        codes = codes.expand(B, num_layers, codes.shape[2])
    codes = codes.contiguous().clone()
    failed_cpu = failed.cpu()
    steps_cpu, kinds_cpu = fail_step.cpu().tolist(), fail_kind.cpu().tolist()
    kind_names = {1: "loss became nan", 2: "loss became inf", 3: "code became non-finite"}
    reasons = [f"{kind_names[kinds_cpu[i]]} at step {steps_cpu[i]}" if failed_cpu[i] else None
               for i in range(B)]
    loss_history = torch.stack(history).float().cpu() if history else torch.empty(0, B)
    return OptimizationResult(codes=codes, failed=failed_cpu, reasons=reasons, loss_history=loss_history)
