"""Pivotal Tuning Inversion (PTI, Roich et al. 2022), batched over images on the CPU.

    pivot  = argmin_w  loss(x, G(w))            W-space optimisation (idinvert.inversion's loop)
    theta* = argmin_theta loss(x, G_theta(pivot)) [+ locality regulariser]   Adam on G's synthesis
                                                                             weights, pivot fixed

Each image gets its own copy of the synthesis weights. A batch of B images is tuned at once with
per-image weights stacked along a leading dimension and the synthesis network evaluated with
`torch.func.functional_call` under `torch.func.vmap` (a convolution with per-sample weights becomes
one grouped convolution). The loss is the *sum* of per-image losses, so image i's weights get
exactly the gradient of image i's loss, and Adam is elementwise: a batch gives what tuning each image
alone gives, up to float rounding (tested).

Per image i (`lambda_perceptual` weighs the harness's F as elsewhere; official PTI: L2 1 + LPIPS 1):
    loss_i = lambda_pixel * mean((x_i - G_i(p_i))^2) + lambda_perceptual * mean((F(x_i) - F(G_i(p_i)))^2)
           [+ locality: lambda_l2 * mean((G_i(w_r) - G(w_r))^2) + lambda_f * mean((F(G_i(w_r)) - F(G(w_r)))^2),
              w_r = p_i + alpha * (w_z - p_i) / ||w_z - p_i||, w_z a fresh mapped code]

Defaults and sources (official = danielroich/PTI `configs/hyperparameters.py`):
- pivot: optimisation in W (official `first_inv_type='w'`), 450 steps, lr 5e-3 (official
  first_inv_steps / first_inv_lr; the official projector adds lr ramps and noise regularisation,
  which idinvert.inversion's plain Adam loop does not). For a generator with per-layer W
  (`repeat_w=False`) the mapping's W is the whole [L, D] code, so the pivot optimises [L, D].
- tuning: Adam lr 3e-4, 350 steps (official pti_learning_rate / max_pti_steps), the generator's
  stored noise (official noise_mode='const'). Official PTI stops an image early once LPIPS <= 0.06;
  there is no LPIPS here, so every image takes all steps.
- locality regulariser: off by default (official use_locality_regularization=False); when on,
  1 sample per step, weights 0.1 / 0.1 (official regulizer_l2_lambda / regulizer_lpips_lambda, the
  F term standing in for LPIPS), alpha = 30 in 512-d W (official regulizer_alpha) rescaled by
  sqrt(D / 512) (distances of codes with a similar per-coordinate spread grow like sqrt(D): an
  assumption, not measured). With the regulariser on, the random codes depend on the batch, so
  batch = one-at-a-time holds only with it off.
- what it costs: one copy of the synthesis weights per image (`TunedWeights.bytes_per_image`);
  `TunedWeights.compact()` stores the changes in fp16 (half that). Unused parameters (the coarser
  toRGB layers) are not tuned. Embedded 32 px generator: 329,571 tuned parameters, 1.32 MB per image
  in fp32, 0.66 MB compact.

Measured (embedded bundle, 32 px, 1 torch thread on the shared 2-core dev machine, load ~9, so
+-30%): tuning 8 images for 20 steps batched 4.1 s = 39 image-steps/s, against 19.9 for the
one-image loop with an ordinary module copy (2.0x) and 17.0 for this code at B = 1 (2.3x); a
batch-size sweep in another run gave 12.6 / 21.6 / 25.8 / 34.5 / 40.0 image-steps/s at
B = 1 / 4 / 8 / 16 / 32. 350 steps therefore cost about 9-14 s per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
from torch.func import functional_call, vmap

from idinvert.codes import mapping_codes, mean_code
from idinvert.inversion import LoopOptions, OptimizationResult, frozen, optimize_codes
from idinvert.loss_terms import PerceptualLoss, PixelLoss
from idinvert.speed import EAGER, Speed

__all__ = ["PIVOT_STEPS", "PIVOT_LR", "TUNING_STEPS", "TUNING_LR", "Locality", "TunedWeights",
           "TunedDecoder", "PTIResult", "w_space_pivots", "pivotal_tuning", "pti_invert", "tunable_names"]

PIVOT_STEPS = 450      # official first_inv_steps
PIVOT_LR = 5e-3        # official first_inv_lr
TUNING_STEPS = 350     # official max_pti_steps
TUNING_LR = 3e-4       # official pti_learning_rate


@dataclass
class Locality:
    """PTI's locality regulariser (official values; `alpha=None`: 30 * sqrt(D / 512))."""
    lambda_l2: float = 0.1
    lambda_perceptual: float = 0.1
    alpha: Optional[float] = None
    samples: int = 1

    def alpha_for(self, w_dim: int) -> float:
        return float(self.alpha) if self.alpha is not None else 30.0 * math.sqrt(w_dim / 512.0)


