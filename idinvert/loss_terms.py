"""The terms of an optimisation method's objective, as objects that a method declares and
``idinvert.inversion.optimize_codes`` sums per image.

Each term is a frozen dataclass with its weight (and network, where it has one). ``bind(targets, run)``
prepares it for one batch -- e.g. F(x) once, without gradients -- and returns the per-image function
``(wp [B, L, D], recon [B, 3, H, W]) -> [B]``; ``run(net)`` is the callable the loop uses for a network
(the network itself, or its compiled form: ``idinvert.speed``). ``networks()`` lists the modules the
loop freezes for the duration. Reductions are means over each term's elements, as the official
genforce/idinvert_pytorch ``utils/inverter.py`` (so one image's loss is the paper's Eq. 5 for it):

    PixelLoss(w)            w * mean_{C,H,W}((x - G(w))^2)              (masked: mean((m * (x - G(w)))^2))
    PerceptualLoss(F, w)    w * mean_{C,h,w}((F(x) - F(G(w)))^2)        (masked: F sees m * x, m * G(w))
    DomainLoss(E, w)        w * mean_{L,D}((w - E(G(w)))^2)             (the in-domain regulariser)
    LatentLoss(w, center)   w * mean_{L,D}((w - center)^2)              (a prior around a code, e.g. mean w)
    DeltaLoss(w)            w * mean_{L-1,D}((w_l - w_0)^2)             (e4e-style: layers near the first)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

__all__ = ["LossTerm", "PixelLoss", "PerceptualLoss", "DomainLoss", "LatentLoss", "DeltaLoss",
           "Bound", "identity_run"]

# A bound term: (wp [B, L, D], recon [B, 3, H, W]) -> per-image loss [B].
Bound = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def identity_run(net: Any) -> Any:
    """The eager ``run``: a network is called as it is."""
    return net


def _per_image_mean(t: torch.Tensor) -> torch.Tensor:
    """[B, ...] -> [B]: mean over everything but the batch."""
    return t.pow(2).flatten(1).mean(1)


class LossTerm:
    """A term of the objective: ``networks()`` (frozen by the loop), ``bind(targets, run) -> Bound``."""

    name = "term"
    weight: float

    def networks(self) -> tuple:
        return ()

    def bind(self, targets: torch.Tensor, run: Callable = identity_run) -> Bound:
        raise NotImplementedError

    def check(self) -> None:
        """A bad weight is a ValueError naming the term (called by the loop before any work)."""
        w = float(self.weight)
        if not w == w or w in (float("inf"), float("-inf")):
            raise ValueError(f"{self.name} weight must be a finite number, got {self.weight!r}")


def _mask_to(mask: Optional[torch.Tensor], like: torch.Tensor) -> Optional[torch.Tensor]:
    return None if mask is None else mask.to(device=like.device, dtype=like.dtype)


@dataclass(frozen=True)
class PixelLoss(LossTerm):
    """Pixel MSE; ``mask`` [B, 1, H, W] (or broadcastable) restricts it (semantic diffusion) without
    renormalising by the mask's area, as the official ``diffuse``."""

    weight: float = 1.0
    mask: Optional[torch.Tensor] = None
    name = "pixel"

    def bind(self, targets: torch.Tensor, run: Callable = identity_run) -> Bound:
        mask = _mask_to(self.mask, targets)
        if mask is None:
            return lambda wp, rec: self.weight * _per_image_mean(targets - rec)
        return lambda wp, rec: self.weight * _per_image_mean((targets - rec) * mask)


@dataclass(frozen=True)
class PerceptualLoss(LossTerm):
    """Feature MSE under F (images -> features [B, C, h, w]); with ``mask`` F sees masked images."""

    net: Any
    weight: float
    mask: Optional[torch.Tensor] = None
    name = "perceptual"

    def networks(self) -> tuple:
        return (self.net,)

    def bind(self, targets: torch.Tensor, run: Callable = identity_run) -> Bound:
        mask = _mask_to(self.mask, targets)
        with torch.no_grad():  # F(x) once per batch, eagerly: one call is not worth a compiled graph
            target_feat = self.net(targets if mask is None else targets * mask)
        f = run(self.net)
        if mask is None:
            return lambda wp, rec: self.weight * _per_image_mean(target_feat - f(rec))
        return lambda wp, rec: self.weight * _per_image_mean(target_feat - f(rec * mask))


@dataclass(frozen=True)
class DomainLoss(LossTerm):
    """The in-domain regulariser: the code against the domain-guided encoder's code of its own image,
    E: images -> [B, L, D]. Gradients flow through E(G(w)) into w, as in the official code."""

    net: Any
    weight: float
    name = "domain"

    def networks(self) -> tuple:
        return (self.net,)

    def bind(self, targets: torch.Tensor, run: Callable = identity_run) -> Bound:
        e = run(self.net)
        return lambda wp, rec: self.weight * _per_image_mean(wp - e(rec).reshape(wp.shape))


@dataclass(frozen=True)
class LatentLoss(LossTerm):
    """A Gaussian prior around ``center`` (a code broadcastable to [B, L, D], e.g. the mean w)."""

    weight: float
    center: torch.Tensor = None
    name = "latent"

    def bind(self, targets: torch.Tensor, run: Callable = identity_run) -> Bound:
        if self.center is None:
            raise ValueError("LatentLoss needs a center code")
        center = self.center.detach().to(device=targets.device, dtype=targets.dtype)
        return lambda wp, rec: self.weight * _per_image_mean(wp - center.expand_as(wp))


@dataclass(frozen=True)
class DeltaLoss(LossTerm):
    """e4e's delta regulariser: every layer's code near the first layer's (W+ kept close to W)."""

    weight: float
    name = "delta"

    def bind(self, targets: torch.Tensor, run: Callable = identity_run) -> Bound:
        return lambda wp, rec: self.weight * _per_image_mean(wp[:, 1:] - wp[:, :1])
