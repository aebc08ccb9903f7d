"""Semantic analysis of a method's inverted codes: attribute AP (paper Fig. 3), interpolation (Table 2)
and manipulation (Figs. 6–7).

Three registered metric functions of a metric context (``bench.metrics.context.MetricContext``):
``attribute_ap``, ``interpolation`` and ``manipulation``, each returning the rows of its family and adding
curves and image artifacts to the context. ``evaluate_semantics(ctx)`` runs all three.

- **Attribute AP**: score = signed distance of each code to each attribute boundary
  (``idinvert.editing.signed_distance``); ground truth = the given labels (the renderer's exact labels on
  the synthetic domain, a CSV on user folders) or, without labels, the judge's prediction on the
  *real* image (the paper uses its attribute predictor; here the boundaries' own classifier would be
  circular, so the benchmark's judge stands in). ``label_source`` is written into every row and curve.
- **Interpolation**: seeded pairs of codes, ``interp_steps`` points of a straight line in W+ (endpoints
  are the reconstructions themselves and are left out of the metrics), decoded and compared with the
  real images: ``interp_fid_domain`` (judge.embed), ``interp_fid`` (Inception, when given) and
  ``interp_swd``.
- **Per-image generators** (PTI): a method that returns one decoder per image has its reconstructions,
  edits and interpolations decoded with those (``MetricContext.decode``): image i's edits with image
  i's tuned G, an interpolation A..B with A's (``INTERP_DECODER``, the choice explained there).
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

from bench.metrics.attributes import average_precision, probe_scores
from bench.metrics.edits import edit_preservation, edit_success
from bench.metrics.perceptual import dpips
from bench.metrics.registry import ATTR, all_metrics
from bench.artifacts import safe_name, save_png
from bench.metrics.context import EvalNetwork, MetricContext
from bench.metrics.errors import MetricUnavailable
from bench.metrics.reconstruction import frechet_to_real, inception_extract
from bench.metrics.rows import MetricRow
from bench.metrics.swd import swd as sliced_wasserstein
from idinvert.boundaries import BoundarySettings, distance_spread, sample_codes
from idinvert.boundary_constructions import DEFAULT_CONSTRUCTION, DEFAULT_EDIT_CONSTRUCTION
from idinvert.editing import edit_codes, interpolate_codes, signed_distance
from idinvert.grids import image_row

# Which generator decodes an interpolation between two images of a method with per-image generators
# (PTI): there is no generator "between" two tuned ones, and blending their weights would be a new
# method. The path from A to B is decoded with A's tuned generator -- how PTI edits an image (its own
# G, codes moved from its pivot) -- so the path starts at A's reconstruction exactly; its far end is
# B's pivot seen through A's generator, not B's reconstruction. Pairs are drawn with a seeded random
# order, so which image of a pair is A is itself random.
INTERP_DECODER = "the first image's (A's) tuned generator for the whole path A..B"

__all__ = ["SemanticConfig", "SemanticResult", "evaluate_semantics", "attribute_ap", "interpolation",
           "manipulation", "metric_names", "load_or_train_boundaries", "edit_scales"]


@dataclass(frozen=True)
class SemanticConfig:
    """Settings of the semantic analysis. Defaults and their reasons:

    boundary_*:    boundary training (``idinvert.boundaries``): 5,000 sampled codes labelled by the
                   classifier, seed 0 (boundaries belong to the bundle, not to a run's seed), built by
                   ``boundary_construction`` (``idinvert.boundary_constructions``, chosen by the held-out
                   AP ceiling, ``python -m bench.boundary_check``; None: InterFaceGAN's extremes, the
                   10% most confident a side, ``boundary_top_fraction``, one SVM per layer).
                   ``edit_boundary_construction``: the directions edits move along, chosen apart by the
                   edit-success ceiling of G's own held-out codes (a direction that ranks codes best is
                   not the one that changes the image most: measured in ``idinvert.boundary_constructions``);
                   the same construction: one set of boundaries for both, as the paper has.
    interp_pairs / interp_steps: 24 pairs x 8 points (6 interior) = 144 decoded images, enough for a
                   Fréchet estimate in the judge's 64-d embedding against the real set.
    edit_alphas / alpha_unit:   (-3, -1.5, 1.5, 3) in units of the std of the signed distance of codes
                   sampled from G ("std"; "w" = raw W distances). In W the spread differs per attribute
                   (embedded bundle: 0.78 for expression to 2.06 for age), so one raw range would push
                   some attributes far off the distribution and barely move others; the std unit is the
                   analogue of InterFaceGAN's [-3, 3] in Z, where that std is 1. Measured on 100 sampled
                   codes: 1.5 std flips 63-85% of the eligible codes per attribute, 3 std 83-99% -- one
                   mid-range and one near-saturated strength, where methods can differ.
    edit_images:   images edited per attribute, each at every alpha: 24 x 4 = 96 edits per attribute.
    spread_samples: sampled codes to measure the distance spread where a boundary does not carry it.
    ceiling_samples: held-out codes of G on which each boundary's AP ceiling is measured (judge labels;
                   ``bench.boundary_check``; 2,000: the ceiling's own sampling error is ~0.005).
    probe_folds:   folds of the cross-validated linear probe behind the decodable AP (``probe_ap_*``).
    interp_strips / edit_strip_images: how many PNG strips to save.

    Cost at 32 px (embedded-size G and classifier, 128 test images, 2 shared CPU cores): about 5-10 s
    per method, dominated by decoding ~650 images and the interpolation SWD.
    """

    boundary_samples: int = 5_000
    boundary_top_fraction: float = 0.1
    boundary_layers: tuple[int, ...] | None = None
    boundary_seed: int = 0
    boundary_construction: str | None = DEFAULT_CONSTRUCTION
    edit_boundary_construction: str | None = DEFAULT_EDIT_CONSTRUCTION
    interp_pairs: int = 24
    interp_steps: int = 8
    interp_strips: int = 3
    edit_alphas: tuple[float, ...] = (-3.0, -1.5, 1.5, 3.0)
    alpha_unit: str = "std"
    edit_images: int = 24
    edit_strip_images: int = 2
    spread_samples: int = 2000
    ceiling_samples: int = 2000
    probe_folds: int = 5
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
                                seed=self.boundary_seed, layers=self.boundary_layers,
                                construction=self.boundary_construction)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SemanticResult:
    metrics: list[MetricRow] = field(default_factory=list)
    curves: dict[str, dict] = field(default_factory=dict)
    artifacts: list[tuple[str, str, dict]] = field(default_factory=list)


def metric_names(attributes: Sequence[str]) -> list[str]:
    """Every metric name the semantic stages return a row for, given the attribute names (from the
    registry: its semantic entries, templates expanded per attribute)."""
    out: list[str] = []
    semantic = all_metrics(level="semantic")
    # the three stages of this module (other semantic-level metrics, e.g. code_lec, are computed apart)
    stages = {m.name for m in semantic if isinstance(m.fn, str) and m.fn.startswith(__name__ + ":")}
    for m in semantic:
        if m.name not in stages and m.computed_by not in stages:
            continue
        out += [m.name.replace(ATTR, a) for a in attributes] if m.is_template else [m.name]
    return out


# --------------------------------------------------------------------------------------------------
# what every stage shares: settings, boundaries, batched networks
# --------------------------------------------------------------------------------------------------

@dataclass
class _Setup:
    config: SemanticConfig
    boundaries: dict[str, Any]
    no_boundary_reason: str | None
    judge: EvalNetwork | None  # the evaluation network, None when the bundle has none
    no_judge: str | None
    out_dir: Path
    rel_prefix: str
    ceiling: dict[str, Any] | None = None  # bench.boundary_check.ceilings of the boundaries, when measurable
    edit_boundaries: dict[str, Any] | None = None  # the directions edits move along (None: ``boundaries``)

    @property
    def edits(self) -> dict[str, Any]:
        """The boundaries whose normals edits (and LEC) move codes along."""
        return self.boundaries if self.edit_boundaries is None else self.edit_boundaries

    @property
    def attributes(self) -> list[str]:
        return list(self.judge.attributes) if self.judge is not None else []

    def names(self) -> list[str]:
        """The attributes to report: the judge's, then any boundary's."""
        return list(dict.fromkeys(self.attributes + list(self.boundaries)))

    def rel(self, name: str) -> str:
        return f"{self.rel_prefix}/{name}"


def semantic_config(ctx: MetricContext) -> SemanticConfig:
    """The run's SemanticConfig (its own seed by default); real-size networks decode no more images at
    once than the run's batch (128 images of 256 px at once would take ~15 GB)."""
    opts = ctx.resources.opts
    config = getattr(opts, "semantic_config", None) or SemanticConfig(seed=ctx.seed)
    run_batch = getattr(opts, "batch_size", None)
    info = getattr(ctx.bundle, "info", None)
    if getattr(info, "default_batch_size", None) and run_batch and config.batch_size > run_batch:
        config = dataclasses.replace(config, batch_size=int(run_batch))
    return config