def tunable_names(synthesis: nn.Module, code: torch.Tensor) -> list[str]:
    """Names of the synthesis parameters PTI tunes: every floating parameter that the image of
    `code` [1, L, D] depends on (the unused toRGB layers of coarser resolutions and the `lod`
    setting are left out: tuning them changes nothing and would cost memory)."""
    named = [(n, p) for n, p in synthesis.named_parameters()
             if p.is_floating_point() and n.split(".")[-1] != "lod"]
    flags = [p.requires_grad for _, p in named]
    try:
        for _, p in named:
            p.requires_grad_(True)
        with torch.enable_grad():
            out = synthesis(code.detach()).sum()
            grads = torch.autograd.grad(out, [p for _, p in named], allow_unused=True)
    finally:
        for (_, p), f in zip(named, flags):
            p.requires_grad_(f)
    return [n for (n, _), g in zip(named, grads) if g is not None]


def _render(synthesis: nn.Module, fixed: dict, params: dict, codes: torch.Tensor) -> torch.Tensor:
    """codes [N, L, D] rendered each with its own weights params[name] [N, ...] -> [N, 3, R, R]."""
    def one(p, w):
        return functional_call(synthesis, ({**fixed, **p},), (w.unsqueeze(0),))[0]
    return vmap(one, in_dims=(0, 0), randomness="error")(params, codes)


def _split_state(synthesis: nn.Module, names: Sequence[str]) -> dict:
    """Everything of the module's state that is not tuned (buffers and frozen parameters)."""
    tuned = set(names)
    state = {n: p for n, p in synthesis.named_parameters() if n not in tuned}
    state.update(dict(synthesis.named_buffers()))
    return state


@dataclass
class TunedWeights:
    """Per-image tuned synthesis weights, stored as changes from the original weights.

    deltas: name -> [B, *shape] (tuned - original), in float32 or (compact) float16.
    synthesis: the original generator's synthesis module (shared, not copied).
    """
    deltas: dict
    synthesis: nn.Module

    def __len__(self) -> int:
        return next(iter(self.deltas.values())).shape[0] if self.deltas else 0

    def bytes_per_image(self) -> int:
        """Bytes of tuned weights one image costs in this storage form."""
        return sum(v[0].numel() * v.element_size() for v in self.deltas.values())

    def compact(self, dtype: torch.dtype = torch.float16) -> "TunedWeights":
        """The same changes stored in `dtype` (fp16 halves the memory; changes are small, so the
        rounding is small against the weights themselves)."""
        return TunedWeights({k: v.to(dtype) for k, v in self.deltas.items()}, self.synthesis)

    def select(self, indices: Sequence[int] | torch.Tensor) -> "TunedWeights":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return TunedWeights({k: v[idx.to(v.device)] for k, v in self.deltas.items()}, self.synthesis)

    def params(self, indices: Sequence[int] | torch.Tensor) -> dict:
        """Full weights (original + change) for each of `indices`: name -> [len, *shape]."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        base = dict(self.synthesis.named_parameters())
        return {k: base[k].detach().unsqueeze(0) + v[idx.to(v.device)].to(base[k].dtype)
                for k, v in self.deltas.items()}

    def synthesize(self, codes: torch.Tensor, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Decode codes [N, L, D], code n with image indices[n]'s tuned generator -> [N, 3, R, R].
        E.g. edited codes of image i: synthesize(edited, [i] * N)."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if codes.ndim != 3 or codes.shape[0] != idx.numel():
            raise ValueError(f"need codes [N, L, D] and N indices, got codes {tuple(codes.shape)} "
                             f"and {idx.numel()} indices")
        if idx.numel() and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"image index out of range for {len(self)} tuned images")
        fixed = _split_state(self.synthesis, list(self.deltas))
        with frozen(self.synthesis):
            return _render(self.synthesis, fixed, self.params(idx), codes)

    def generator_for(self, index: int, generator: nn.Module) -> nn.Module:
        """A copy of `generator` whose synthesis carries image `index`'s tuned weights."""
        import copy
        g = copy.deepcopy(generator)
        tuned = self.params([index])
        with torch.no_grad():
            for name, p in g.synthesis.named_parameters():
                if name in tuned:
                    p.copy_(tuned[name][0])
        return g


