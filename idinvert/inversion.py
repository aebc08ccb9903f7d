"""The one batched optimisation loop behind every optimisation-based inversion method.

The objective is a list of loss terms (``idinvert.loss_terms``) that the method declares; for
idinvert (paper Eq. 5, reductions as the official genforce/idinvert_pytorch ``utils/inverter.py``,
where every term is a *mean* over its elements), per image i:

    loss_i = lambda_pixel      * mean_{C,H,W}((x_i - G(w_i))^2)             PixelLoss(lambda_pixel)
           + lambda_perceptual * mean_{C,h,w}((F(x_i) - F(G(w_i)))^2)       PerceptualLoss(F, lambda_perceptual)
           + lambda_dom        * mean_{L,D}((w_i - E(G(w_i)))^2)            DomainLoss(E, lambda_dom)

The official code inverts one image at a time, so its scalar means are exactly these per-image means.
Here a batch is optimised at once and the per-image losses are **summed** (not averaged): the gradient
of image i's code is then the gradient of loss_i alone, whatever the batch size, and Adam acts
elementwise, so a batch yields the same codes as one image at a time (up to float rounding of batched
kernels). Gradients flow through E(G(w)) into w, as in the official code (E is not detached).

With a ``mask`` (semantic diffusion) the pixel and perceptual terms follow the official ``diffuse``
(see ``idinvert.loss_terms``). The networks run eagerly or compiled, in fp32 or under autocast
(``LoopOptions.speed``, ``idinvert.speed``): the same loop, the same numbers up to float rounding.

A non-finite loss stops only its own image: its code is frozen at the last value whose loss was
finite (the start as given if it never was -- e.g. a NaN image's NaN encoder start), it is marked
failed with a reason, and the batch goes on.
Failure bookkeeping stays on the device so the loop makes no host synchronisation per step.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch
import torch.nn as nn

from idinvert.loss_terms import LossTerm, PixelLoss
from idinvert.speed import EAGER, Speed
from idinvert.utils import device_of

__all__ = ["OptimizationResult", "Milestone", "LoopOptions", "optimize_codes", "encode", "frozen",
           "channels_last", "anytime_milestones", "check_milestones",
           "DEFAULT_LR", "DEFAULT_STEPS", "DEFAULT_LAMBDA_DOM"]

# Paper / official code defaults (Adam lr 0.01, 100 iterations, lambda_dom 2).
DEFAULT_LR = 0.01
DEFAULT_STEPS = 100
DEFAULT_LAMBDA_DOM = 2.0


@dataclass
class Milestone:
    """The state of the loop after ``step`` Adam updates: exactly what ``optimize_codes`` with
    ``steps=step`` (same inputs and seed) returns as its final ``codes`` and ``failed``.

    codes [B, L, D] (detached copy; device and dtype of the final codes); failed [B] bool (CPU);
    seconds: wall-clock seconds from ``time_origin`` (default: the call of ``optimize_codes``) to
    the moment this milestone was reached, for the whole batch (divide by B for seconds per image).
    On CUDA the device is synchronised before the clock is read, at milestones only.
    """

    step: int
    seconds: float
    codes: torch.Tensor
    failed: torch.Tensor


@dataclass
class OptimizationResult:
    """codes [B, L, D] (detached; the generator's device and dtype); failed [B] bool (CPU);
    reasons per image (None or why it failed); loss_history [T, B] float32 on the CPU: each image's
    total loss at each step taken (NaN once an image has failed); milestones: one
    :class:`Milestone` per requested step, ascending (empty unless asked for); seconds: wall-clock
    seconds from ``time_origin`` to the end of the loop, for the whole batch."""

    codes: torch.Tensor
    failed: torch.Tensor
    reasons: list = field(default_factory=list)
    loss_history: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    milestones: list = field(default_factory=list)
    seconds: float = float("nan")


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


@contextlib.contextmanager
def channels_last(*objs, enabled: bool = True) -> Iterator[None]:
    """The 4-D parameters and buffers of the given modules in channels_last memory format for the
    duration, restored to their own layout afterwards. Non-modules are ignored. For frozen modules
    only: on exit each tensor gets back the storage it had on entry, so an update made inside is lost
    (convert a module being trained with ``module.to(memory_format=torch.channels_last)`` instead).

    Measured on the embedded bundle's loop (1 CPU thread, idinvert loss, 16 images x 30 steps, five
    interleaved repeats): 13 % less time, final MSE equal to 1e-6 (``python -m bench.tools.loop_speed``).
    """
    if not enabled:
        yield
        return
    tensors = [t for m in _modules(*objs) for t in list(m.parameters()) + list(m.buffers()) if t.ndim == 4]
    saved = [(t, t.data) for t in tensors]
    try:
        for t in tensors:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
        yield
    finally:
        for t, data in saved:
            t.data = data


def _float_dtype_of(module) -> torch.dtype:
    for t in module.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def check_milestones(milestones: Optional[Iterable[int]], steps: int) -> list[int]:
    """Validated milestone steps: sorted, without duplicates, each an int in [0, steps].

    Raises ValueError naming the offending value (a milestone beyond the budget would silently never
    be reached, so it is an error rather than dropped).
    """
    if milestones is None:
        return []
    out = set()
    for m in milestones:
        if isinstance(m, bool) or not isinstance(m, int):
            try:
                as_int = int(m)
            except (TypeError, ValueError):
                raise ValueError(f"milestone {m!r} is not an integer step") from None
            if as_int != m:
                raise ValueError(f"milestone {m!r} is not an integer step")
            m = as_int
        if not 0 <= m <= steps:
            raise ValueError(f"milestone {m} is outside [0, steps={steps}]")
        out.add(int(m))
    return sorted(out)


def anytime_milestones(budget: int, first: int = 10, include_zero: bool = True, per_decade: int = 5) -> list[int]:
    """The default milestone schedule of an anytime run: 0 (the start), then ``first`` and
    ``per_decade`` log-spaced steps per factor of 10 after it (rounded), and always ``budget`` itself.

    A time to quality is only known between two milestones, so the spacing sets the resolution of a
    speed-up: with 5 per decade consecutive milestones are 1.6x apart and a ratio of two such times is
    known to within a factor of ~2.5 (a 1-3-10 schedule: ~11). The cost is one copy of the codes per
    milestone in the loop and their evaluation afterwards (``bench perf`` measures it).

    ``anytime_milestones(5000) == [0, 10, 16, 25, 40, 63, 100, 158, 251, 398, 631, 1000, 1585, 2512,
    3981, 5000]``; ``anytime_milestones(100) == [0, 10, 16, 25, 40, 63, 100]``.
    """
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if first < 1:
        raise ValueError(f"first must be >= 1, got {first}")
    if per_decade < 1:
        raise ValueError(f"per_decade must be >= 1, got {per_decade}")
    out = {budget}
    if include_zero:
        out.add(0)
    j = 0
    while (k := int(round(first * 10 ** (j / per_decade)))) < budget:
        out.add(k)
        j += 1
    return sorted(out)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


@dataclass
class LoopOptions:
    """How the loop runs and reports, apart from what it optimises.

    seed: if given, the global RNG is seeded inside a forked RNG state (so a generator with random
      noise is reproducible and the caller's RNG stream is untouched).
    milestones: steps k in [0, steps] at which to keep a copy of the codes (anytime evaluation, at the
      cost of one run): ``result.milestones[j]`` holds exactly the codes and failures that a separate
      call with ``steps=k`` returns (the *current* codes after k updates -- the loop returns its last
      iterate, not the lowest-loss one, and so do the milestones), with the seconds elapsed.
    time_origin: a ``time.perf_counter()`` value the milestone and final seconds count from, so a
      caller can include work done before the loop (an encoder start); default: entry to the loop.
    on_step: called as ``on_step(done, steps)`` after every 1% of the steps (and after the last one), so
      a caller can show progress inside one long batch; it must not touch the tensors.
    progress: a tqdm bar of the steps.
    memory_format: "contiguous" or "channels_last": the networks' 4-D weights and the images in
      channels_last layout for the duration (see :func:`channels_last`; faster convolutions on CPU, same
      result up to float rounding -- which Adam amplifies to ~1e-3 in the codes).
    speed: eager or compiled networks, fp32 or autocast (``idinvert.speed``; same numbers up to rounding).
    """

    seed: Optional[int] = None
    milestones: Optional[Iterable[int]] = None
    time_origin: Optional[float] = None
    on_step: Optional[Callable[[int, int], None]] = None
    progress: bool = False
    memory_format: str = "contiguous"
    speed: Speed = EAGER

    def __post_init__(self) -> None:
        if self.memory_format not in ("contiguous", "channels_last"):
            raise ValueError(f"memory_format must be 'contiguous' or 'channels_last', got {self.memory_format!r}")


class _Failures:
    """Per-image failure bookkeeping, on the device (no host synchronisation per step): an image whose
    loss turns non-finite is frozen at its last code with a finite loss."""

    KINDS = {1: "loss became nan", 2: "loss became inf", 3: "code became non-finite"}

    def __init__(self, init: torch.Tensor):
        B = init.shape[0]
        self.failed = torch.zeros(B, dtype=torch.bool, device=init.device)
        self.hold = self.failed.view(B, 1, 1)  # a view: follows the in-place updates of ``failed``
        self.step = torch.full((B,), -1, dtype=torch.long, device=init.device)
        self.kind = torch.zeros(B, dtype=torch.long, device=init.device)  # see KINDS
        self.last_good = init.clone()
        self.history: list[torch.Tensor] = []

    def observe(self, step: int, losses: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        """Record this step's losses [B]; returns the total to back-propagate (failed images: 0)."""
        loss = losses.detach()
        newly = ~torch.isfinite(loss) & ~self.failed
        self.step = torch.where(newly, step, self.step)
        self.kind = torch.where(newly, torch.where(torch.isnan(loss), 1, 2), self.kind)
        self.failed |= newly
        # Codes of images still going had a finite loss at this step: remember them.
        self.last_good = torch.where(self.hold, self.last_good, param.detach())
        self.history.append(torch.where(self.failed, float("nan"), loss))
        # where() gives failed images an exactly-zero upstream gradient; their own backward path may
        # still produce NaN (0 * inf), so their gradient is zeroed in ``update`` too.
        return torch.where(self.failed, torch.zeros_like(losses), losses).sum()

    @torch.no_grad()
    def update(self, param: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        param.grad.masked_fill_(self.hold, 0.0)
        optimizer.step()
        param.copy_(torch.where(self.hold, self.last_good, param))

    @torch.no_grad()
    def settled(self, param: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes, failed) a run ending now returns, without side effects: a non-finite code after the
        last update keeps the last good code."""
        failed = self.failed | (~torch.isfinite(param).flatten(1).all(1) & ~self.failed)
        return torch.where(failed.view(-1, 1, 1), self.last_good, param.detach()), failed

    @torch.no_grad()
    def close(self, param: torch.Tensor) -> torch.Tensor:
        """The final codes; an image whose last update made its code non-finite is failed too."""
        bad = ~torch.isfinite(param).flatten(1).all(1) & ~self.failed
        self.step = torch.where(bad, len(self.history), self.step)
        self.kind = torch.where(bad, 3, self.kind)
        self.failed |= bad
        return torch.where(self.hold, self.last_good, param.detach())

    def reasons(self) -> list[Optional[str]]:
        failed, steps, kinds = self.failed.cpu(), self.step.cpu().tolist(), self.kind.cpu().tolist()
        return [f"{self.KINDS[kinds[i]]} at step {steps[i]}" if failed[i] else None for i in range(len(steps))]


def _start_codes(init_codes: torch.Tensor, B: int, space: str, device, dtype) -> torch.Tensor:
    """The optimised parameter's start: [B, L, D] for W+, [B, 1, D] for W (a [B, L, D] start is averaged
    over layers -- exact for mean-w or W-space codes)."""
    init = init_codes.detach().to(device=device, dtype=dtype)
    if space == "w":
        if init.ndim == 2:
            init = init[:, None, :]
        elif init.shape[1] != 1:
            init = init.mean(dim=1, keepdim=True)
    if init.ndim != 3 or init.shape[0] != B:
        raise ValueError(f"init_codes must be [B={B}, L, D], got {tuple(init_codes.shape)}")
    return init


def _check(terms: Sequence[LossTerm], targets: torch.Tensor, steps: int, space: str) -> None:
    if space not in ("wp", "w"):
        raise ValueError(f"space must be 'wp' or 'w', got {space!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if targets.ndim != 4:
        raise ValueError(f"targets must be [B, 3, H, W], got {tuple(targets.shape)}")
    if not terms:
        raise ValueError("optimize_codes needs at least one loss term")
    for term in terms:
        if not isinstance(term, LossTerm):
            raise ValueError(f"loss terms must be idinvert.loss_terms.LossTerm objects, got {type(term).__name__}")
        term.check()


def _objective(generator: nn.Module, terms: Sequence[LossTerm], x: torch.Tensor, expand: Callable,
               speed: Speed) -> Callable[[torch.Tensor], torch.Tensor]:
    """param -> per-image loss [B]: the terms bound to this batch, summed in their given order."""
    synthesis = speed.run(generator.synthesis)
    bound = [t.bind(x, speed.run) for t in terms]
    context = speed.context(x.device)

    def per_image_loss(param: torch.Tensor) -> torch.Tensor:
        with context:
            wp = expand(param)
            rec = synthesis(wp)
            loss = bound[0](wp, rec)
            for term in bound[1:]:
                loss = loss + term(wp, rec)
        return loss.float() if speed.autocast else loss
    return per_image_loss


def optimize_codes(generator: nn.Module, targets: torch.Tensor, init_codes: torch.Tensor,
                   terms: Optional[Sequence[LossTerm]] = None, *, steps: int = DEFAULT_STEPS,
                   lr: float = DEFAULT_LR, space: str = "wp",
                   options: Optional[LoopOptions] = None) -> OptimizationResult:
    """Adam on W+ (or W) codes so that ``generator.synthesis(codes)`` reconstructs ``targets`` under the
    sum of ``terms`` (``idinvert.loss_terms``; default: the pixel MSE alone).

    generator: has ``.synthesis(wp [B, L, D]) -> images [B, 3, H, W]``.
    targets: [B, 3, H, W] in [-1, 1].  init_codes: [B, L, D] (for ``space="w"`` also [B, 1, D] or [B, D]).
    space: "wp" optimises one code per layer; "w" one w per image broadcast to all L layers.
    options: seed, milestones, timing origin, progress, memory format and speed (:class:`LoopOptions`).
    The generator and the terms' networks are put in eval mode with frozen parameters for the duration.
    """
    opts = options or LoopOptions()
    t_origin = time.perf_counter() if opts.time_origin is None else float(opts.time_origin)
    terms = list(terms) if terms is not None else [PixelLoss()]
    _check(terms, targets, steps, space)
    device = device_of(generator)
    # Codes and targets take the generator's dtype: float32 normally; float64 lets tests check the
    # batch-independence of the loop itself, free of float32 rounding.
    dtype = _float_dtype_of(generator)
    x = targets.to(device=device, dtype=dtype)
    use_cl = opts.memory_format == "channels_last"
    if use_cl:
        x = x.contiguous(memory_format=torch.channels_last)
    B = x.shape[0]
    init = _start_codes(init_codes, B, space, device, dtype)
    num_layers = int(getattr(generator, "num_layers", init.shape[1]))

    def expand(c: torch.Tensor) -> torch.Tensor:
        return c.expand(B, num_layers, c.shape[2]) if space == "w" else c

    nets = [n for t in terms for n in t.networks()]
    rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else []) \
        if opts.seed is not None else contextlib.nullcontext()
    with rng, frozen(generator, *nets), channels_last(generator, *nets, enabled=use_cl):
        if opts.seed is not None:
            torch.manual_seed(opts.seed)
        loss_of = _objective(generator, terms, x, expand, opts.speed)
        codes, fails, reached = _adam_loop(loss_of, init, steps, lr, opts, t_origin, expand)
    codes = expand(codes).contiguous().clone()
    _sync(device)
    history = torch.stack(fails.history).float().cpu() if fails.history else torch.empty(0, B)
    return OptimizationResult(codes=codes, failed=fails.failed.cpu(), reasons=fails.reasons(),
                              loss_history=history, milestones=reached,
                              seconds=time.perf_counter() - t_origin)


def _adam_loop(loss_of: Callable, init: torch.Tensor, steps: int, lr: float, opts: LoopOptions,
               t_origin: float, expand: Callable) -> tuple[torch.Tensor, _Failures, list[Milestone]]:
    """The steps themselves: (final codes before expansion, the failure record, the milestones)."""
    param = init.clone().requires_grad_(True)
    fails = _Failures(init)
    optimizer = torch.optim.Adam([param], lr=lr)
    pending, reached = check_milestones(opts.milestones, steps), []
    report_every = max(1, steps // 100)

    def record(step: int, codes: torch.Tensor, failed: torch.Tensor) -> None:
        _sync(codes.device)
        reached.append(Milestone(step=step, seconds=time.perf_counter() - t_origin,
                                 codes=expand(codes).contiguous().clone(), failed=failed.cpu().clone()))

    bar = _bar(steps) if opts.progress else None
    try:
        for step in range(steps):
            while pending and pending[0] == step:
                record(pending.pop(0), *fails.settled(param))
            optimizer.zero_grad(set_to_none=False)
            fails.observe(step, loss_of(param), param).backward()
            fails.update(param, optimizer)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=float(fails.history[-1].nanmean()))
            if opts.on_step is not None and ((step + 1) % report_every == 0 or step + 1 == steps):
                opts.on_step(step + 1, steps)
            if step % 10 == 9 and bool(fails.failed.all()):
                break
        codes = fails.close(param)
        # Milestones not reached inside the loop: ``steps`` itself, or any after an early stop (every
        # image failed, so every later run ends with these same frozen codes).
        while pending:
            record(pending.pop(0), codes, fails.failed)
    finally:
        if bar is not None:
            bar.close()
    return codes, fails, reached


def _bar(steps: int):
    from tqdm.auto import tqdm
    return tqdm(total=steps, desc="invert", leave=False)