def semantic_setup(ctx: MetricContext) -> _Setup:
    def build() -> _Setup:
        config = semantic_config(ctx)
        given = "boundaries" in ctx.resources._built  # provided by the caller: edits use them too
        boundaries, reason = ctx.resources._once("boundaries", lambda: _boundaries(ctx, config))
        edit = ctx.resources._once("edit-boundaries",
                                   lambda: None if given else _edit_boundaries(ctx, config, boundaries))
        try:
            judge, no_judge = ctx.eval_embedding, None
        except MetricUnavailable as exc:
            judge, no_judge = None, exc.reason
        rel_prefix = f"runs/{ctx.run_id}/semantic"
        ceiling = (ctx.resources._once("boundary-ceiling", lambda: _ceiling(ctx, boundaries, judge))
                   if boundaries and judge is not None else None)
        return _Setup(config, boundaries, reason, judge, no_judge, ctx.resources.results_dir / rel_prefix,
                      rel_prefix, ceiling, edit)
    return ctx.cached("semantic-setup", build)


def _ceiling(ctx: MetricContext, boundaries: dict[str, Any], judge: EvalNetwork) -> dict[str, Any]:
    """Each boundary's AP ceiling on held-out codes of G (``bench.boundary_check``), said once per harness run."""
    from bench.boundary_check import cached_ceilings, ceiling_lines

    result = cached_ceilings(ctx.resources.results_dir / "cache" / "boundaries", ctx.bundle, boundaries, judge,
                             n=semantic_config(ctx).ceiling_samples)
    if not getattr(ctx.resources.opts, "quiet", False):
        for line in ceiling_lines(result):
            print(f"bench: {line}", flush=True)
    return result


