"""The paper's claims as verdicts: a difference with a 95 % bootstrap interval, decided by the interval.

Decision rule (``decide``), for a claim "A's metric is <direction> than B's" with effect = A − B (or a
log-ratio, whose sign reads the same way):

- "holds"          the whole interval lies on the claimed side of 0,
- "does not hold"  the whole interval lies on the other side,
- "inconclusive"   the interval contains 0 (or is undefined, or excludes the estimate itself: the
                   resamples are then biased -- see ``Interval.excludes_estimate``).

Interval (``bootstrap_effect``): a two-level (hierarchical) percentile bootstrap. Each replicate draws
the seeds of the whole run with replacement, then, inside each drawn seed, the images with
replacement; the effect is computed on each drawn seed's resampled images (A and B resampled with the
same indices: the comparison is paired, image by image) and averaged over the drawn seeds. When every
seed ran on the same images (``SeedData.image_ids`` equal), one image resample is shared by all seeds
of a replicate: the images are the units and the seeds repeated measurements of them (independent
resamples of the same images would shrink the interval by up to sqrt(seeds) -- e.g. for deterministic
methods whose seeds give identical runs). The
estimate is the mean over seeds of the effect on all images. Resampling seeds first carries the
run-to-run variance (the methods' own randomness, a different subset) into the interval; with one seed
it reduces to the ordinary paired bootstrap over images. With 3 seeds the seed level is coarse (10
distinct draws), which widens rather than narrows the interval -- a conservative choice. Set-level
metrics (AP, Fréchet distances, edit success rates) are recomputed on every resample from their
per-image ingredients, never averaged from per-image values that do not exist.

The claims (``PAPER_CLAIMS``) are declarative: which metric, which two method configurations, which
direction, which effect. ``judge`` applies one to data assembled by the caller (from the store).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

__all__ = ["SeedData", "Bracketed", "Interval", "bootstrap_effect", "decide", "VERDICTS",
           "mean_difference", "log10_ratio_of_means", "rate_difference", "ap_difference",
           "frechet_difference", "log10_speedup", "EFFECTS", "Arm", "Claim", "PAPER_CLAIMS",
           "ClaimVerdict", "judge"]

VERDICTS = ("holds", "does not hold", "inconclusive")
DIRECTIONS = ("lower", "higher")


@dataclass(frozen=True)
class SeedData:
    """One seed's data for one claim. ``per_image``: arrays whose first axis is the image (or, for
    interpolation, the pair) -- all the same length, resampled together; ``fixed``: per-seed values
    that are not per image (milestone seconds and steps), passed through unchanged."""

    per_image: Mapping[str, Any]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    image_ids: Optional[tuple] = None  # which images (e.g. test-split indices), in per_image's order

    def __post_init__(self) -> None:
        arrays = {k: np.asarray(v) for k, v in self.per_image.items()}
        if not arrays:
            raise ValueError("SeedData.per_image is empty")
        lengths = {k: (a.shape[0] if a.ndim else None) for k, a in arrays.items()}
        if None in lengths.values() or len(set(lengths.values())) != 1:
            raise ValueError(f"per-image arrays must share their first axis; lengths: {lengths}")
        if next(iter(lengths.values())) < 1:
            raise ValueError("SeedData has no images")
        if self.image_ids is not None:
            ids = tuple(self.image_ids)
            if len(ids) != next(iter(lengths.values())):
                raise ValueError(f"{len(ids)} image_ids for {next(iter(lengths.values()))} images")
            object.__setattr__(self, "image_ids", ids)
        object.__setattr__(self, "per_image", MappingProxyType(arrays))
        object.__setattr__(self, "fixed", MappingProxyType(dict(self.fixed)))

    @property
    def n(self) -> int:
        return next(iter(self.per_image.values())).shape[0]

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {k: a[idx] for k, a in self.per_image.items()}


@dataclass(frozen=True)
class Bracketed:
    """An effect known only within a bracket: ``value`` its point estimate, ``low``/``high`` the ends
    the measurement allows (a time to quality read off milestones lies between two of them). The
    bootstrap takes its interval's lower end from the replicates' ``low`` and its upper end from their
    ``high``, so the interval covers both the sampling and the bracketing uncertainty."""

    value: float
    low: float
    high: float


Effect = Callable[[Mapping[str, np.ndarray], Mapping[str, Any]], "float | Bracketed"]


def _ends(x: "float | Bracketed") -> tuple[float, float, float]:
    if isinstance(x, Bracketed):
        return float(x.value), float(x.low), float(x.high)
    return float(x), float(x), float(x)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    confidence: float
    n_boot: int
    n_seeds: int
    n_images: tuple[int, ...]  # per seed
    method: str = "hierarchical percentile bootstrap (seeds, then images within each seed; paired)"

    @property
    def excludes_estimate(self) -> bool:
        """The estimate lies outside its own percentile interval: the resamples are biased (a set-level
        metric such as a Fréchet distance on few images: resampling with replacement duplicates images,
        which inflates the distance), so the interval cannot decide the claim."""
        finite = all(math.isfinite(v) for v in (self.estimate, self.low, self.high))
        return finite and not self.low <= self.estimate <= self.high


def _quantiles(values: np.ndarray, qs: tuple[float, float]) -> tuple[float, float]:
    if np.isnan(values).any():
        return math.nan, math.nan
    # Linear interpolation between order statistics is undefined next to an infinity (a "not
    # reached" time): fall back to the order statistics themselves there.
    method = "linear" if np.isfinite(values).all() else "inverted_cdf"
    lo, hi = np.quantile(values, qs, method=method)
    return float(lo), float(hi)


def bootstrap_effect(data: Sequence[SeedData], effect: Effect, *, n_boot: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> Interval:
    """Estimate and ``confidence`` interval of ``effect`` (see the module docstring)."""
    if not data:
        raise ValueError("no seeds")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    data = list(data)
    estimate = float(np.mean([_ends(effect(d.per_image, d.fixed))[0] for d in data]))
    rng = np.random.default_rng(seed)
    n_seeds = len(data)
    # Seeds that ran on the very same images (same ids, same order) are repeated measurements of one
    # set of units: they share one image resample per replicate. Resampling them independently would
    # average independent draws of the same images and shrink the interval by up to sqrt(seeds).
    shared = n_seeds > 1 and data[0].image_ids is not None and \
        all(d.image_ids == data[0].image_ids for d in data)
    reps_low, reps_high = np.empty(n_boot), np.empty(n_boot)
    for b in range(n_boot):
        drawn = rng.integers(n_seeds, size=n_seeds) if n_seeds > 1 else (0,)
        common = rng.integers(data[0].n, size=data[0].n) if shared else None
        lows, highs = [], []
        for s in drawn:
            d = data[int(s)]
            idx = common if shared else rng.integers(d.n, size=d.n)
            _, lo, hi = _ends(effect(d.take(idx), d.fixed))
            lows.append(lo)
            highs.append(hi)
        reps_low[b], reps_high[b] = np.mean(lows), np.mean(highs)
    alpha = 1 - confidence
    # For a plain effect both arrays are the same replicates; for a Bracketed one the interval's ends
    # come from the replicates' own ends.
    low = _quantiles(reps_low, (alpha / 2, 1 - alpha / 2))[0]
    high = _quantiles(reps_high, (alpha / 2, 1 - alpha / 2))[1]
    method = ("hierarchical percentile bootstrap (seeds, then one image resample shared by all seeds: "
              "the seeds ran on the same images; paired)") if shared else \
        ("hierarchical percentile bootstrap (seeds, then images within each seed; paired)"
         if n_seeds > 1 else "percentile bootstrap over images (paired)")
    return Interval(estimate=estimate, low=low, high=high, confidence=confidence, n_boot=n_boot,
                    n_seeds=n_seeds, n_images=tuple(d.n for d in data), method=method)


def decide(interval: Interval, direction: str) -> str:
    """"holds" / "does not hold" / "inconclusive" for the claim that the effect (A − B) is
    ``direction`` ("lower": < 0, "higher": > 0)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    low, high = interval.low, interval.high
    if math.isnan(low) or math.isnan(high) or interval.excludes_estimate:
        return "inconclusive"
    below, above = high < 0, low > 0
    if direction == "lower":
        return "holds" if below else "does not hold" if above else "inconclusive"
    return "holds" if above else "does not hold" if below else "inconclusive"


