"""Manipulation metrics (paper Figs. 6–7) from classifier probabilities before and after edits.

An edit moves a code along an attribute's normal: direction +1 should make the attribute present,
−1 absent. Predictions are ``prob >= threshold``. Pass probabilities (``sigmoid(logits)``), or exact
labels as 0/1 where the domain provides them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class EditSuccess:
    rate: float  # n_success / n_eligible; nan when no edit was eligible
    n_success: int
    n_eligible: int
    # per edit [N] booleans (which edits were eligible, which succeeded), for per-image bookkeeping
    eligible: Tensor | None = field(default=None, compare=False, repr=False)
    success: Tensor | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class EditPreservation:
    agreement: float  # fraction of (edit, non-target attribute) pairs whose prediction did not change
    per_attribute: list[float]  # agreement per attribute; nan at the target


def _target_column(probs: Tensor, target: int | None) -> Tensor:
    if probs.dim() == 1:
        return probs
    if target is None:
        raise ValueError("probabilities [N, A] need the target attribute's index")
    return probs[:, target]


def edit_success(probs_before: Tensor, probs_after: Tensor, target: int | None = None,
                 direction: int | Tensor = 1, threshold: float = 0.5) -> EditSuccess:
    """Fraction of edits that flip the target prediction the intended way, among those that started
    on the other side.

    probs_before, probs_after: [N] (target attribute) or [N, A] with ``target`` its column index;
    direction: +1 / −1 for all edits, or a tensor [N] of signs (the sign of each edit's step α; edits
    with sign 0 are not counted). An edit with direction +1 is eligible when the attribute was predicted
    absent before, and succeeds when it is predicted present after; −1 the reverse.
    """
    if probs_before.shape != probs_after.shape:
        raise ValueError(f"shape mismatch {tuple(probs_before.shape)} vs {tuple(probs_after.shape)}")
    before = _target_column(probs_before, target) >= threshold
    after = _target_column(probs_after, target) >= threshold
    sign = torch.as_tensor(direction).sign().expand(before.shape)
    eligible = ((sign > 0) & ~before) | ((sign < 0) & before)
    success = eligible & (((sign > 0) & after) | ((sign < 0) & ~after))
    n_eligible, n_success = int(eligible.sum()), int(success.sum())
    rate = n_success / n_eligible if n_eligible else math.nan
    return EditSuccess(rate=rate, n_success=n_success, n_eligible=n_eligible, eligible=eligible,
                       success=success)


def edit_preservation(probs_before: Tensor, probs_after: Tensor, target: int,
                      threshold: float = 0.5) -> EditPreservation:
    """Agreement of the non-target attributes' predictions before vs after the edits.

    probs_before, probs_after: [N, A]; target: index of the edited attribute (excluded).
    """
    if probs_before.dim() != 2 or probs_before.shape != probs_after.shape:
        raise ValueError(f"expected two [N, A] tensors, got {tuple(probs_before.shape)} and "
                         f"{tuple(probs_after.shape)}")
    num_attrs = probs_before.shape[1]
    if not 0 <= target < num_attrs:
        raise ValueError(f"target {target} out of range for {num_attrs} attributes")
    same = ((probs_before >= threshold) == (probs_after >= threshold)).double()
    per_attribute = same.mean(dim=0)
    per_attribute[target] = math.nan
    others = [i for i in range(num_attrs) if i != target]
    agreement = float(same[:, others].mean()) if others and same.shape[0] else math.nan
    return EditPreservation(agreement=agreement, per_attribute=[float(v) for v in per_attribute])