def _boundaries(ctx: MetricContext, config: SemanticConfig) -> tuple[dict[str, Any], str | None]:
    opts = ctx.resources.opts
    say = None if getattr(opts, "quiet", False) else (lambda msg: print(f"bench: {msg}", flush=True))
    return load_or_train_boundaries(ctx.bundle, ctx.resources.results_dir / "cache" / "boundaries",
                                    getattr(opts, "boundaries", None), config, say)


def _edit_boundaries(ctx: MetricContext, config: SemanticConfig, scoring: dict[str, Any]) -> dict[str, Any] | None:
    """The edit directions, when they are built apart from the scoring boundaries: trained boundaries whose
    ``edit_boundary_construction`` differs from ``boundary_construction`` (None: edits use ``scoring``)."""
    opts = ctx.resources.opts
    if (not scoring or getattr(opts, "boundaries", None) is not None or getattr(ctx.bundle, "classifier", None) is None
            or config.edit_boundary_construction == config.boundary_construction):
        return None
    edit_config = dataclasses.replace(config, boundary_construction=config.edit_boundary_construction)
    return _boundaries(ctx, edit_config)[0]


def _decode(ctx: MetricContext, codes: Tensor, batch_size: int, owners: Sequence[int]) -> Tensor:
    """codes [N, L, D] -> images [N, 3, H, W] in [-1, 1], CPU: with the bundle's G, or, for a method with
    per-image decoders (PTI's tuned generators), code n with the decoder of image ``owners[n]``."""
    return ctx.decode(codes, owners if ctx.decoders is not None else None, batch_size)


@torch.no_grad()
def _probs(judge: EvalNetwork, images: Tensor, batch_size: int) -> Tensor:
    """The judge's attribute probabilities [N, A]."""
    return torch.sigmoid(torch.cat([judge.logits(x.to(judge.device)).float().cpu()
                                    for x in images.split(batch_size)]))