# ------------------------------------------------------------------------------------------------
# Effects. Each takes (per_image sample, fixed) and returns a float; keys are documented per effect.
# ------------------------------------------------------------------------------------------------

def _finite_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


def mean_difference(s: Mapping[str, np.ndarray], fixed: Mapping[str, Any] = {}) -> float:
    """keys a [N], b [N]: mean(a − b) over images where both are finite (failed images dropped)."""
    a, b = _finite_pairs(s["a"], s["b"])
    return float((a - b).mean()) if a.size else math.nan


def log10_ratio_of_means(s: Mapping[str, np.ndarray], fixed: Mapping[str, Any] = {}) -> float:
    """keys a [N], b [N] (positive, e.g. seconds per image): log10(mean a / mean b)."""
    a, b = _finite_pairs(s["a"], s["b"])
    if not a.size:
        return math.nan
    ma, mb = a.mean(), b.mean()
    if ma <= 0 or mb <= 0:
        raise ValueError(f"log ratio of non-positive means: {ma}, {mb}")
    return float(math.log10(ma / mb))


def _success_rate(success: np.ndarray, eligible: np.ndarray) -> float:
    """[N] counts: the pooled rate; [N, A]: the mean over attributes of each one's rate, attributes with
    no eligible edit left out (``edit_success_mean``)."""
    success, eligible = np.asarray(success, dtype=np.float64), np.asarray(eligible, dtype=np.float64)
    if success.ndim == 1:
        total = eligible.sum()
        return float(success.sum() / total) if total else math.nan
    totals = eligible.sum(0)
    ok = totals > 0
    return float((success.sum(0)[ok] / totals[ok]).mean()) if ok.any() else math.nan


