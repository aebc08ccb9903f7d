"""Semantic analysis of a method's inverted codes: attribute AP (paper Fig. 3), interpolation (Table 2)
and manipulation (Figs. 6–7).

``evaluate_semantics`` takes one method's W+ codes of the real test images and returns metric rows,
curves and image artifacts for the store. It computes nothing that the store's report recomputes.

- **Attribute AP**: score = signed distance of each code to each attribute boundary
  (``idinvert.editing.signed_distance``); ground truth = the given labels (the renderer's exact labels on
  the synthetic domain, a CSV on user folders) or, without labels, the classifier's prediction on the
  *real* image, as the paper does. ``label_source`` is written into every row and curve.
- **Interpolation**: seeded pairs of codes, ``interp_steps`` points of a straight line in W+ (endpoints
  are the reconstructions themselves and are left out of the metrics), decoded and compared with the
  real images: ``interp_fid_domain`` (classifier.embed), ``interp_fid`` (Inception, when given) and
  ``interp_swd``.
- **Manipulation**: x_edit = G(w + alpha·n) on the boundary's layers for each alpha; edit strengths are
  given in units of the standard deviation of the signed distance of codes sampled from G (so ±3 means
  what it means for InterFaceGAN in Z, where that deviation is 1); ``edit_success_<attr>``,
  ``edit_success_mean``, ``edit_preservation`` (non-target predictions kept) and ``edit_dpips``
  (domain perceptual distance to the unedited reconstruction).

Subsampling (``SemanticConfig``) keeps all of it to about 5-10 s per method at 32 px on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bench import metrics as M
from bench.artifacts import safe_name, save_png
from bench.store import MetricRow
from idinvert.boundaries import BoundarySettings, distance_spread, sample_codes
from idinvert.editing import edit_codes, interpolate_codes, signed_distance
from idinvert.grids import image_row
from idinvert.utils import device_of

__all__ = ["SemanticConfig", "SemanticResult", "evaluate_semantics", "semantic_for_run",
           "metric_names", "load_or_train_boundaries", "edit_scales"]


@dataclass(frozen=True)
class SemanticConfig:
    """Settings of the semantic analysis. Defaults and their reasons:

    boundary_*:    InterFaceGAN boundary training (see ``idinvert.boundaries`` for the measurements):
                   5,000 sampled codes, the 10% most confident a side, all layers, seed 0 (boundaries
                   belong to the bundle, not to a run's seed).
    interp_pairs / interp_steps: 24 pairs x 8 points (6 interior) = 144 decoded images, enough for a
                   Fréchet estimate in the classifier's 64-d embedding against the real set.
    edit_alphas / alpha_unit:   (-3, -1.5, 1.5, 3) in units of the std of the signed distance of codes
                   sampled from G ("std"; "w" = raw W distances). In W the spread differs per attribute
                   (embedded bundle: 0.78 for expression to 2.06 for age), so one raw range would push
                   some attributes far off the distribution and barely move others; the std unit is the
                   analogue of InterFaceGAN's [-3, 3] in Z, where that std is 1. Measured on 100 sampled
                   codes: 1.5 std flips 63-85% of the eligible codes per attribute, 3 std 83-99% -- one
                   mid-range and one near-saturated strength, where methods can differ.
    edit_images:   images edited per attribute, each at every alpha: 24 x 4 = 96 edits per attribute.
    spread_samples: sampled codes to measure the distance spread where a boundary does not carry it.
    interp_strips / edit_strip_images: how many PNG strips to save.

    Cost at 32 px (embedded-size G and classifier, 128 test images, 2 shared CPU cores): about 5-10 s
    per method, dominated by decoding ~650 images and the interpolation SWD.
    """

    boundary_samples: int = 5_000
    boundary_top_fraction: float = 0.1
    boundary_layers: tuple[int, ...] | None = None
    boundary_seed: int = 0
    interp_pairs: int = 24
    interp_steps: int = 8
    interp_strips: int = 3
    edit_alphas: tuple[float, ...] = (-3.0, -1.5, 1.5, 3.0)
    alpha_unit: str = "std"
    edit_images: int = 24
    edit_strip_images: int = 2
    spread_samples: int = 2000
    seed: int = 0
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.alpha_unit not in ("std", "w"):
            raise ValueError(f"alpha_unit must be 'std' or 'w', got {self.alpha_unit!r}")
        if self.interp_steps < 3:
            raise ValueError(f"interp_steps must be >= 3 (two endpoints and an interior point), "
                             f"got {self.interp_steps}")
        if not self.edit_alphas or any(a == 0 for a in self.edit_alphas):
            raise ValueError(f"edit_alphas must be non-empty and non-zero, got {self.edit_alphas}")
        object.__setattr__(self, "edit_alphas", tuple(float(a) for a in self.edit_alphas))
        if self.boundary_layers is not None:
            object.__setattr__(self, "boundary_layers", tuple(int(l) for l in self.boundary_layers))

    def boundary_settings(self) -> BoundarySettings:
        return BoundarySettings(n_samples=self.boundary_samples, top_fraction=self.boundary_top_fraction,
                                seed=self.boundary_seed, layers=self.boundary_layers)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SemanticResult:
    metrics: list[MetricRow] = field(default_factory=list)
    curves: dict[str, dict] = field(default_factory=dict)
    artifacts: list[tuple[str, str, dict]] = field(default_factory=list)


def metric_names(attributes: Sequence[str]) -> list[str]:
    """Every metric name ``evaluate_semantics`` returns a row for, given the attribute names."""
    return ([f"ap_{a}" for a in attributes] + ["ap_mean", "interp_fid_domain", "interp_fid", "interp_swd"]
            + [f"edit_success_{a}" for a in attributes]
            + ["edit_success_mean", "edit_preservation", "edit_dpips"])


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


class _Nets:
    """The bundle's generator and classifier in eval mode, batched and on their device."""

    def __init__(self, bundle: Any, batch_size: int, domain_features: Callable | None = None):
        self.generator = bundle.generator
        self.classifier = getattr(bundle, "classifier", None)
        if hasattr(bundle, "has") and not bundle.has("classifier"):
            self.classifier = None
        self.batch_size = batch_size
        self.device = device_of(self.generator)
        self.cdevice = device_of(self.classifier) if self.classifier is not None else self.device
        self.domain_features = domain_features
        self.domain_description = getattr(domain_features, "description", None) or (
            "domain features" if domain_features is not None else "classifier.embed")

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """codes [N, L, D] -> images [N, 3, H, W] in [-1, 1], CPU."""
        out = [self.generator.synthesis(c.to(self.device)).clamp(-1, 1).float().cpu()
               for c in codes.split(self.batch_size)]
        return torch.cat(out) if out else torch.empty(0)

    @torch.no_grad()
    def _apply(self, fn: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
        return torch.cat([fn(x.to(self.cdevice)).float().cpu() for x in images.split(self.batch_size)])

    def probs(self, images: Tensor) -> Tensor:
        return torch.sigmoid(self._apply(self.classifier, images))

    def embed(self, images: Tensor) -> Tensor:
        """The domain Fréchet features: the given feature map, else classifier.embed."""
        if self.domain_features is not None:
            return self.domain_features(images).float().cpu()
        return self._apply(self.classifier.embed, images)

    @torch.no_grad()
    def dpips_to_reference(self, edited: Tensor, reference: Tensor, k: int) -> Tensor:
        """edited [n*k] (image-major: k edits of image 0, then of image 1, ...) vs reference [n] ->
        dpips [n*k]; the reference's features are computed once per chunk, not k times."""
        out = []
        for start in range(0, reference.shape[0], max(1, self.batch_size // k)):
            ref = reference[start:start + max(1, self.batch_size // k)].to(self.cdevice)
            ed = edited[start * k:(start + ref.shape[0]) * k].to(self.cdevice)
            ref_rep = ref.repeat_interleave(k, dim=0)
            ref_feats = [f.repeat_interleave(k, dim=0) for f in self.classifier.features(ref)]

            def features(x: Tensor) -> list[Tensor]:
                return ref_feats if x is ref_rep else self.classifier.features(x)

            out.append(M.dpips(ed, ref_rep, features).cpu())
        return torch.cat(out)


def _rel(rel_prefix: str, name: str) -> str:
    return f"{rel_prefix.rstrip('/')}/{name}" if rel_prefix else name


def _pairs(n: int, count: int, seed: int) -> list[tuple[int, int]]:
    """``count`` distinct unordered pairs of distinct indices in [0, n), deterministic in (n, seed)."""
    total = n * (n - 1) // 2
    count = min(count, total)
    rng = np.random.default_rng(seed)
    seen: set[tuple[int, int]] = set()
    out = []
    while len(out) < count:
        i, j = (int(v) for v in rng.choice(n, size=2, replace=False))
        key = (min(i, j), max(i, j))
        if key not in seen:
            seen.add(key)
            out.append((i, j))
    return out


def _subset(n: int, count: int, seed: int) -> list[int]:
    """A seeded subset of ``min(n, count)`` indices, sorted (the same images for every method)."""
    if count >= n:
        return list(range(n))
    return sorted(int(i) for i in np.random.default_rng(seed + 1).permutation(n)[:count])


def edit_scales(generator: Any, boundaries: dict[str, Any], config: SemanticConfig) -> dict[str, float]:
    """Per boundary, the std of the signed distance of codes sampled from G (the unit of ``edit_alphas``
    when ``alpha_unit == "std"``): ``meta["distance_std"]`` where the boundary carries it (trained
    boundaries measure it on their training codes; ``load_or_train_boundaries`` adds it to loaded ones),
    else measured on ``config.spread_samples`` sampled codes."""
    out = {a: float(b.meta["distance_std"]) for a, b in boundaries.items()
           if (getattr(b, "meta", None) or {}).get("distance_std")}
    missing = {a: b for a, b in boundaries.items() if a not in out}
    if missing:
        codes = sample_codes(generator, config.spread_samples, config.boundary_seed)
        out.update({a: v["std"] for a, v in distance_spread(codes, missing).items()})
    return out


def _boundary_info(b: Any) -> dict[str, Any]:
    return {"boundary_source": getattr(b, "source", None), "boundary_layers": list(b.layers),
            "boundary_val_accuracy": getattr(b, "val_accuracy", None)}


# --------------------------------------------------------------------------------------------------
# the three analyses
# --------------------------------------------------------------------------------------------------

def _attribute_ap(nets: _Nets, codes: Tensor, real_images: Tensor, labels: Tensor | None,
                  label_names: list[str], label_source: str, attributes: list[str],
                  boundaries: dict[str, Any], no_boundary_reason: str, res: SemanticResult) -> None:
    t0 = time.perf_counter()
    names = list(dict.fromkeys(attributes + list(boundaries)))
    if not boundaries:
        for a in names:
            res.metrics.append(MetricRow.unavailable(f"ap_{a}", no_boundary_reason))
        res.metrics.append(MetricRow.unavailable("ap_mean", no_boundary_reason))
        return
    if labels is None and nets.classifier is not None:
        labels = (nets.probs(real_images) >= 0.5).long()
        label_names, label_source = attributes, "classifier"
    if labels is None:
        reason = ("no ground-truth attributes for these images: pass --labels FILE.csv with their "
                  "attributes, or use a bundle with an attribute classifier to predict them")
        for a in names:
            res.metrics.append(MetricRow.unavailable(f"ap_{a}", reason, label_source="none"))
        res.metrics.append(MetricRow.unavailable("ap_mean", reason, label_source="none"))
        return
    labels = torch.as_tensor(labels).long().cpu()
    values = {}
    for a in names:
        name = f"ap_{a}"
        if a not in boundaries:
            res.metrics.append(MetricRow.unavailable(name, f"no boundary for attribute {a!r}",
                                                     label_source=label_source))
            continue
        if a not in label_names:
            res.metrics.append(MetricRow.unavailable(name, f"no label column for attribute {a!r}",
                                                     label_source=label_source))
            continue
        score = signed_distance(codes.float(), boundaries[a]).cpu()
        ap = M.average_precision(score, labels[:, label_names.index(a)])
        detail = {"label_source": label_source, "n": ap.n, "prior": ap.prior,
                  "score": "signed distance of the W+ code to the boundary",
                  **_boundary_info(boundaries[a])}
        if math.isnan(ap.ap):
            res.metrics.append(MetricRow.unavailable(name, "the labels of these images hold one class only",
                                                     **detail))
            continue
        values[a] = ap.ap
        res.metrics.append(MetricRow(name, ap.ap, detail=detail))
        res.curves[f"pr/{a}"] = {"precision": ap.precision, "recall": ap.recall, "ap": ap.ap,
                                 "prior": ap.prior, "n": ap.n, "label_source": label_source}
    seconds = time.perf_counter() - t0
    if values:
        res.metrics.append(MetricRow("ap_mean", sum(values.values()) / len(values),
                                     detail={"label_source": label_source, "attributes": sorted(values),
                                             "seconds": seconds}))
    else:
        res.metrics.append(MetricRow.unavailable("ap_mean", "no attribute AP could be computed",
                                                 label_source=label_source))


def _interpolation(nets: _Nets, codes: Tensor, real_images: Tensor, ids: Sequence[str],
                   config: SemanticConfig, out_dir: Path, rel_prefix: str, inception: Any,
                   inception_reason: str | None, reference: Tensor | None, res: SemanticResult) -> None:
    t0 = time.perf_counter()
    n = codes.shape[0]
    names = ("interp_fid_domain", "interp_fid", "interp_swd")
    if n < 2:
        for name in names:
            res.metrics.append(MetricRow.unavailable(name, "fewer than 2 inverted images to pair"))
        return
    pairs = _pairs(n, config.interp_pairs, config.seed)
    a = torch.tensor([p[0] for p in pairs])
    b = torch.tensor([p[1] for p in pairs])
    steps = config.interp_steps
    path = interpolate_codes(codes[a].float(), codes[b].float(), steps)  # [P, S, L, D]
    interior = path[:, 1:-1].reshape(-1, *codes.shape[1:])
    fake = nets.decode(interior)
    base = {"n_pairs": len(pairs), "steps": steps, "n_fake": int(fake.shape[0]),
            "n_real": int(real_images.shape[0]), "endpoints": "excluded", "pair_seed": config.seed}

    def floor_of(real_feats: Tensor, extract: Callable[[Tensor], Tensor]) -> dict[str, Any]:
        size = fake.shape[0]
        if reference is not None and reference.shape[0] >= 2:
            ref = extract(reference[:size])
            value = M.frechet_distance(M.feature_stats(ref), M.feature_stats(real_feats))
            return {"floor": value, "floor_n": int(ref.shape[0]),
                    "floor_kind": "a disjoint real set of the interpolation set's size vs the real images"}
        if real_feats.shape[0] < 4:
            return {"floor": None, "floor_kind": "too few real images for a floor"}
        fl = M.real_floor(real_feats, size, seed=config.seed)
        return {"floor": fl.value, "floor_n": fl.n, "floor_kind": "two disjoint subsets of the real images"}

    if nets.classifier is not None or nets.domain_features is not None:
        real_emb = nets.embed(real_images)
        value = M.frechet_distance(M.feature_stats(nets.embed(fake)), M.feature_stats(real_emb))
        res.metrics.append(MetricRow("interp_fid_domain", value, detail={
            **base, "dims": int(real_emb.shape[1]), "features": nets.domain_description,
            **floor_of(real_emb, nets.embed)}))
    else:
        res.metrics.append(MetricRow.unavailable(
            "interp_fid_domain", "the bundle has no attribute classifier (its embedding defines the domain "
            "Fréchet distance)"))
    if inception is not None:
        def extract(x: Tensor) -> Tensor:
            return M.extract_features(inception, x, 50)
        real_f = extract(real_images)
        value = M.frechet_distance(M.feature_stats(extract(fake)), M.feature_stats(real_f))
        res.metrics.append(MetricRow("interp_fid", value, detail={
            **base, "dims": int(real_f.shape[1]), **floor_of(real_f, extract)}))
    else:
        reason = inception_reason or M.inception_unavailable_reason() or "no Inception extractor was given"
        res.metrics.append(MetricRow.unavailable("interp_fid", reason))
    try:
        sw = M.swd(fake, real_images, seed=config.seed)
    except ValueError as exc:  # images too small for the pyramid
        res.metrics.append(MetricRow.unavailable("interp_swd", str(exc), **base))
    else:
        res.metrics.append(MetricRow("interp_swd", sw.mean, detail={
            **base, "unit": "x1e3", "levels": {str(k): v for k, v in sw.levels.items()},
            "seconds": time.perf_counter() - t0}))

    for k in range(min(config.interp_strips, len(pairs))):
        i, j = pairs[k]
        decoded = nets.decode(path[k])
        tiles = [real_images[i]] + list(decoded) + [real_images[j]]
        name = f"interp_{k:02d}.png"
        save_png(image_row(tiles), out_dir / name)
        res.artifacts.append(("interp_strip", _rel(rel_prefix, name), {
            "pair": [ids[i], ids[j]], "steps": steps,
            "layout": "real A | decoded path A..B (endpoints = reconstructions) | real B"}))


def _manipulation(nets: _Nets, codes: Tensor, real_images: Tensor, ids: Sequence[str],
                  labels: Tensor | None, label_names: list[str], label_source: str, attributes: list[str],
                  boundaries: dict[str, Any], no_boundary_reason: str, config: SemanticConfig,
                  out_dir: Path, rel_prefix: str, res: SemanticResult) -> None:
    t0 = time.perf_counter()
    names = list(dict.fromkeys(attributes + list(boundaries)))
    summary = ("edit_success_mean", "edit_preservation", "edit_dpips")
    if not boundaries:
        for name in [f"edit_success_{a}" for a in names] + list(summary):
            res.metrics.append(MetricRow.unavailable(name, no_boundary_reason))
        return
    idx = _subset(codes.shape[0], config.edit_images, config.seed)
    c = codes[idx].float()
    recon = nets.decode(c)
    alphas = torch.tensor(config.edit_alphas)
    k = len(alphas)
    spread = edit_scales(nets.generator, boundaries, config) if config.alpha_unit == "std" \
        else {a: 1.0 for a in boundaries}
    exact_labels = labels is not None and label_source == "renderer"
    cls = nets.classifier
    probs_recon = nets.probs(recon) if cls is not None else None
    no_cls = ("the bundle has no attribute classifier to judge edits; edit strips are still saved")
    success, preservation, dpips_all, dpips_by_attr, preservation_by_attr = {}, [], [], {}, {}
    strip_alphas = sorted(config.edit_alphas + (0.0,))
    for a in names:
        name = f"edit_success_{a}"
        if a not in boundaries:
            res.metrics.append(MetricRow.unavailable(name, f"no boundary for attribute {a!r}"))
            continue
        b = boundaries[a]
        scale = spread[a]
        alphas_w = alphas * scale
        edited = nets.decode(edit_codes(c, b, alphas_w).reshape(-1, *c.shape[1:]))  # [n*K] image-major
        for s in range(min(config.edit_strip_images, len(idx))):
            per_alpha = {float(al): edited[s * k + j] for j, al in enumerate(config.edit_alphas)}
            per_alpha[0.0] = recon[s]
            fname = f"edit_{safe_name(a)}_{s:02d}.png"
            save_png(image_row([real_images[idx[s]]] + [per_alpha[al] for al in strip_alphas]), out_dir / fname)
            res.artifacts.append(("edit_strip", _rel(rel_prefix, fname), {
                "attribute": a, "image_id": ids[idx[s]], "alphas": strip_alphas,
                "alpha_unit": config.alpha_unit, "alphas_w": [al * scale for al in strip_alphas],
                "layout": "real | edits at alphas (0 = the unedited reconstruction)"}))
        if cls is None:
            res.metrics.append(MetricRow.unavailable(name, no_cls))
            continue
        if a not in attributes:
            res.metrics.append(MetricRow.unavailable(name, f"the classifier has no output for {a!r}"))
            continue
        t = attributes.index(a)
        exact = exact_labels and a in label_names
        probs_edit = nets.probs(edited)
        before_recon = probs_recon.repeat_interleave(k, dim=0)
        direction = alphas.repeat(len(idx))
        by_recon = M.edit_success(before_recon[:, t], probs_edit[:, t], direction=direction)
        if exact:
            start = labels[idx, label_names.index(a)].float().repeat_interleave(k)
            primary = M.edit_success(start, probs_edit[:, t], direction=direction)
            start_note = ("start: the real image's exact label (renderer); end: classifier on the edited "
                          "image")
        else:
            primary = by_recon
            start_note = "start and end: classifier on the unedited reconstruction and on the edited image"
        per_alpha = {}
        for j, al in enumerate(config.edit_alphas):
            sel = torch.arange(len(idx)) * k + j
            st = labels[idx, label_names.index(a)].float() if exact else probs_recon[:, t]
            r = M.edit_success(st, probs_edit[sel, t], direction=float(al))
            per_alpha[str(al)] = {"rate": None if math.isnan(r.rate) else r.rate, "n_eligible": r.n_eligible}
        pres = M.edit_preservation(before_recon, probs_edit, target=t)
        d = nets.dpips_to_reference(edited, recon, k)
        dpips_all.append(d)
        dpips_by_attr[a] = float(d.mean())
        preservation_by_attr[a] = pres.agreement
        if not math.isnan(pres.agreement):
            preservation.append(pres.agreement)
        detail = {"n_images": len(idx), "alphas": list(config.edit_alphas), "alpha_unit": config.alpha_unit,
                  "alphas_w": [float(v) for v in alphas_w], "distance_std": scale,
                  "n_eligible": primary.n_eligible, "n_success": primary.n_success, "per_alpha": per_alpha,
                  "start_state": start_note, "label_source": label_source if exact else "classifier",
                  "success_vs_reconstruction": None if math.isnan(by_recon.rate) else by_recon.rate,
                  **_boundary_info(b)}
        if math.isnan(primary.rate):
            res.metrics.append(MetricRow.unavailable(name, "no edit started on the side it moves away from",
                                                     **detail))
            continue
        success[a] = primary.rate
        res.metrics.append(MetricRow(name, primary.rate, detail=detail))
    seconds = time.perf_counter() - t0
    common = {"n_images": len(idx), "alphas": list(config.edit_alphas), "alpha_unit": config.alpha_unit,
              "seconds": seconds}
    if cls is None:
        for name in summary:
            res.metrics.append(MetricRow.unavailable(name, no_cls))
        return
    if success:
        res.metrics.append(MetricRow("edit_success_mean", sum(success.values()) / len(success),
                                     detail={**common, "attributes": sorted(success),
                                             "start_state": "exact labels" if exact_labels
                                             else "classifier"}))
    else:
        res.metrics.append(MetricRow.unavailable("edit_success_mean", "no edit success rate was defined"))
    if preservation:
        res.metrics.append(MetricRow("edit_preservation", sum(preservation) / len(preservation), detail={
            **common, "per_attribute": preservation_by_attr,
            "definition": "fraction of (edit, non-target attribute) pairs whose classifier prediction "
                          "equals that on the unedited reconstruction; mean over edited attributes"}))
    else:
        res.metrics.append(MetricRow.unavailable("edit_preservation", "no non-target attribute to compare"))
    if dpips_all:
        res.metrics.append(MetricRow("edit_dpips", float(torch.cat(dpips_all).mean()), detail={
            **common, "per_attribute": dpips_by_attr,
            "definition": "dpips(edited image, unedited reconstruction), mean over all edits"}))
    else:
        res.metrics.append(MetricRow.unavailable("edit_dpips", "no edit could be judged"))


# --------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------

def evaluate_semantics(bundle: Any, codes: Tensor, real_images: Tensor, ids: Sequence[str],
                       labels: Tensor | None, label_source: str, boundaries: dict[str, Any] | None,
                       out_dir: Path, rel_prefix: str, config: SemanticConfig = SemanticConfig(), *,
                       inception: Any = None, inception_reason: str | None = None,
                       reference: Tensor | None = None, no_boundary_reason: str | None = None,
                       label_attributes: Sequence[str] | None = None,
                       domain_features: Callable[[Tensor], Tensor] | None = None) -> SemanticResult:
    """Attribute AP, interpolation and manipulation metrics of one method's codes.

    bundle: generator (``.synthesis``), classifier (or None), attributes (label / logit column names).
    codes: [N, L, D] inverted W+ codes of ``real_images`` [N, 3, H, W] in [-1, 1]; ids: N image ids.
    labels: int [N, A] in {0, 1}, columns named by ``label_attributes`` (default: ``bundle.attributes``),
      or None; label_source: "renderer" | "csv" | "classifier" | "none" (what the labels are).
    boundaries: {attribute: Boundary}; empty or None makes AP and edit metrics unavailable with
      ``no_boundary_reason``.
    out_dir: where PNG strips are written; artifact paths are ``rel_prefix/<file>``.
    inception: an Inception feature extractor (images -> [B, 2048]) for ``interp_fid``, or None (then
      ``interp_fid`` is unavailable with ``inception_reason``).
    reference: real images disjoint from ``real_images`` for the real-vs-real floors, or None (then the
      floor compares two disjoint subsets of ``real_images``).
    domain_features: the feature map of ``fid_domain`` (images -> [B, K]; the runner's PCA-reduced
      classifier embedding), so that ``interp_fid_domain`` is measured in the same space; None:
      ``classifier.embed``.
    """
    if codes.ndim != 3 or codes.shape[0] != real_images.shape[0] or len(ids) != codes.shape[0]:
        raise ValueError(f"codes [N, L, D], real_images [N, 3, H, W] and ids [N] must agree, got "
                         f"{tuple(codes.shape)}, {tuple(real_images.shape)}, {len(ids)}")
    out_dir = Path(out_dir)
    nets = _Nets(bundle, config.batch_size, domain_features)
    attributes = list(getattr(bundle, "attributes", ()) or ())
    boundaries = dict(boundaries or {})
    no_boundary_reason = no_boundary_reason or (
        "no attribute boundaries: the bundle has no attribute classifier to train them; pass "
        "--boundaries DIR with boundary files")
    label_names = list(label_attributes) if label_attributes is not None else attributes
    if labels is not None:
        labels = torch.as_tensor(labels).long().cpu()
        if labels.shape != (codes.shape[0], len(label_names)):
            raise ValueError(f"labels must be [N={codes.shape[0]}, {len(label_names)}], one column per "
                             f"attribute of {label_names}, got {tuple(labels.shape)}")
    codes = codes.detach().float().cpu()
    real_images = real_images.detach().float().cpu()
    res = SemanticResult()
    _attribute_ap(nets, codes, real_images, labels, label_names, label_source, attributes, boundaries,
                  no_boundary_reason, res)
    _interpolation(nets, codes, real_images, ids, config, out_dir, rel_prefix, inception,
                   inception_reason, reference, res)
    _manipulation(nets, codes, real_images, ids, labels, label_names, label_source, attributes, boundaries,
                  no_boundary_reason, config, out_dir, rel_prefix, res)
    return res


def load_or_train_boundaries(bundle: Any, cache_dir: Path, boundary_dir: Path | None,
                             config: SemanticConfig = SemanticConfig(),
                             progress: Callable[[str], None] | None = None
                             ) -> tuple[dict[str, Any], str | None]:
    """Boundaries for ``bundle``: the official files in ``boundary_dir`` when given, else trained (and
    cached under ``cache_dir``) with the bundle's classifier. -> (boundaries, reason when there are none)."""
    if boundary_dir is not None:
        from idinvert.official_boundaries import load_boundary_dir

        g = bundle.generator
        boundaries = load_boundary_dir(boundary_dir, g.num_layers, g.w_space_dim)
        for name, std in edit_scales(g, boundaries, config).items():
            boundaries[name].meta.setdefault("distance_std", std)
        return boundaries, None
    has_cls = (bundle.has("classifier") if hasattr(bundle, "has")
               else getattr(bundle, "classifier", None) is not None)
    if not has_cls:
        return {}, (f"no attribute boundaries: bundle {getattr(bundle, 'name', '?')} has no attribute "
                    f"classifier to train them; pass --boundaries DIR with boundary files (and --labels "
                    f"FILE.csv with the images' attributes, for the attribute AP)")
    from idinvert.boundaries import BoundaryCache

    return BoundaryCache(cache_dir).get_or_train(bundle, config.boundary_settings(), progress), None


def semantic_for_run(evaluator: Any, codes: Tensor, reals: Tensor, ok_idx: Sequence[int],
                     ids: Sequence[str], dataset: Any, run_id: str,
                     config: SemanticConfig | None = None) -> tuple[list[MetricRow], dict, list]:
    """The runner's hook (``bench.evaluation.Evaluator``): boundaries once per evaluator, then
    ``evaluate_semantics`` on the run's successfully inverted images."""
    opts = evaluator.opts
    config = (config or getattr(opts, "semantic_config", None)
              or SemanticConfig(seed=int(getattr(opts, "seed", 0))))
    # Real-size networks declare a small batch (bench.runner.resolve_batch_size); decoding 128 images
    # of 256 px at once would take ~15 GB, so decode no more at once than the run's batch.
    run_batch = getattr(opts, "batch_size", None)
    if ((getattr(evaluator.bundle, "info", None) or {}).get("default_batch_size") and run_batch
            and config.batch_size > run_batch):
        config = dataclasses.replace(config, batch_size=int(run_batch))
    if getattr(evaluator, "_semantic_boundaries", None) is None:
        say = None if getattr(opts, "quiet", False) else (lambda msg: print(f"bench: {msg}", flush=True))
        evaluator._semantic_boundaries = load_or_train_boundaries(
            evaluator.bundle, evaluator.results_dir / "cache" / "boundaries",
            getattr(opts, "boundaries", None), config, say)
    boundaries, reason = evaluator._semantic_boundaries
    labels = None
    if getattr(dataset, "labels", None) is not None:
        labels = dataset.labels[list(ok_idx)]
    label_source = dataset.label_source if labels is not None else "none"
    has_names = labels is not None and bool(getattr(dataset, "attributes", None))
    label_attributes = list(dataset.attributes) if has_names else None
    inception = evaluator.inception()
    reference = evaluator._reference(dataset, config.interp_pairs * (config.interp_steps - 2))
    rel_prefix = f"runs/{run_id}/semantic"
    res = evaluate_semantics(evaluator.bundle, codes, reals, [ids[i] for i in ok_idx], labels, label_source,
                             boundaries, evaluator.results_dir / rel_prefix, rel_prefix, config,
                             inception=inception, inception_reason=evaluator.unavailable.get("fid"),
                             reference=reference, no_boundary_reason=reason,
                             label_attributes=label_attributes,
                             domain_features=getattr(evaluator, "domain_features", None))
    return res.metrics, res.curves, res.artifacts