@torch.no_grad()
def dpips_to_reference(judge: EvalNetwork, edited: Tensor, reference: Tensor, k: int, batch_size: int) -> Tensor:
    """edited [n*k] (image-major: k edits of image 0, then of image 1, ...) vs reference [n] -> dpips [n*k];
    the reference's features are computed once per chunk, not k times."""
    out = []
    step = max(1, batch_size // k)
    for start in range(0, reference.shape[0], step):
        ref = reference[start:start + step].to(judge.device)
        ed = edited[start * k:(start + ref.shape[0]) * k].to(judge.device)
        ref_rep = ref.repeat_interleave(k, dim=0)
        ref_feats = [f.repeat_interleave(k, dim=0) for f in judge.features(ref)]

        def features(x: Tensor) -> list[Tensor]:
            return ref_feats if x is ref_rep else judge.features(x)

        out.append(dpips(ed, ref_rep, features).cpu())
    return torch.cat(out)


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
# attribute AP (paper Fig. 3)
# --------------------------------------------------------------------------------------------------

def _ap_labels(ctx: MetricContext, su: _Setup) -> tuple[Tensor | None, list[str], str]:
    """Ground truth for AP: the given labels, else the judge's prediction on the real images."""
    if ctx.labels is not None:
        return torch.as_tensor(ctx.labels).long().cpu(), list(ctx.label_names), ctx.label_source
    if su.judge is not None:
        return (_probs(su.judge, ctx.images, su.config.batch_size) >= 0.5).long(), su.attributes, "judge"
    return None, [], "none"


def attribute_ap(ctx: MetricContext) -> list[MetricRow]:
    """``ap_<attr>`` and ``ap_mean`` of the context's codes; PR curves go to ``ctx.curves``."""
    t0 = time.perf_counter()
    su = semantic_setup(ctx)
    names = su.names()
    labels, label_names, source = _ap_labels(ctx, su)
    every = [f"{p}_{a}" for p in ("ap", "probe_ap") for a in names] + ["ap_mean", "probe_ap_mean"]
    no_labels = ("no ground-truth attributes for these images: pass --labels FILE.csv with their "
                 "attributes, or use a bundle with a judge network to predict them")
    if not su.boundaries:  # the decodable AP needs labels only
        probes = ([MetricRow.unavailable(n, no_labels, label_source="none") for n in every if n.startswith("probe_")]
                  if labels is None else
                  _probe_rows(ctx, su, list(dict.fromkeys(names + label_names)), labels, label_names, source))
        return [MetricRow.unavailable(n, su.no_boundary_reason) for n in every if not n.startswith("probe_")] + probes
    if labels is None:
        return [MetricRow.unavailable(n, no_labels, label_source="none") for n in every]
    rows, values, scores = [], {}, {}
    for a in names:
        row = _ap_row(ctx, su.boundaries.get(a), a, labels, label_names, source)
        if row.status == "ok" and su.ceiling is not None and a in su.ceiling["ap"]:
            row.detail.update(ceiling=su.ceiling["ap"][a], of_ceiling=row.value / su.ceiling["ap"][a],
                              ceiling_n=su.ceiling["n"])
        rows.append(row)
        if row.status == "ok":
            values[a] = row.value
            scores[a] = signed_distance(ctx.codes.float(), su.boundaries[a]).cpu()
    rows += _probe_rows(ctx, su, names, labels, label_names, source)
    if values:
        used = sorted(values)
        # per-image boundary distances and labels: a bootstrap over images recomputes ap_mean from them
        arrays = None
        if len(ctx.ids) == ctx.n:
            cols = [label_names.index(a) for a in used]
            arrays = {"scores": (list(ctx.ids), torch.stack([scores[a] for a in used], 1).numpy()),
                      "labels": (list(ctx.ids), labels[:, cols].numpy().astype(np.int8))}
        rows.append(MetricRow("ap_mean", sum(values.values()) / len(values), detail={
            "label_source": source, "attributes": used, "seconds": time.perf_counter() - t0},
            arrays=arrays))
    else:
        rows.append(MetricRow.unavailable("ap_mean", "no attribute AP could be computed", label_source=source))
    return rows


def _probe_rows(ctx: MetricContext, su: _Setup, names: list[str], labels: Tensor, label_names: list[str],
                source: str) -> list[MetricRow]:
    """``probe_ap_<attr>`` and ``probe_ap_mean``: the decodable AP -- the AP of a linear probe fitted on
    this method's own codes of the other folds (cross-validation over the evaluated images, labels as
    for ``ap_<attr>``), scored on each image's code. High probe AP with low boundary AP: the attribute
    is in the codes but off G's boundary; both low: the codes lost it."""
    rows, values = [], {}
    features = ctx.codes.float().flatten(1).cpu()
    from bench.metrics.attributes import PROBE_C

    base = {"label_source": source, "folds": su.config.probe_folds,
            "probe": f"standardised L2 logistic regression (C={PROBE_C:g}) on the flattened W+ code",
            "split": "stratified cross-validation over the evaluated images; each scored by a probe that "
                     "never saw it", "seed": su.config.seed}
    for a in names:
        name = f"probe_ap_{a}"
        if a not in label_names:
            rows.append(MetricRow.unavailable(name, f"no label column for attribute {a!r}", **base))
            continue
        y = labels[:, label_names.index(a)]
        score = probe_scores(features, y, folds=su.config.probe_folds, seed=su.config.seed)
        if score is None:
            rows.append(MetricRow.unavailable(name, "fewer than 2 images of one class: nothing to fit", **base))
            continue
        values[a] = average_precision(torch.from_numpy(score), y).ap
        rows.append(MetricRow(name, values[a], detail={**base, "prior": float(y.float().mean())}))
    rows.append(MetricRow("probe_ap_mean", sum(values.values()) / len(values), detail={**base,
                "attributes": sorted(values)}) if values else
                MetricRow.unavailable("probe_ap_mean", "no decodable AP could be computed", **base))
    return rows


def _ap_row(ctx: MetricContext, boundary: Any, a: str, labels: Tensor, label_names: list[str],
            source: str) -> MetricRow:
    name = f"ap_{a}"
    if boundary is None:
        return MetricRow.unavailable(name, f"no boundary for attribute {a!r}", label_source=source)
    if a not in label_names:
        return MetricRow.unavailable(name, f"no label column for attribute {a!r}", label_source=source)
    score = signed_distance(ctx.codes.float(), boundary).cpu()
    ap = average_precision(score, labels[:, label_names.index(a)])
    detail = {"label_source": source, "n": ap.n, "prior": ap.prior,
              "score": "signed distance of the W+ code to the boundary", **_boundary_info(boundary)}
    if math.isnan(ap.ap):
        return MetricRow.unavailable(name, "the labels of these images hold one class only", **detail)
    ctx.curves[f"pr/{a}"] = {"precision": ap.precision, "recall": ap.recall, "ap": ap.ap,
                             "prior": ap.prior, "n": ap.n, "label_source": source}
    return MetricRow(name, ap.ap, detail=detail)


# --------------------------------------------------------------------------------------------------
# interpolation (paper Table 2)
# --------------------------------------------------------------------------------------------------

def interpolation(ctx: MetricContext) -> list[MetricRow]:
    """``interp_fid_domain``, ``interp_fid`` and ``interp_swd`` of decoded W+ interpolations between
    seeded pairs of the context's codes (endpoints excluded), vs the real images; strips to artifacts."""
    t0 = time.perf_counter()
    su = semantic_setup(ctx)
    config, codes, reals = su.config, ctx.codes.float(), ctx.images
    pairs = _pairs(codes.shape[0], config.interp_pairs, config.seed)
    a, b = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    path = interpolate_codes(codes[a], codes[b], config.interp_steps)  # [P, S, L, D]
    inner = config.interp_steps - 2
    fake = _decode(ctx, path[:, 1:-1].reshape(-1, *codes.shape[1:]), config.batch_size,
                   [i for i, _ in pairs for _ in range(inner)])
    base = {"n_pairs": len(pairs), "steps": config.interp_steps, "n_fake": int(fake.shape[0]),
            "n_real": int(reals.shape[0]), "endpoints": "excluded", "pair_seed": config.seed}
    if ctx.decoders is not None:
        base["decoder"] = INTERP_DECODER
    pair_ids = [f"{ctx.ids[i]}|{ctx.ids[j]}" for i, j in pairs] if len(ctx.ids) == ctx.n else None
    rows = [_interp_frechet(ctx, su, "interp_fid_domain", fake, base, pair_ids),
            _interp_frechet(ctx, su, "interp_fid", fake, base)]
    try:
        sw = sliced_wasserstein(fake, reals, seed=config.seed)
    except ValueError as exc:  # images too small for the pyramid
        rows.append(MetricRow.unavailable("interp_swd", str(exc), **base))
    else:
        rows.append(MetricRow("interp_swd", sw.mean, detail={
            **base, "unit": "x1e3", "levels": {str(k): v for k, v in sw.levels.items()},
            "seconds": time.perf_counter() - t0}))
    _interp_strips(ctx, su, pairs, path)
    return rows


def _interp_frechet(ctx: MetricContext, su: _Setup, name: str, fake: Tensor, base: dict,
                    pair_ids: list[str] | None = None) -> MetricRow:
    """One Fréchet row of the interpolations; with ``pair_ids`` it keeps its ingredients: the decoded
    interpolations' features per pair [P, S, K] and the real images' [N, K]."""
    try:
        if name == "interp_fid_domain":
            net = ctx.eval_embedding
            extract, extractor_id, extra = net.embed, net.id, {"features": net.label}
        else:
            (extract, extractor_id), extra = inception_extract(ctx), {}
    except MetricUnavailable as exc:
        return MetricRow.unavailable(name, exc.reason)
    feats: dict[str, Tensor] = {}
    value, detail = frechet_to_real(ctx, extract, extractor_id, fake, floor_seed=su.config.seed, keep=feats)
    arrays = None
    if pair_ids:
        per_pair = feats["fake"].reshape(len(pair_ids), -1, feats["fake"].shape[-1])
        arrays = {"fake": (pair_ids, per_pair.numpy().astype(np.float32)),
                  "real": (list(ctx.ids), feats["real"].numpy().astype(np.float32))}
    return MetricRow(name, value, detail={**base, **extra, **detail}, arrays=arrays)


def _interp_strips(ctx: MetricContext, su: _Setup, pairs: list[tuple[int, int]], path: Tensor) -> None:
    for k in range(min(su.config.interp_strips, len(pairs))):
        i, j = pairs[k]
        decoded = _decode(ctx, path[k], su.config.batch_size, [i] * path.shape[1])
        name = f"interp_{k:02d}.png"
        save_png(image_row([ctx.images[i]] + list(decoded) + [ctx.images[j]]), su.out_dir / name)
        meta = {"pair": [ctx.ids[i], ctx.ids[j]], "steps": su.config.interp_steps,
                "layout": "real A | decoded path A..B (endpoints = reconstructions) | real B"}
        if ctx.decoders is not None:
            meta["layout"] = ("real A | decoded path A..B with A's tuned generator (first = A's "
                              "reconstruction; last = B's code through A's generator) | real B")
            meta["decoder"] = INTERP_DECODER
        ctx.artifacts.append(("interp_strip", su.rel(name), meta))


# --------------------------------------------------------------------------------------------------
# manipulation (paper Figs. 6-7)
# --------------------------------------------------------------------------------------------------

@dataclass
class _Edits:
    """The edited subset: indices, codes, reconstructions, the judge's probabilities on them, and what
    the summary rows collect per attribute."""

    idx: list[int]
    codes: Tensor
    recon: Tensor
    probs_recon: Tensor | None
    alphas: Tensor
    spread: dict[str, float]
    exact_labels: bool
    ids: list[str] = field(default_factory=list)   # the edited images' ids (empty: ids unknown)
    success: dict[str, float] = field(default_factory=dict)
    preservation: dict[str, float] = field(default_factory=dict)
    dpips: dict[str, Tensor] = field(default_factory=dict)
    # per edited image, per attribute: edits that were eligible and that succeeded (counts over alphas)
    counts: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)


