"""Attribute precision-recall of inverted codes (paper Fig. 3): AP and a storable PR curve.

score = signed distance of a code to an attribute boundary; label = ground truth (1 = attribute present).
Average precision is sklearn's definition (step-wise, no interpolation), computed by ``ap_score``, the one
AP routine that the stored rows and the claims' bootstrap share. Note that a perfectly *reversed* score does
not give AP equal to the positive prior in general: with P positives among N ranked last, AP =
(1/P) Σ_k k / (N − P + k), which equals the prior P/N only for P = 1; a random score's *expected* AP is
close to the prior.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from torch import Tensor

MAX_CURVE_POINTS = 101


@dataclass(frozen=True)
class APResult:
    ap: float  # nan when the labels hold a single class
    precision: list[float] = field(repr=False)  # PR curve, at most MAX_CURVE_POINTS points, recall falling
    recall: list[float] = field(repr=False)
    prior: float  # fraction of positives: the AP of an uninformative score, in expectation
    n: int


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x)


def downsample_curve(precision: np.ndarray, recall: np.ndarray,
                     max_points: int = MAX_CURVE_POINTS) -> tuple[list[float], list[float]]:
    """Keep at most ``max_points`` points, evenly spaced along the curve, both ends included."""
    if len(precision) <= max_points:
        idx = np.arange(len(precision))
    else:
        idx = np.unique(np.linspace(0, len(precision) - 1, max_points).round().astype(int))
    return [float(v) for v in precision[idx]], [float(v) for v in recall[idx]]


def ap_score(scores: np.ndarray, labels: np.ndarray) -> float:
    """THE average precision of the benchmark (the stored ``ap_<attr>`` rows and the claims' bootstrap):
    sklearn's definition -- step-wise, no interpolation, tied scores one threshold -- in numpy, fast
    enough for thousands of resamples. scores [N], labels [N] in {0, 1}; nan for a single class."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).astype(bool).reshape(-1)
    positives = int(labels.sum())
    if positives == 0 or positives == labels.size:
        return math.nan
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """scores, labels [N, A] (or [N]): the mean of ``ap_score`` over the attributes where it is defined
    (``ap_mean``); nan when none is."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim == 1:
        scores, labels = scores[:, None], labels[:, None]
    aps = [ap_score(scores[:, j], labels[:, j]) for j in range(scores.shape[1])]
    aps = [v for v in aps if not math.isnan(v)]
    return float(np.mean(aps)) if aps else math.nan


def average_precision(scores, labels, max_points: int = MAX_CURVE_POINTS) -> APResult:
    """scores [N] (higher = more positive), labels [N] in {0, 1}  ->  AP (``ap_score``) and a downsampled
    PR curve (sklearn's ``precision_recall_curve``)."""
    from sklearn.metrics import precision_recall_curve

    s = _as_numpy(scores).astype(np.float64).reshape(-1)
    y = _as_numpy(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape} vs {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be binary (0/1)")
    y = y.astype(int)
    n = len(y)
    prior = float(y.mean()) if n else math.nan
    if n == 0 or y.min() == y.max():
        return APResult(ap=math.nan, precision=[], recall=[], prior=prior, n=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ap = ap_score(s, y)
        precision, recall, _ = precision_recall_curve(y, s)
    p, r = downsample_curve(precision, recall, max_points)
    return APResult(ap=ap, precision=p, recall=r, prior=prior, n=n)


def average_precision_per_attribute(scores, labels, attributes: Sequence[str],
                                    max_points: int = MAX_CURVE_POINTS) -> dict[str, APResult]:
    """scores [N, A], labels [N, A]  ->  {attribute: APResult}, metric names ``ap_<attribute>``."""
    s, y = _as_numpy(scores), _as_numpy(labels)
    if s.ndim != 2 or s.shape != y.shape or s.shape[1] != len(attributes):
        raise ValueError(f"expected scores and labels [N, {len(attributes)}], got {s.shape} and {y.shape}")
    return {name: average_precision(s[:, i], y[:, i], max_points) for i, name in enumerate(attributes)}


def ap_mean(results: dict[str, APResult]) -> float:
    """Mean AP over the attributes where it is defined (nan if none)."""
    values = [r.ap for r in results.values() if not math.isnan(r.ap)]
    return sum(values) / len(values) if values else math.nan


PROBE_FOLDS = 5
PROBE_C = 1.0


def probe_scores(features, labels, folds: int = PROBE_FOLDS, seed: int = 0, C: float = PROBE_C) -> np.ndarray | None:
    """Out-of-fold scores of a linear probe: features [N, F], labels [N] in {0, 1} -> [N] (None when a
    class has fewer than 2 members). Stratified ``folds``-fold cross-validation (fewer folds when a class
    is smaller): each image is scored by an L2 logistic regression (standardised features, ``C``) fitted
    on the other folds only, so the AP of these scores says how well the attribute can be *decoded*
    linearly from codes of this kind, on images the probe never saw."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = _as_numpy(features).astype(np.float64).reshape(len(features), -1)
    y = _as_numpy(labels).astype(int).reshape(-1)
    k = min(folds, int(np.bincount(y, minlength=2).min()))
    if k < 2:
        return None
    out = np.zeros(len(y))
    for train, test in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2_000))
        out[test] = probe.fit(x[train], y[train]).decision_function(x[test])
    return out