class TunedDecoder:
    """One image's tuned generator as a decoder: `synthesis(codes [N, L, D]) -> [N, 3, R, R]` decodes
    every code with that image's weights (its reconstruction, its edits, interpolations from it),
    without copying the generator (the original synthesis module is shared; only the changes are
    held). `state()` / `from_state(state, generator)` save and rebuild it (tensors only)."""

    def __init__(self, weights: TunedWeights):
        if len(weights) != 1:
            raise ValueError(f"a TunedDecoder holds one image's weights, got {len(weights)}")
        self.weights = weights

    @torch.no_grad()
    def synthesis(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.ndim != 3:
            raise ValueError(f"codes must be [N, L, D], got {tuple(codes.shape)}")
        return self.weights.synthesize(codes, [0] * codes.shape[0])

    def bytes(self) -> int:
        """Bytes of tuned weights this image costs (its storage form: fp32 or compact fp16)."""
        return self.weights.bytes_per_image()

    def state(self) -> dict:
        """name -> [1, *shape] weight change (what to save to rebuild the decoder)."""
        return {k: v.detach().cpu() for k, v in self.weights.deltas.items()}

    @classmethod
    def from_state(cls, state: dict, generator: nn.Module) -> "TunedDecoder":
        """Rebuild from `state()` on `generator` (the generator that was tuned); checks the names
        and shapes against its synthesis weights."""
        params = dict(generator.synthesis.named_parameters())
        device = next(iter(params.values())).device
        for k, v in state.items():
            if k not in params or tuple(v.shape[1:]) != tuple(params[k].shape) or v.shape[0] != 1:
                raise ValueError(f"tuned weight {k!r} {tuple(v.shape)} does not fit this generator")
        return cls(TunedWeights({k: v.to(device) for k, v in state.items()}, generator.synthesis))


@dataclass
class PTIResult:
    """codes: the pivots [B, L, D]; weights: per-image tuned synthesis weights; loss_history [T, B]
    (tuning loss per step, NaN once an image failed); failed [B] and reasons as in
    idinvert.inversion; pivot: the W-space optimisation's result when pti_invert made the pivots."""
    codes: torch.Tensor
    weights: TunedWeights
    loss_history: torch.Tensor
    failed: torch.Tensor
    reasons: list = field(default_factory=list)
    pivot: Optional[OptimizationResult] = None

    def reconstructions(self) -> torch.Tensor:
        """Each image's pivot decoded with its own tuned generator: [B, 3, R, R]."""
        return self.weights.synthesize(self.codes, torch.arange(self.codes.shape[0]))

    def decoders(self, compact: bool = False) -> list[TunedDecoder]:
        """One TunedDecoder per image (`compact`: the changes in fp16, half the memory)."""
        weights = self.weights.compact() if compact else self.weights
        return [TunedDecoder(weights.select([i])) for i in range(len(weights))]


def w_space_pivots(generator: nn.Module, targets: torch.Tensor, *, steps: int = PIVOT_STEPS,
                   lr: float = PIVOT_LR, perceptual: Optional[Callable] = None,
                   lambda_perceptual: float = 0.0, init: Optional[torch.Tensor] = None,
                   progress: bool = False, seed: Optional[int] = None, speed: Speed = EAGER) -> OptimizationResult:
    """Pivots [B, L, D] by optimisation in the generator's W from its average code (see the module
    docstring), with idinvert.inversion.optimize_codes (pixel + perceptual loss)."""
    B = targets.shape[0]
    if init is None:
        init = mean_code(generator).unsqueeze(0).expand(B, -1, -1)
    space = "w" if getattr(generator, "repeat_w", True) else "wp"
    terms = [PixelLoss()]
    if lambda_perceptual and perceptual is not None:
        terms.append(PerceptualLoss(perceptual, lambda_perceptual))
    elif lambda_perceptual:
        raise ValueError("lambda_perceptual > 0 needs a perceptual model F")
    return optimize_codes(generator, targets, init, terms, steps=steps, lr=lr, space=space,
                          options=LoopOptions(progress=progress, seed=seed, speed=speed))


def pivotal_tuning(generator: nn.Module, targets: torch.Tensor, pivots: torch.Tensor, *,
                   steps: int = TUNING_STEPS, lr: float = TUNING_LR, lambda_pixel: float = 1.0,
                   perceptual: Optional[Callable] = None, lambda_perceptual: float = 0.0,
                   locality: Optional[Locality] = None, progress: bool = False,
                   seed: Optional[int] = None) -> PTIResult:
    """Tune a copy of G's synthesis weights per image so that G_i(pivot_i) reconstructs target i.

    targets: [B, 3, R, R] in [-1, 1]; pivots: [B, L, D] (fixed). The generator is not modified.
    seed: seeds the locality regulariser's random codes (only used with `locality`).
    Returns PTIResult (pivots, per-image TunedWeights, losses).
    """
    _check_tuning_inputs(generator, targets, pivots, steps, lambda_perceptual, perceptual)
    synthesis = generator.synthesis
    first = next(synthesis.parameters())
    device, dtype = first.device, first.dtype
    B = targets.shape[0]
    x = targets.to(device=device, dtype=dtype)
    pivots = pivots.detach().to(device=device, dtype=dtype)
    use_f = bool(lambda_perceptual) and perceptual is not None
    names = tunable_names(synthesis, pivots[:1])
    base = {n: p.detach() for n, p in synthesis.named_parameters() if n in set(names)}
    rng = torch.Generator().manual_seed(seed if seed is not None else 0)

    with frozen(generator, perceptual):
        fixed = _split_state(synthesis, names)
        params = {n: base[n].unsqueeze(0).repeat(B, *([1] * base[n].ndim)).requires_grad_(True)
                  for n in names}
        with torch.no_grad():
            feat_x = perceptual(x) if use_f else None
        opt = _adam(list(params.values()), lr)
        fails = _TuningFailures(params, B, device)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=steps, desc="pti", leave=False, unit="step")
        try:
            for step in range(steps):
                rec = _render(synthesis, fixed, params, pivots)
                losses = lambda_pixel * (rec - x).pow(2).flatten(1).mean(1)
                if use_f:
                    losses = losses + lambda_perceptual * (perceptual(rec) - feat_x).pow(2).flatten(1).mean(1)
                if locality is not None:
                    losses = losses + _locality_loss(generator, synthesis, fixed, params, pivots,
                                                     locality, perceptual, rng)
                total = fails.observe(step, losses)
                opt.zero_grad(set_to_none=False)
                total.backward()
                fails.step(params, opt)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=float(fails.history[-1].nanmean()))
        finally:
            if bar is not None:
                bar.close()
        final = fails.close(params)
        deltas = {n: (final[n] - base[n].unsqueeze(0)).contiguous() for n in names}
    return PTIResult(codes=pivots.clone(), weights=TunedWeights(deltas, synthesis),
                     loss_history=fails.loss_history(), failed=fails.failed.cpu(), reasons=fails.reasons())