def manipulation(ctx: MetricContext) -> list[MetricRow]:
    """``edit_success_<attr>``, ``edit_success_mean``, ``edit_preservation`` and ``edit_dpips`` of edits
    x = G(w + alpha * n) of a seeded subset of the codes; edit strips to artifacts."""
    t0 = time.perf_counter()
    su = semantic_setup(ctx)
    summary = ("edit_success_mean", "edit_preservation", "edit_dpips")
    if not su.edits:
        return [MetricRow.unavailable(n, su.no_boundary_reason)
                for n in [f"edit_success_{a}" for a in su.names()] + list(summary)]
    ed = _edit_subset(ctx, su)
    rows = [_edit_attribute(ctx, su, ed, a) for a in su.names()]
    common = {"n_images": len(ed.idx), "alphas": list(su.config.edit_alphas),
              "alpha_unit": su.config.alpha_unit, "seconds": time.perf_counter() - t0}
    if su.judge is None:
        return rows + [MetricRow.unavailable(n, _no_judge(su)) for n in summary]
    return rows + _edit_summary(ed, common)


def _no_judge(su: _Setup) -> str:
    return f"{su.no_judge}: no network to judge edits; edit strips are still saved"


def _edit_subset(ctx: MetricContext, su: _Setup) -> _Edits:
    config = su.config
    idx = _subset(ctx.codes.shape[0], config.edit_images, config.seed)
    codes = ctx.codes[idx].float()
    recon = _decode(ctx, codes, config.batch_size, idx)
    spread = (edit_scales(ctx.bundle.generator, su.edits, config) if config.alpha_unit == "std"
              else {a: 1.0 for a in su.edits})
    probs = _probs(su.judge, recon, config.batch_size) if su.judge is not None else None
    return _Edits(idx, codes, recon, probs, torch.tensor(config.edit_alphas), spread,
                  ctx.labels is not None and ctx.label_source == "renderer",
                  ids=[ctx.ids[i] for i in idx] if len(ctx.ids) == ctx.n else [])