def rate_difference(s: Mapping[str, np.ndarray], fixed: Mapping[str, Any] = {}) -> float:
    """keys success_a, eligible_a, success_b, eligible_b: counts per image [N] (pooled rate) or per image
    and attribute [N, A] (mean over attributes of each one's rate, as edit_success_mean): rate of a −
    rate of b."""
    return _success_rate(s["success_a"], s["eligible_a"]) - _success_rate(s["success_b"], s["eligible_b"])


def ap_difference(s: Mapping[str, np.ndarray], fixed: Mapping[str, Any] = {}) -> float:
    """keys scores_a, scores_b [N, A] (signed boundary distances), labels [N, A]: mean AP over
    attributes of a minus that of b (ap_mean, paper Fig. 3); attributes with one class in the
    sample are left out of the mean."""
    from bench.metrics.attributes import mean_ap  # the AP of the stored ap_<attr> rows

    return mean_ap(s["scores_a"], s["labels"]) - mean_ap(s["scores_b"], s["labels"])


def _frechet_to(x: np.ndarray, ref: tuple[np.ndarray, np.ndarray]) -> float:
    """FD of the rows of ``x`` [M, K] to the reference statistics (mu, cov): the stored tables' routine."""
    from bench.metrics.frechet import feature_stats, frechet_distance

    return frechet_distance(feature_stats(x), ref)


def frechet_difference(s: Mapping[str, np.ndarray], fixed: Mapping[str, Any] = {}) -> float:
    """keys a, b [N, K] (embeddings of A's and B's reconstructions) or [N, S, K] (S decoded images per
    unit, e.g. the interpolations of one pair), real [N, K] (the real images' embeddings, resampled with
    them) -- or, when the units are not the real images (pairs), ``fixed["real"]``, not resampled:
    FD(a, real) − FD(b, real)."""
    from bench.metrics.frechet import feature_stats

    ref = feature_stats(np.asarray(s["real"] if "real" in s else fixed["real"], dtype=np.float64))
    a, b = (np.asarray(s[k]) for k in ("a", "b"))
    return _frechet_to(a.reshape(-1, a.shape[-1]), ref) - _frechet_to(b.reshape(-1, b.shape[-1]), ref)


def _log10(x: Optional[float]) -> float:
    if x is None or math.isnan(x):
        return math.nan
    if x == 0:
        return -math.inf
    return math.inf if math.isinf(x) else math.log10(x)


def log10_speedup(s: Mapping[str, np.ndarray], fixed: Mapping[str, Any]) -> Bracketed:
    """Time-to-quality speed-up of a over b, log10(t_b / t_a), on the mean curves of the sample.

    keys a [N, Ka], b [N, Kb]: per-image metric at each milestone; fixed: steps_a, seconds_a [Ka],
    steps_b, seconds_b [Kb] (seconds per image), direction ("lower"/"higher", the metric's), target:
    "a" / "b" (that method's value at its last milestone, recomputed on the sample) or a number.
    A method that does not reach the target within its budget has time +inf (so +inf / -inf here,
    never a made-up number; nan when neither reaches). The bracket is ``bench.anytime.speedup``'s
    range: each time lies between the milestone before the first one meeting the target and that one,
    and a side that did not reach it is only bounded by its budget.
    """
    from bench.anytime import mean_curve, speedup, time_to_target

    ca = mean_curve(fixed["steps_a"], fixed["seconds_a"], s["a"])
    cb = mean_curve(fixed["steps_b"], fixed["seconds_b"], s["b"])
    target = fixed["target"]
    target = ca[-1].value if target == "a" else cb[-1].value if target == "b" else float(target)
    if not math.isfinite(target):
        return Bracketed(math.nan, math.nan, math.nan)
    direction = fixed.get("direction", "lower")
    sp = speedup(time_to_target(ca, target, direction), time_to_target(cb, target, direction))
    value = {"ratio": sp.value, "at least": math.inf, "at most": 0.0, "none": None}[sp.kind]
    return Bracketed(_log10(value), _log10(sp.low), _log10(sp.high))