def _check_tuning_inputs(generator: nn.Module, targets: torch.Tensor, pivots: torch.Tensor, steps: int,
                         lambda_perceptual: float, perceptual: Optional[Callable]) -> None:
    """A ValueError naming the problem: negative steps, F missing, bad shapes, random noise."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if lambda_perceptual and perceptual is None:
        raise ValueError("lambda_perceptual > 0 needs a perceptual model F")
    if targets.ndim != 4:
        raise ValueError(f"targets must be [B, 3, R, R], got {tuple(targets.shape)}")
    B, L, D = targets.shape[0], generator.num_layers, generator.w_space_dim
    if pivots.ndim != 3 or tuple(pivots.shape) != (B, L, D):
        raise ValueError(f"pivots must be [B={B}, L={L}, D={D}], got {tuple(pivots.shape)}")
    for m in generator.modules():
        if getattr(m, "randomize_noise", False):
            raise ValueError("PTI tunes with the generator's stored noise; set_noise_mode('const')")


class _TuningFailures:
    """Per-image failure bookkeeping of the tuning loop: an image whose loss becomes non-finite is left
    out of the total from then on, its gradient zeroed and its weights held at their last good values."""

    def __init__(self, params: dict[str, torch.Tensor], B: int, device: torch.device):
        self.failed = torch.zeros(B, dtype=torch.bool, device=device)
        self.fail_step = torch.full((B,), -1, dtype=torch.long, device=device)
        self.last_good = {n: p.detach().clone() for n, p in params.items()}
        self.history: list[torch.Tensor] = []

    def observe(self, step: int, losses: torch.Tensor) -> torch.Tensor:
        """Record this step's per-image losses [B]; -> the total over the images still finite."""
        ok = torch.isfinite(losses.detach())
        newly = ~ok & ~self.failed
        self.fail_step = torch.where(newly, step, self.fail_step)
        self.failed |= newly
        self.history.append(torch.where(self.failed, float("nan"), losses.detach()))
        return torch.where(self.failed, torch.zeros_like(losses), losses).sum()

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], opt: torch.optim.Optimizer) -> None:
        """The Adam step, keeping failed images frozen. One host sync per step (cheap next to a tuning
        step): the masking runs only once some image has failed."""
        any_failed = bool(self.failed.any())
        for n, p in params.items():
            if any_failed:
                keep = self.failed.view(-1, *([1] * (p.ndim - 1)))
                p.grad.masked_fill_(keep, 0.0)
                self.last_good[n] = torch.where(keep, self.last_good[n], p.detach())
            else:
                self.last_good[n].copy_(p.detach())
        opt.step()
        if any_failed:
            for n, p in params.items():
                keep = self.failed.view(-1, *([1] * (p.ndim - 1)))
                p.copy_(torch.where(keep, self.last_good[n], p))

    @torch.no_grad()
    def close(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The final weights. The last update can itself make weights non-finite (a NaN gradient with
        a finite loss): such an image is failed too and keeps its last good weights."""
        bad = torch.zeros_like(self.failed)
        for p in params.values():
            bad |= ~torch.isfinite(p).flatten(1).all(1)
        bad &= ~self.failed
        self.fail_step = torch.where(bad, len(self.history), self.fail_step)
        self.failed |= bad
        return {n: torch.where(self.failed.view(-1, *([1] * (p.ndim - 1))), self.last_good[n], p.detach())
                for n, p in params.items()}

    def reasons(self) -> list[Optional[str]]:
        failed, steps = self.failed.cpu(), self.fail_step.cpu().tolist()
        return [f"tuning loss became non-finite at step {steps[i]}" if failed[i] else None
                for i in range(len(steps))]

    def loss_history(self) -> torch.Tensor:
        """[steps, B] (NaN once an image failed)."""
        B = self.failed.shape[0]
        return torch.stack(self.history).float().cpu() if self.history else torch.empty(0, B)


def _adam(params: list, lr: float) -> torch.optim.Optimizer:
    """Adam (default betas and eps, as official PTI), the fused kernel where this torch has one
    (elementwise all the same: per-image updates stay independent)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def _locality_loss(generator, synthesis, fixed, params, pivots, locality: Locality, perceptual,
                   rng: torch.Generator) -> torch.Tensor:
    """Per-image locality term [B]: tuned vs original generator at codes a distance alpha from
    the pivot towards random mapped codes."""
    B, L, D = pivots.shape
    alpha = locality.alpha_for(D)
    total = pivots.new_zeros(B)
    for _ in range(locality.samples):
        w_z = mapping_codes(generator, B, rng).to(pivots)
        direction = w_z - pivots
        norm = direction.flatten(1).norm(dim=1).clamp_min(1e-8).view(B, 1, 1)
        w_r = pivots + alpha * direction / norm
        tuned = _render(synthesis, fixed, params, w_r)
        with torch.no_grad():
            orig = synthesis(w_r)
        term = locality.lambda_l2 * (tuned - orig).pow(2).flatten(1).mean(1)
        if locality.lambda_perceptual and perceptual is not None:
            with torch.no_grad():
                f_orig = perceptual(orig)
            term = term + locality.lambda_perceptual * (perceptual(tuned) - f_orig).pow(2).flatten(1).mean(1)
        total = total + term
    return total / locality.samples


def pti_invert(generator: nn.Module, targets: torch.Tensor, *, perceptual: Optional[Callable] = None,
               lambda_perceptual: float = 0.0, pivot_steps: int = PIVOT_STEPS,
               pivot_lr: float = PIVOT_LR, tuning_steps: int = TUNING_STEPS,
               tuning_lr: float = TUNING_LR, locality: Optional[Locality] = None,
               progress: bool = False, seed: Optional[int] = None, speed: Speed = EAGER) -> PTIResult:
    """The whole method: W-space pivots, then pivotal tuning with them. Images whose pivot failed
    keep their (last good) pivot and are marked failed. ``speed``: how the pivot's loop runs its
    networks (``idinvert.speed``)."""
    pivot = w_space_pivots(generator, targets, steps=pivot_steps, lr=pivot_lr, perceptual=perceptual,
                           lambda_perceptual=lambda_perceptual, progress=progress, seed=seed, speed=speed)
    result = pivotal_tuning(generator, targets, pivot.codes, steps=tuning_steps, lr=tuning_lr,
                            perceptual=perceptual, lambda_perceptual=lambda_perceptual,
                            locality=locality, progress=progress, seed=seed)
    failed = result.failed | pivot.failed
    reasons = [p or t for p, t in zip(pivot.reasons, result.reasons)]
    result.failed, result.reasons, result.pivot = failed, reasons, pivot
    return result