def _edit_attribute(ctx: MetricContext, su: _Setup, ed: _Edits, a: str) -> MetricRow:
    """Edit the subset along attribute ``a``'s boundary: save strips, then judge the edits."""
    name = f"edit_success_{a}"
    if a not in su.edits:
        return MetricRow.unavailable(name, f"no boundary for attribute {a!r}")
    b, scale = su.edits[a], ed.spread[a]
    k = len(ed.alphas)
    edited = _decode(ctx, edit_codes(ed.codes, b, ed.alphas * scale).reshape(-1, *ed.codes.shape[1:]),
                     su.config.batch_size, [i for i in ed.idx for _ in range(k)])  # [n*K] image-major
    _edit_strips(ctx, su, ed, a, edited, scale)
    if su.judge is None:
        return MetricRow.unavailable(name, _no_judge(su))
    if a not in su.attributes:
        return MetricRow.unavailable(name, f"the judge has no output for {a!r}")
    t = su.attributes.index(a)
    probs_edit = _probs(su.judge, edited, su.config.batch_size)
    before = ed.probs_recon.repeat_interleave(k, dim=0)
    pres = edit_preservation(before, probs_edit, target=t)
    ed.dpips[a] = dpips_to_reference(su.judge, edited, ed.recon, k, su.config.batch_size)
    ed.preservation[a] = pres.agreement
    primary, detail = _edit_success(ctx, su, ed, a, probs_edit)
    detail.update({"alphas_w": [float(v) for v in ed.alphas * scale], "distance_std": scale,
                   **_boundary_info(b)})
    if math.isnan(primary.rate):
        return MetricRow.unavailable(name, "no edit started on the side it moves away from", **detail)
    ed.success[a] = primary.rate
    k = len(ed.alphas)
    ed.counts[a] = (primary.eligible.reshape(-1, k).sum(1), primary.success.reshape(-1, k).sum(1))
    return MetricRow(name, primary.rate, detail=detail)