EFFECTS: Mapping[str, Effect] = MappingProxyType({
    "mean_difference": mean_difference,
    "log10_ratio_of_means": log10_ratio_of_means,
    "rate_difference": rate_difference,
    "ap_difference": ap_difference,
    "frechet_difference": frechet_difference,
    "log10_speedup": log10_speedup,
})


# ------------------------------------------------------------------------------------------------
# The paper's claims
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Arm:
    """One side of a comparison: a method, hyperparameter overrides, and its protocol --
    "own" (the budget of its own paper: idinvert 100 steps, image2stylegan its long budget) or
    "matched" (100 steps, the matched-budget row)."""

    method: str
    params: tuple[tuple[str, Any], ...] = ()
    protocol: str = "own"

    def __post_init__(self) -> None:
        if self.protocol not in ("own", "matched"):
            raise ValueError(f"protocol must be 'own' or 'matched', got {self.protocol!r}")

    @property
    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.params)
        return self.method + (f"[{extra}]" if extra else "") + ("" if self.protocol == "own" else " @100")


@dataclass(frozen=True)
class Claim:
    """"A's ``metric`` is ``direction`` than B's" (for log-ratio effects: the log-ratio A/B, or for
    ``log10_speedup`` the speed-up of A over B, is ``direction`` than 0)."""

    key: str
    source: str      # where in the paper (PAPER.md's wording)
    statement: str   # the claim in our words
    metric: str      # registered metric name (or the per-image ingredient the effect needs)
    a: Arm
    b: Arm
    direction: str
    effect: str      # key of EFFECTS
    paper: str = ""  # the paper's own number, where it gives one
    note: str = ""

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"claim {self.key}: direction must be one of {DIRECTIONS}")
        if self.effect not in EFFECTS:
            raise ValueError(f"claim {self.key}: unknown effect {self.effect!r} (known: {list(EFFECTS)})")


IDINVERT, I2S = Arm("idinvert"), Arm("image2stylegan")
ENC_DOMAIN, ENC_CONV = Arm("idinvert-encoder"), Arm("encoder")

