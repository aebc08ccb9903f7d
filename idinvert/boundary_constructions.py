"""Ways to build an attribute boundary from G's sampled codes, named so that they can be compared.

A *construction* says which sampled codes train the boundary and what shape its normal has:

- ``selection``: ``"extremes"`` (InterFaceGAN: the ``top_fraction`` highest- and lowest-scoring codes,
  capped at the labeller's decision threshold) or ``"all"`` (every code, labelled by the sign of its
  score: a probe);
- ``layout``: ``"per-layer"`` (one SVM per W+ layer, each row a unit normal, the distance the mean of
  the per-layer distances; the official idinvert files' shape) or ``"joint"`` (one normal over the
  concatenated layers, ``[L * D]``);
- ``layers``: ``"all"`` or ``"official"`` (the official idinvert face boundaries' manipulate layers,
  ``OFFICIAL_LAYERS``: the same layer indices exist in any StyleGAN-inv generator of >= 6 layers, since
  both the official 256 px and the embedded 32 px G start at 4 px with two layers per resolution);
- ``model``: ``"svm"`` (LinearSVC, C = 1) or ``"logistic"`` (L2 logistic regression, C = 1).

A joint normal is stored as a ``Boundary`` whose applied rows together have mean squared norm 1
(``meta["normalisation"] = "joint"``), so ``idinvert.editing.signed_distance`` (the mean over layers
of ``n_l · w_l``) ranks codes exactly as the fitted hyperplane does, and an edit of strength ``alpha``
still changes that distance by exactly ``alpha``.

Which construction scores codes (``DEFAULT_CONSTRUCTION``, the AP of every method) is chosen by the AP
ceiling each reaches on held-out codes of G; which one edits them (``DEFAULT_EDIT_CONSTRUCTION``) by
the share of edits of G's own held-out codes that flip the judge's prediction the intended way (the
edit-success ceiling). Never by how methods score. ``python -m bench.boundary_check`` prints the
comparison; measured on the embedded bundle (zoo v3; 5,000 training codes labelled by the classifier,
2,000 held-out codes labelled by the judge, classifier labels in brackets; edits of 64 held-out codes
at +-1.5 and +-3 std, ``bench.metrics.semantic``'s strengths, 1 thread on a busy 2-core machine):

    construction                  AP: age       gender        eyeglasses    pose          expression    edits: age gender eyegl. pose expr.
    svm-10%-per-layer (before)    0.994 (.994)  0.705 (.706)  0.988 (.979)  0.970 (.968)  0.892 (.883)  0.62 0.00 0.68 0.73 0.55
    svm-2%-per-layer              0.970 (.970)  0.658 (.658)  0.966 (.958)  0.934 (.938)  0.844 (.828)
    svm-10%-per-layer, official   0.994 (.994)  0.720 (.721)  0.986 (.979)  0.968 (.966)  0.893 (.884)  0.60 0.00 0.62 0.34 0.42
      manipulate layers
    svm-10%-joint (edits)         0.986 (.986)  0.755 (.756)  0.987 (.979)  0.964 (.962)  0.906 (.899)  0.51 0.00 0.79 0.88 0.55
    svm-2%-joint                  0.958 (.959)  0.651 (.652)  0.966 (.958)  0.920 (.926)  0.849 (.834)
    svm-all-joint                 0.998 (.998)  0.932 (.933)  0.981 (.979)  0.979 (.982)  0.912 (.925)  0.38 0.02 0.09 0.06 0.05
    logistic-all-joint (scoring)  0.999 (.999)  0.942 (.943)  0.987 (.985)  0.984 (.987)  0.922 (.937)  0.67 0.02 0.19 0.16 0.12
    logistic-all-per-layer        0.999 (.999)  0.899 (.897)  0.992 (.983)  0.990 (.989)  0.912 (.904)  0.82 0.02 0.57 0.54 0.59

A probe fitted on every code ranks G's codes best but barely moves the image along its normal (it
leans on directions of little variance in W, so a few std of its distance is a short step); the
extremes' SVM is the better edit direction. Hence two constructions. With 20,000 training codes the
scoring probe reaches gender 0.959 and expression 0.936 (classifier labels 0.953); not the default,
as its fit took ~6 min of CPU (5,000: 11 s). Below 0.95 at the default: gender 0.942 and expression
0.922; expression is bounded by the judge and the classifier disagreeing on 10 % of G's samples (the
boundaries learn the classifier's labels, the ceiling is scored with the judge's). Gender edits fail
for every construction (G renders long hair on 21 % of its samples; moving along any normal of these
codes rarely flips the judge): the edit-success ceiling of gender is ~0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["Construction", "CONSTRUCTIONS", "DEFAULT_CONSTRUCTION", "DEFAULT_EDIT_CONSTRUCTION", "OFFICIAL_LAYERS",
           "fit_construction",
           "joint_rows"]

# genforce/idinvert_pytorch boundaries/stylegan_ffhq256/*.npy meta_data["manipulate_layers"]
OFFICIAL_LAYERS = {"age": (0, 1, 2, 3, 4, 5), "expression": (2, 3, 4, 5), "eyeglasses": (0, 1, 2),
                   "gender": (2, 3, 4), "pose": (0, 1, 2)}


@dataclass(frozen=True)
class Construction:
    """One way to build a boundary (see the module docstring)."""

    selection: str = "extremes"
    top_fraction: float = 0.1
    layout: str = "per-layer"
    layers: str = "all"
    model: str = "svm"

    def __post_init__(self) -> None:
        checks = {"selection": ("extremes", "all"), "layout": ("per-layer", "joint"),
                  "layers": ("all", "official"), "model": ("svm", "logistic")}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"construction {name} must be one of {allowed}, got {getattr(self, name)!r}")

    def layer_list(self, attribute: str, num_layers: int) -> list[int]:
        if self.layers == "all" or attribute not in OFFICIAL_LAYERS:
            return list(range(num_layers))
        return [l for l in OFFICIAL_LAYERS[attribute] if l < num_layers] or list(range(num_layers))


CONSTRUCTIONS = {
    "svm-10%-per-layer": Construction(),
    "svm-2%-per-layer": Construction(top_fraction=0.02),
    "svm-10%-per-layer-official-layers": Construction(layers="official"),
    "svm-10%-joint": Construction(layout="joint"),
    "svm-2%-joint": Construction(top_fraction=0.02, layout="joint"),
    "svm-all-joint": Construction(selection="all", layout="joint"),
    "logistic-all-joint": Construction(selection="all", layout="joint", model="logistic"),
    "logistic-all-per-layer": Construction(selection="all", model="logistic"),
}
DEFAULT_CONSTRUCTION = "logistic-all-joint"       # scoring (AP): the highest held-out AP ceiling
DEFAULT_EDIT_CONSTRUCTION = "svm-10%-joint"       # edits: the highest edit-success ceiling of G's codes


def joint_rows(normal: Tensor, layers: list[int]) -> Tensor:
    """normal [L, D] -> the same direction scaled so that its rows on ``layers`` have mean squared norm 1."""
    out = normal.clone()
    energy = out[layers].pow(2).sum(1).mean()
    if not energy > 0:
        raise ValueError("a joint normal with no weight on its layers")
    out[layers] = out[layers] / energy.sqrt()
    return out


def _model(kind: str, seed: int) -> Any:
    if kind == "svm":
        from sklearn.svm import LinearSVC

        return LinearSVC(C=1.0, max_iter=20_000, random_state=seed)
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=5_000)


def _training_set(scores: np.ndarray, c: Construction, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training codes and their 0/1 labels: every code by the sign of the labeller's score
    ("all"), or the extremes (capped at the decision threshold); both fall back to pure ranking, as
    InterFaceGAN does, when the labeller puts fewer than 2 codes on one side."""
    n = len(scores)
    n_pos = int((scores > 0).sum())
    if c.selection == "all" and min(n_pos, n - n_pos) >= 2:
        return np.arange(n), (scores > 0).astype(int)
    chosen = min(int(n * c.top_fraction), n_pos, n - n_pos)
    if chosen < 2:  # the labeller calls (nearly) every code one thing: rank them instead, as InterFaceGAN does
        chosen = max(2, min(int(n * c.top_fraction), n // 2))
    order = np.argsort(-scores, kind="stable")
    idx = np.concatenate([order[:chosen], order[n - chosen:]])
    return idx, np.concatenate([np.ones(chosen, int), np.zeros(chosen, int)])


def _fit(x: np.ndarray, y: np.ndarray, kind: str, seed: int) -> tuple[np.ndarray, float]:
    """A linear model on x [N, F], y [N] -> (coef [F], intercept), both divided by ||coef||."""
    model = _model(kind, seed).fit(x, y)
    coef = model.coef_.reshape(-1).astype(np.float64)
    norm = float(np.linalg.norm(coef))
    if not norm > 0:
        raise ValueError("the linear model found no direction (all coefficients zero)")
    return coef / norm, float(model.intercept_[0]) / norm


def fit_construction(codes: Tensor, scores: Tensor, attribute: str, c: Construction,
                     seed: int = 0) -> tuple[Tensor, list[int], float, dict[str, Any]]:
    """Fit one attribute's boundary: codes [N, L, D] (G's untruncated W+ codes), scores [N] (the
    labeller's logit) -> (normal [L, D], layers, offset, meta). The offset makes
    ``signed_distance(codes, boundary)`` the fitted model's decision value up to a positive factor."""
    x = codes.double().numpy()
    s = scores.double().numpy().reshape(-1)
    num_layers = x.shape[1]
    layers = c.layer_list(attribute, num_layers)
    idx, y = _training_set(s, c, seed)
    normal = torch.zeros(x.shape[1], x.shape[2])
    if c.layout == "joint":
        coef, intercept = _fit(x[idx][:, layers].reshape(len(idx), -1), y, c.model, seed)
        normal[layers] = torch.from_numpy(coef.reshape(len(layers), -1)).float()
        scale = float(normal[layers].pow(2).sum(1).mean().sqrt())
        # signed_distance = mean_l n_l . w_l = (coef . w) / (L * scale): the intercept scales alike
        offset = intercept / (len(layers) * scale)
        normal = joint_rows(normal, layers)
    else:
        offsets = []
        for layer in layers:
            coef, intercept = _fit(x[idx][:, layer], y, c.model, seed)
            normal[layer] = torch.from_numpy(coef).float()
            offsets.append(intercept)
        offset = float(np.mean(offsets))
    meta = {"construction": dict(c.__dict__), "n_train": int(len(idx)),
            "normalisation": "joint" if c.layout == "joint" else "per-row"}
    return normal, layers, offset, meta