def _edit_success(ctx: MetricContext, su: _Setup, ed: _Edits, a: str, probs_edit: Tensor) -> tuple[Any, dict]:
    """The success rate of attribute ``a``'s edits (start: the exact label where the renderer gives it,
    else the judge on the reconstruction), its per-alpha rates, and the row's detail."""
    t, k, n = su.attributes.index(a), len(ed.alphas), len(ed.idx)
    exact = ed.exact_labels and a in ctx.label_names
    direction = ed.alphas.repeat(n)
    by_recon = edit_success(ed.probs_recon[:, t].repeat_interleave(k), probs_edit[:, t], direction=direction)
    start = (ctx.labels[ed.idx, ctx.label_names.index(a)].float() if exact else ed.probs_recon[:, t])
    primary = (edit_success(start.repeat_interleave(k), probs_edit[:, t], direction=direction)
               if exact else by_recon)
    per_alpha = {}
    for j, al in enumerate(su.config.edit_alphas):
        r = edit_success(start, probs_edit[torch.arange(n) * k + j, t], direction=float(al))
        per_alpha[str(al)] = {"rate": None if math.isnan(r.rate) else r.rate, "n_eligible": r.n_eligible}
    detail = {"n_images": n, "alphas": list(su.config.edit_alphas), "alpha_unit": su.config.alpha_unit,
              "n_eligible": primary.n_eligible, "n_success": primary.n_success, "per_alpha": per_alpha,
              "start_state": ("start: the real image's exact label (renderer); end: judge on the edited "
                              "image") if exact else
              "start and end: judge on the unedited reconstruction and on the edited image",
              "label_source": ctx.label_source if exact else "judge",
              "success_vs_reconstruction": None if math.isnan(by_recon.rate) else by_recon.rate}
    return primary, detail