PAPER_CLAIMS: tuple[Claim, ...] = (
    Claim("t1-fid-idinvert-vs-i2s", "Table 1",
          "in-domain inversion has a better (lower) FID than Image2StyleGAN at its own budget",
          "fid_domain", IDINVERT, I2S, "lower", "frechet_difference"),
    Claim("t1-fid-idinvert-vs-encoder", "Table 1",
          "in-domain inversion has a lower FID than its domain-guided encoder start",
          "fid_domain", IDINVERT, ENC_DOMAIN, "lower", "frechet_difference"),
    Claim("t1-fid-encoders", "Table 1",
          "the domain-guided encoder has a lower FID than the conventional encoder",
          "fid_domain", ENC_DOMAIN, ENC_CONV, "lower", "frechet_difference"),
    Claim("t1-mse-encoders", "Table 1",
          "the domain-guided encoder reconstructs better (lower MSE) than the conventional encoder",
          "mse", ENC_DOMAIN, ENC_CONV, "lower", "mean_difference"),
    Claim("t1-mse-i2s-best", "Table 1",
          "in-domain inversion's MSE is close to the best, not the best: Image2StyleGAN at its own "
          "budget has the lower MSE", "mse", I2S, IDINVERT, "lower", "mean_difference",
          note="'close to' has no number in the paper; only the order is judged"),
    Claim("t1-mse-refines-encoder", "Table 1",
          "the domain-regularised optimisation lowers the MSE of the encoder's start",
          "mse", IDINVERT, ENC_DOMAIN, "lower", "mean_difference"),
    Claim("t1-encoder-speed", "Table 1",
          "encoders are about 1000x faster than optimisation (log10 time ratio < 0)",
          "seconds_per_image", ENC_DOMAIN, IDINVERT, "lower", "log10_ratio_of_means",
          paper="~1000x", note="per-image seconds are the batch's time divided by its size"),
    Claim("t1-speedup-to-quality", "Sec. 4 / Table 1 time column",
          "in-domain inversion reaches its own 100-step MSE sooner than Image2StyleGAN does "
          "(speed-up of A over B > 1: log10 > 0)",
          "mse", IDINVERT, I2S, "higher", "log10_speedup",
          paper="~36x (8 s vs ~290 s per image)",
          note="target = idinvert's mean MSE at its budget, recomputed on each resample; first "
               "milestone reaching it, no interpolation: each time lies between that milestone and the "
               "one before, and the interval spans that bracket too; not reached = infinite time"),
    Claim("fig3-ap", "Fig. 3",
          "in-domain codes are more semantically meaningful: higher mean AP of boundary distances "
          "than Image2StyleGAN's codes", "ap_mean", IDINVERT, I2S, "higher", "ap_difference"),
    Claim("t2-interpolation", "Table 2",
          "in-domain codes interpolate better: lower Fréchet distance of decoded interpolations",
          "interp_fid_domain", IDINVERT, I2S, "lower", "frechet_difference",
          note="the resampling unit is the interpolated pair"),
    Claim("fig6-manipulation", "Figs. 6-7",
          "in-domain codes are edited more successfully than Image2StyleGAN's",
          "edit_success_mean", IDINVERT, I2S, "higher", "rate_difference"),
    Claim("fig9-lambda-dom-reconstruction", "Fig. 9",
          "a larger lambda_dom reconstructs worse: lambda_dom = 2 has a higher MSE than 0",
          "mse", Arm("idinvert", (("lambda_dom", 2.0),)), Arm("idinvert", (("lambda_dom", 0.0),)),
          "higher", "mean_difference"),
    Claim("fig9-lambda-dom-manipulation", "Fig. 9",
          "a larger lambda_dom edits better: lambda_dom = 2 has a higher edit success than 0",
          "edit_success_mean", Arm("idinvert", (("lambda_dom", 2.0),)),
          Arm("idinvert", (("lambda_dom", 0.0),)), "higher", "rate_difference"),
    Claim("premise-domain-term", "Sec. 3 (the method's premise)",
          "in-domain inversion's codes are closer to where E maps G's images: lower ||w - E(G(w))||^2 "
          "than Image2StyleGAN's", "code_domain_term", IDINVERT, I2S, "lower", "mean_difference",
          note="E is also idinvert's regulariser, so this is expected by construction; compare LEC"),
    Claim("premise-lec", "e4e's LEC (later work), on the paper's premise",
          "in-domain codes are edited more consistently: lower LEC with E the domain-guided encoder",
          "code_lec", IDINVERT, I2S, "lower", "mean_difference"),
)


@dataclass(frozen=True)
class ClaimVerdict:
    claim: Claim
    interval: Interval
    verdict: str

    def row(self) -> dict[str, Any]:
        """A flat, self-describing row for the store / ``bench claims``."""
        c, i = self.claim, self.interval
        return {"claim": c.key, "source": c.source, "statement": c.statement, "metric": c.metric,
                "a": c.a.label, "b": c.b.label, "direction": c.direction, "effect": c.effect,
                "estimate": i.estimate, "low": i.low, "high": i.high, "confidence": i.confidence,
                "n_boot": i.n_boot, "n_seeds": i.n_seeds, "n_images": list(i.n_images),
                "interval_method": i.method, "verdict": self.verdict, "paper": c.paper, "note": c.note}


def judge(claim: Claim, data: Sequence[SeedData], *, n_boot: int = 2000, confidence: float = 0.95,
          seed: int = 0) -> ClaimVerdict:
    """The verdict of ``claim`` on ``data`` (one :class:`SeedData` per seed, keys as its effect asks)."""
    interval = bootstrap_effect(data, EFFECTS[claim.effect], n_boot=n_boot, confidence=confidence,
                                seed=seed)
    return ClaimVerdict(claim=claim, interval=interval, verdict=decide(interval, claim.direction))


def claim_by_key(key: str) -> Claim:
    for c in PAPER_CLAIMS:
        if c.key == key:
            return c
    import difflib

    close = difflib.get_close_matches(key, [c.key for c in PAPER_CLAIMS], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown claim {key!r}{hint}")