def _edit_strips(ctx: MetricContext, su: _Setup, ed: _Edits, a: str, edited: Tensor, scale: float) -> None:
    config, k = su.config, len(ed.alphas)
    strip_alphas = sorted(config.edit_alphas + (0.0,))
    for s in range(min(config.edit_strip_images, len(ed.idx))):
        per_alpha = {float(al): edited[s * k + j] for j, al in enumerate(config.edit_alphas)}
        per_alpha[0.0] = ed.recon[s]
        fname = f"edit_{safe_name(a)}_{s:02d}.png"
        save_png(image_row([ctx.images[ed.idx[s]]] + [per_alpha[al] for al in strip_alphas]), su.out_dir / fname)
        ctx.artifacts.append(("edit_strip", su.rel(fname), {
            "attribute": a, "image_id": ctx.ids[ed.idx[s]], "alphas": strip_alphas,
            "alpha_unit": config.alpha_unit, "alphas_w": [al * scale for al in strip_alphas],
            "layout": "real | edits at alphas (0 = the unedited reconstruction)"}))


def _edit_summary(ed: _Edits, common: dict[str, Any]) -> list[MetricRow]:
    rows = []
    if ed.success:
        used = sorted(ed.success)
        arrays = None
        if ed.ids:  # per image and attribute: eligible and successful edits (a bootstrap recomputes the rate)
            arrays = {key: (list(ed.ids), torch.stack([ed.counts[a][j] for a in used], 1).numpy().astype(np.int16))
                      for j, key in enumerate(("eligible", "success"))}
        rows.append(MetricRow("edit_success_mean", sum(ed.success.values()) / len(ed.success), detail={
            **common, "attributes": used,
            "start_state": "exact labels" if ed.exact_labels else "judge"}, arrays=arrays))
    else:
        rows.append(MetricRow.unavailable("edit_success_mean", "no edit success rate was defined"))
    kept = [v for v in ed.preservation.values() if not math.isnan(v)]
    if kept:
        rows.append(MetricRow("edit_preservation", sum(kept) / len(kept), detail={
            **common, "per_attribute": ed.preservation,
            "definition": "fraction of (edit, non-target attribute) pairs whose judge prediction "
                          "equals that on the unedited reconstruction; mean over edited attributes"}))
    else:
        rows.append(MetricRow.unavailable("edit_preservation", "no non-target attribute to compare"))
    if ed.dpips:
        rows.append(MetricRow("edit_dpips", float(torch.cat(list(ed.dpips.values())).mean()), detail={
            **common, "per_attribute": {a: float(d.mean()) for a, d in ed.dpips.items()},
            "definition": "dpips(edited image, unedited reconstruction), mean over all edits"}))
    else:
        rows.append(MetricRow.unavailable("edit_dpips", "no edit could be judged"))
    return rows


# --------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------

def evaluate_semantics(ctx: MetricContext) -> SemanticResult:
    """Attribute AP, interpolation and manipulation of the context's codes (the three registered
    stages, in order) -> rows, curves and artifacts."""
    if ctx.codes is None or ctx.codes.ndim != 3 or ctx.codes.shape[0] != ctx.n or len(ctx.ids) != ctx.n:
        raise ValueError("the context needs codes [N, L, D], images [N, 3, H, W] and N ids")
    rows = attribute_ap(ctx) + interpolation(ctx) + manipulation(ctx)
    return SemanticResult(rows, ctx.curves, ctx.artifacts)


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
