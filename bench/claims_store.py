"""The paper's claims judged on a results store: ``bench claims`` and the report's claims section.

For each claim of ``bench.claims.PAPER_CLAIMS`` this finds, per seed, the two runs it compares (among
the complete runs of the arm's method whose params include the arm's, the one on the most images, then
the latest: ``bench run --budget full`` beside the default run is preferred, since it differs only in
how many images a long budget covers; ``Choice`` lets the user pick the budget or name runs; the
"matched" protocol reads the run's milestone at step 100), pairs them on the images both inverted, and
says which run each arm used. It hands one
``SeedData`` per seed to ``bench.claims.judge`` (a 95 % bootstrap interval over images, and over seeds
when runs of several seeds exist; the verdict is the interval's, never set by hand).

What the store gives: per-image metrics (``mse``, ``code_domain_term``), ``code_lec`` (its per-image
values are in its detail), the seconds per image, the time-to-quality speed-up (from the milestone rows),
and the per-unit ingredients of set-level metrics (``Store.ingredients``): the judge embeddings behind
``fid_domain`` (per image) and ``interp_fid_domain`` (per interpolated pair), the boundary distances and
labels behind ``ap_mean``, and the eligible / successful edits per image and attribute behind
``edit_success_mean`` -- so that these set-level metrics are recomputed on every bootstrap resample.
A run stored before ingredients existed, or a claim whose data are missing, is listed as "not judged"
with the reason -- never given a verdict. Reference rows (g-samples) are never an arm.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from bench import claims as CL
from bench.defaults import MATCHED_STEP
from bench.metrics import registry
from bench.store import Store

NOT_JUDGED = "not judged"
# Hyperparameters that only choose how many images a run covers (`--budget full` sets them to 0): runs
# that differ only in these are the same settings, and the one on the most images is preferred.
BUDGET_FIELDS = ("max_images",)
BUDGETS = ("most", "own", "full")


@dataclass(frozen=True)
class Choice:
    """Which run an arm uses: ``budget`` "most" (the most images, then the latest), "own" (each method's
    default image budget: the default run) or "full" (every image: ``--budget full``); ``run_ids`` names
    runs that take precedence for their method (and seed)."""
    budget: str = "most"
    run_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {BUDGETS}, got {self.budget!r}")
# A Fréchet distance fits a K-dimensional covariance to each set: with fewer than 2K vectors in a set
# the estimate is mostly bias (rank-deficient covariances; the real-vs-real floor of 4 images is ~270
# in the 16-dimensional judge features, against ~8 at 128), and resampling those few units says nothing
# about it, so such a claim is not judged (the default run's 128 images give 8K).
MIN_FRECHET_VECTORS_PER_DIM = 2


@dataclass
class ClaimResult:
    claim: CL.Claim
    verdict: str                      # one of CL.VERDICTS, or NOT_JUDGED
    a_value: float | None = None      # A's number and B's, on the paired images (mean over seeds)
    b_value: float | None = None
    interval: CL.Interval | None = None
    reason: str | None = None         # why not judged
    runs: tuple[tuple[str, int, str, int], ...] = ()  # (arm "a"/"b", seed, run id, images) per arm and seed
    controls: dict[str, float] | None = None  # the same metric for the controls and the ceiling (issue 22)

    def runs_text(self) -> str:
        """``A: idinvert-…(128 images); B: image2stylegan-…(128 images)``, a seed's runs after the other's."""
        parts = {}
        for arm, _, run_id, n in self.runs:
            parts.setdefault(arm, []).append(f"{run_id} ({n} images)")
        return "; ".join(f"{arm.upper()}: {', '.join(v)}" for arm, v in parts.items()) or "-"

    def row(self) -> dict[str, Any]:
        c = self.claim
        base = {"claim": c.key, "source": c.source, "statement": c.statement, "metric": c.metric,
                "a": c.a.label, "b": c.b.label, "direction": c.direction, "effect": c.effect,
                "a_value": self.a_value, "b_value": self.b_value, "verdict": self.verdict,
                "paper": c.paper, "note": c.note, "controls": self.controls,
                "runs": [{"arm": arm, "seed": seed, "run_id": rid, "n_images": n} for arm, seed, rid, n in self.runs]}
        if self.interval is None:
            return {**base, "estimate": None, "low": None, "high": None, "n_seeds": 0, "n_images": [],
                    "interval_method": None, "reason": self.reason}
        i = self.interval
        return {**base, "estimate": i.estimate, "low": i.low, "high": i.high, "confidence": i.confidence,
                "n_boot": i.n_boot, "n_seeds": i.n_seeds, "n_images": list(i.n_images),
                "interval_method": i.method, "reason": None}


def _matches(run: dict[str, Any], arm: CL.Arm) -> bool:
    if run["method"] != arm.method:
        return False
    for k, v in arm.params:
        stored = run["params"].get(k)
        if stored is None:
            from bench.tables import method_defaults

            stored = (method_defaults(arm.method) or {}).get(k)
        if json.dumps(stored) != json.dumps(v) and not (isinstance(stored, (int, float)) and isinstance(v, (int, float))
                                                        and float(stored) == float(v)):
            return False
    return True


def _budget_ok(run: dict[str, Any], budget: str) -> bool:
    """Whether ``run`` ran at the chosen image budget (a method without a budget field runs at both)."""
    if budget == "most":
        return True
    from bench.tables import method_defaults

    defaults = method_defaults(run["method"]) or {}
    for k in BUDGET_FIELDS:
        if k in run["params"] or k in defaults:
            value = run["params"].get(k, defaults.get(k))
            if (budget == "full") != (value == 0):
                return False
    return True


def _arm_runs(runs: Sequence[dict[str, Any]], arm: CL.Arm, choice: Choice = Choice()) -> dict[int, dict[str, Any]]:
    """seed -> the run of the arm: one the user named, else among its runs of the chosen budget at the
    arm's settings (a run with no arm params must use the defaults, its image budget aside) the one on
    the most images, then the latest."""
    from bench.tables import _is_default, is_reference, method_defaults

    candidates = [r for r in runs if not is_reference(r) and _matches(r, arm) and _budget_ok(r, choice.budget)]
    if not arm.params:  # the method's main configuration: its default params where such runs exist
        defaults = method_defaults(arm.method)
        default_runs = [r for r in candidates if defaults is not None and _is_default(_settings(r), defaults)]
        candidates = default_runs or candidates
    named = [r for r in runs if r["run_id"] in choice.run_ids and not is_reference(r) and _matches(r, arm)]
    out: dict[int, dict[str, Any]] = {}
    for r in sorted(candidates, key=lambda r: (r["n_images"], r.get("finished") or 0)) + named:
        out[r["seed"]] = r  # the last in this order wins
    return out


def _settings(run: dict[str, Any]) -> dict[str, Any]:
    """A run's params without the fields that only set its image budget."""
    return {k: v for k, v in run["params"].items() if k not in BUDGET_FIELDS}


class _RunData:
    """What a claim reads of one run, loaded once."""

    def __init__(self, store: Store, run: dict[str, Any]):
        self.run = run
        self.images = {r["image_id"]: r for r in store.images(run["run_id"])}
        self.metrics = {m["name"]: m for m in store.metrics(run["run_id"])}
        self._store = store
        self._milestones: list[dict[str, Any]] | None = None
        self._ingredients: dict[str, dict[str, tuple[list[str], np.ndarray]]] = {}

    @property
    def milestones(self) -> list[dict[str, Any]]:
        if self._milestones is None:
            self._milestones = self._store.milestones(self.run["run_id"])
        return self._milestones

    def per_image(self, metric: str, protocol: str) -> dict[str, float] | None:
        """image id -> the metric (nan where failed), at the run's own budget or its matched-budget
        milestone; where the per-image values live is the registry entry's ``bootstrap``."""
        entry = registry.find(metric)
        source = entry.bootstrap if entry is not None else None
        if protocol == "matched":
            rows = [m for m in self.milestones if m["step"] == MATCHED_STEP]
            if not rows:
                return None
            if source == "seconds":
                return {m["image_id"]: m["seconds"] if m["seconds"] is not None else math.nan for m in rows}
            return {m["image_id"]: _num(m["metrics"].get(metric)) if m["status"] == "ok" else math.nan
                    for m in rows}
        if source == "seconds":
            return {i: _num(r["seconds"]) for i, r in self.images.items()}
        if source == "per_image":
            return {i: _num(r["metrics"].get(metric)) if r["status"] == "ok" else math.nan
                    for i, r in self.images.items()}
        row = self.metrics.get(metric)
        per = (row or {}).get("detail", {}).get("per_image") if row and row["status"] == "ok" else None
        if isinstance(per, dict):
            return {i: (_num(per.get(i)) if i in per else math.nan) for i in self.images}
        return None

    def ingredients(self, metric: str) -> dict[str, tuple[list[str], np.ndarray]]:
        if metric not in self._ingredients:
            row = self.metrics.get(metric)
            ok = row is not None and row["status"] == "ok"
            self._ingredients[metric] = self._store.ingredients(self.run["run_id"], metric) if ok else {}
        return self._ingredients[metric]

    def attributes(self, metric: str) -> list[str]:
        return list(((self.metrics.get(metric) or {}).get("detail") or {}).get("attributes") or [])

    def milestone_matrix(self, metric: str, ids: Sequence[str]) -> tuple[list[int], list[float], np.ndarray] | None:
        rows = self.milestones
        if not rows:
            return None
        steps = sorted({m["step"] for m in rows})
        col = {s: k for k, s in enumerate(steps)}
        pos = {i: k for k, i in enumerate(ids)}
        values = np.full((len(ids), len(steps)), np.nan)
        secs: dict[int, list[float]] = {s: [] for s in steps}
        for m in rows:
            if m["seconds"] is not None:
                secs[m["step"]].append(m["seconds"])
            if m["image_id"] in pos and m["status"] == "ok":
                values[pos[m["image_id"]], col[m["step"]]] = _num(m["metrics"].get(metric))
        seconds = np.maximum.accumulate([float(np.mean(secs[s])) for s in steps]).tolist()
        return steps, seconds, values


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and v is not None else math.nan


def _seed_data(claim: CL.Claim, a: _RunData, b: _RunData) -> tuple[CL.SeedData | None, str | None, tuple]:
    """One seed's SeedData for ``claim``; (None, reason, ()) when the store cannot provide it."""
    ids = [i for i in a.images if i in b.images]
    if len(ids) < 2:
        return None, f"{claim.a.label} and {claim.b.label} share fewer than 2 images", ()
    if claim.effect in ("mean_difference", "log10_ratio_of_means"):
        va, vb = a.per_image(claim.metric, claim.a.protocol), b.per_image(claim.metric, claim.b.protocol)
        if va is None or vb is None:
            which = claim.a.label if va is None else claim.b.label
            return None, f"no per-image {claim.metric} stored for {which}", ()
        xa = np.array([va.get(i, math.nan) for i in ids])
        xb = np.array([vb.get(i, math.nan) for i in ids])
        ok = np.isfinite(xa) & np.isfinite(xb)
        if ok.sum() < 2:
            return None, f"fewer than 2 images with {claim.metric} for both", ()
        return CL.SeedData({"a": xa, "b": xb}, image_ids=tuple(ids)), None, (float(xa[ok].mean()), float(xb[ok].mean()))
    if claim.effect == "log10_speedup":
        ma, mb = a.milestone_matrix(claim.metric, ids), b.milestone_matrix(claim.metric, ids)
        if ma is None or mb is None:
            return None, "no milestone rows stored (a run made before anytime evaluation)", ()
        from bench.anytime import mean_curve, time_to_target

        fixed = {"steps_a": ma[0], "seconds_a": ma[1], "steps_b": mb[0], "seconds_b": mb[1],
                 "direction": "lower", "target": "a"}
        ca = mean_curve(ma[0], ma[1], ma[2])
        ta = time_to_target(ca, ca[-1].value, "lower")
        tb = time_to_target(mean_curve(mb[0], mb[1], mb[2]), ca[-1].value, "lower")
        nums = (ta.seconds_per_image if ta.reached else math.inf, tb.seconds_per_image if tb.reached else math.inf)
        return CL.SeedData({"a": ma[2], "b": mb[2]}, fixed, image_ids=tuple(ids)), None, nums
    if claim.a.protocol != "own" or claim.b.protocol != "own":
        return None, f"{claim.metric}'s ingredients are kept at a run's own budget only, not at step 100", ()
    ga, gb = a.ingredients(claim.metric), b.ingredients(claim.metric)
    if not ga or not gb:
        which = claim.a.label if not ga else claim.b.label
        return None, (f"no per-image ingredients of {claim.metric} stored for {which} (a run stored before "
                      f"they were kept, or the metric was unavailable): rerun with --fresh"), ()
    return _ingredient_seed_data(claim, a, b, ga, gb)


def _aligned(pairs: dict[str, tuple[list[str], np.ndarray]], key: str, ids: Sequence[str]) -> np.ndarray:
    row_ids, array = pairs[key]
    pos = {i: k for k, i in enumerate(row_ids)}
    return array[[pos[i] for i in ids]]


def _common(*id_lists: Sequence[str]) -> list[str]:
    first, rest = id_lists[0], [set(x) for x in id_lists[1:]]
    return [i for i in first if all(i in r for r in rest)]


def _columns(a: _RunData, b: _RunData, metric: str) -> tuple[list[str], list[int], list[int]]:
    """Attributes both runs kept for ``metric``, and their column positions in each run's arrays."""
    att_a, att_b = a.attributes(metric), b.attributes(metric)
    both = [x for x in att_a if x in att_b]
    return both, [att_a.index(x) for x in both], [att_b.index(x) for x in both]


def _ingredient_seed_data(claim: CL.Claim, a: _RunData, b: _RunData, ga: dict, gb: dict
                          ) -> tuple[CL.SeedData | None, str | None, tuple]:
    """SeedData of a set-level claim from both runs' stored ingredients, paired on their common units:
    (data, None, both arms' point values) or (None, why not, ())."""
    assemble = {"frechet_difference": _frechet_seed_data, "ap_difference": _ap_seed_data,
                "rate_difference": _rate_seed_data}.get(claim.effect)
    if assemble is None:
        return None, f"no way to assemble the {claim.effect} effect from the store", ()
    return assemble(claim, a, b, ga, gb)


def _frechet_seed_data(claim: CL.Claim, a: _RunData, b: _RunData, ga: dict, gb: dict
                       ) -> tuple[CL.SeedData | None, str | None, tuple]:
    """Both arms' fake features (and the real set's) on their common units; per-image units are paired
    with the real image, interpolation units (pairs of images) share one fixed real set."""
    if "fake" not in ga or "fake" not in gb or "real" not in ga:
        return None, f"{claim.metric}'s stored ingredients lack the features", ()
    ids = _common(ga["fake"][0], gb["fake"][0])
    if len(ids) < 2:
        return None, f"{claim.a.label} and {claim.b.label} share fewer than 2 units of {claim.metric}", ()
    xa, xb = _aligned(ga, "fake", ids), _aligned(gb, "fake", ids)
    per_unit = xa.ndim == 3  # interpolations: the units are pairs, the real set is fixed
    if per_unit:
        fixed = {"real": ga["real"][1]}
        sample = {"a": xa, "b": xb}
    else:
        ids = _common(ids, ga["real"][0])
        xa, xb = _aligned(ga, "fake", ids), _aligned(gb, "fake", ids)
        fixed, sample = {}, {"a": xa, "b": xb, "real": _aligned(ga, "real", ids)}
    if len(ids) < 2:
        return None, "fewer than 2 paired images", ()
    k = xa.shape[-1]
    real = sample.get("real", fixed.get("real"))
    fake_n = int(np.prod(xa.shape[:-1]))
    if min(len(real), fake_n) < MIN_FRECHET_VECTORS_PER_DIM * k:
        return None, (f"{min(len(real), fake_n)} paired vectors for a Fréchet distance in {k} dimensions "
                      f"(at least {MIN_FRECHET_VECTORS_PER_DIM * k} needed to estimate its "
                      f"covariances); run the arms on more images (e.g. --budget full)"), ()
    from bench.metrics.frechet import feature_stats

    ref = feature_stats(np.asarray(real, dtype=np.float64))
    nums = tuple(CL._frechet_to(x.reshape(-1, x.shape[-1]), ref) for x in (xa, xb))
    return CL.SeedData(sample, fixed, image_ids=tuple(ids)), None, nums


def _ap_seed_data(claim: CL.Claim, a: _RunData, b: _RunData, ga: dict, gb: dict
                  ) -> tuple[CL.SeedData | None, str | None, tuple]:
    """Both arms' attribute scores on their common images and attributes, with one set of labels."""
    if not {"scores", "labels"} <= set(ga) or "scores" not in gb:
        return None, f"{claim.metric}'s stored ingredients lack scores or labels", ()
    attrs, ca, cb = _columns(a, b, claim.metric)
    ids = _common(ga["scores"][0], gb["scores"][0], ga["labels"][0])
    if not attrs or len(ids) < 2:
        return None, "no attribute or fewer than 2 images in common", ()
    labels = _aligned(ga, "labels", ids)[:, ca]
    if "labels" in gb and not np.array_equal(_aligned(gb, "labels", _common(ids, gb["labels"][0]))[:, cb],
                                             labels):
        return None, "the two runs' labels of the same images differ (different label sources)", ()
    sample = {"scores_a": _aligned(ga, "scores", ids)[:, ca], "scores_b": _aligned(gb, "scores", ids)[:, cb],
              "labels": labels}
    from bench.metrics.attributes import mean_ap

    nums = (mean_ap(sample["scores_a"], labels), mean_ap(sample["scores_b"], labels))
    return CL.SeedData(sample, image_ids=tuple(ids)), None, nums


def _rate_seed_data(claim: CL.Claim, a: _RunData, b: _RunData, ga: dict, gb: dict
                    ) -> tuple[CL.SeedData | None, str | None, tuple]:
    """Both arms' per-image edit successes and eligible counts on their common images and attributes."""
    if not {"success", "eligible"} <= set(ga) or not {"success", "eligible"} <= set(gb):
        return None, f"{claim.metric}'s stored ingredients lack the edit counts", ()
    attrs, ca, cb = _columns(a, b, claim.metric)
    ids = _common(ga["success"][0], gb["success"][0])
    if not attrs or len(ids) < 2:
        return None, "no attribute or fewer than 2 edited images in common", ()
    sample = {f"{key}_{arm}": _aligned(g, key, ids)[:, cols]
              for arm, g, cols in (("a", ga, ca), ("b", gb, cb)) for key in ("success", "eligible")}
    nums = tuple(CL._success_rate(sample[f"success_{arm}"], sample[f"eligible_{arm}"]) for arm in "ab")
    return CL.SeedData(sample, image_ids=tuple(ids)), None, nums


def judge_store(store: Store, claims: Sequence[CL.Claim] = CL.PAPER_CLAIMS, runs: Sequence[dict] | None = None,
                n_boot: int = 2000, seed: int = 0, choice: Choice = Choice()) -> list[ClaimResult]:
    """Every claim's result on the store's complete runs (or ``runs``: one bundle/dataset), each arm on
    the run ``choice`` picks (default: the most images)."""
    runs = list(runs) if runs is not None else store.runs(status="complete")
    cache: dict[str, _RunData] = {}

    def load(run: dict[str, Any]) -> _RunData:
        if run["run_id"] not in cache:
            cache[run["run_id"]] = _RunData(store, run)
        return cache[run["run_id"]]

    out = []
    for claim in claims:
        ra, rb = _arm_runs(runs, claim.a, choice), _arm_runs(runs, claim.b, choice)
        seeds = sorted(set(ra) & set(rb))
        ctrl = controls(runs, claim.metric, load(ra[min(seeds or ra)])) if ra else None
        if not seeds:
            missing = [arm.label for arm, r in ((claim.a, ra), (claim.b, rb)) if not r]
            reason = ("no complete run of " + " and ".join(missing)) if missing else \
                "the two arms ran with different seeds only"
            if missing and choice != Choice():
                reason += f" at the chosen budget ({choice.budget}) or among the named runs"
            out.append(ClaimResult(claim, NOT_JUDGED, reason=reason, controls=ctrl))
            continue
        used = tuple((arm, s, r[s]["run_id"], r[s]["n_images"]) for s in seeds for arm, r in (("a", ra), ("b", rb)))
        data, nums, reason = [], [], None
        for s in seeds:
            d, why, pair = _seed_data(claim, load(ra[s]), load(rb[s]))
            if d is None:
                reason = why
                break
            data.append(d)
            nums.append(pair)
        if reason is not None:
            out.append(ClaimResult(claim, NOT_JUDGED, reason=reason, runs=used, controls=ctrl))
            continue
        verdict = CL.judge(claim, data, n_boot=n_boot, seed=seed)
        a_val = float(np.mean([p[0] for p in nums]))
        b_val = float(np.mean([p[1] for p in nums]))
        out.append(ClaimResult(claim, verdict.verdict, a_val, b_val, verdict.interval, runs=used,
                               controls=ctrl))
    return out


def controls(runs: Sequence[dict[str, Any]], metric: str, a: "_RunData") -> dict[str, float] | None:
    """The claim's metric for the control runs its registry entry names (``Metric.controls``) beside arm
    A's run (same bundle and seed; the same data, or, for the known-answer control, made for it), and
    the mean held-out ceiling its per-attribute rows carry (AP); None when the metric has no controls."""
    entry = registry.find(metric)
    if entry is None or not entry.controls:
        return None
    run = a.run
    out: dict[str, float] = {}
    for method, label in entry.controls:
        beside = [r for r in runs if r["method"] == method and r["bundle"] == run["bundle"]
                  and r["seed"] == run["seed"] and r.get("status", "complete") == "complete"
                  and run["dataset"] in (r["dataset"], (r.get("env") or {}).get("control_for"))]
        if beside:
            latest = max(beside, key=lambda r: r.get("finished") or 0)
            value = {m["name"]: m for m in a._store.metrics(latest["run_id"])}.get(metric)
            if value is not None and value["status"] == "ok":
                out[label] = float(value["value"])
    # the held-out ceilings (bench.boundary_check) of the family this metric summarises (ap_<attr>)
    ceilings = [m["detail"].get("ceiling") for name, m in a.metrics.items()
                if (e := registry.find(name)) is not None and e.is_template and e.computed_by == metric
                and (m["detail"] or {}).get("ceiling")]
    if ceilings:
        out["ceiling (held-out G codes)"] = float(np.mean(ceilings))
    return out


def _fmt(v: Any) -> str:
    from bench.tables import fmt_number

    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "not reached" if v > 0 else "-inf"
    return fmt_number(v)


def _times(log10: float) -> str:
    """A log10 ratio as a factor: ``0.5`` -> ``3.16x``; an unbounded end (a target not reached) as ∞ or 0."""
    if math.isinf(log10):
        return "∞" if log10 > 0 else "0x"
    return f"{10 ** log10:.3g}x"


def effect_in_words(r: ClaimResult) -> str:
    """What a judged claim's interval says, in one sentence: "idinvert's MSE is 0.024 lower than
    image2stylegan's (0.036 vs 0.060; 95% interval of the difference -0.030 to -0.018; 1 seed, 6 images)"."""
    from bench.tables import metric_label

    c, i = r.claim, r.interval
    if i is None:
        return f"not judged: {r.reason}"
    size = f"{i.n_seeds} seed{'s' if i.n_seeds != 1 else ''}, {'/'.join(map(str, sorted(set(i.n_images))))} images"
    metric = metric_label(c.metric)
    if c.effect == "log10_speedup":
        if math.isinf(i.estimate):  # one of them never reached the target within its budget
            first, never = (c.a.label, c.b.label) if i.estimate > 0 else (c.b.label, c.a.label)
            return (f"{never} does not reach the target within its budget, {first} does (95% interval of "
                    f"the speed-up {_times(i.low)} to {_times(i.high)}; {size})")
        word = "sooner" if i.estimate >= 0 else "later"
        return (f"{c.a.label} reaches the target {_times(abs(i.estimate))} {word} than {c.b.label} "
                f"(95% interval of the speed-up {_times(i.low)} to {_times(i.high)}; {size})")
    if c.effect == "log10_ratio_of_means":
        word = "smaller" if i.estimate < 0 else "larger"
        return (f"{c.a.label}'s {metric} is {_times(abs(i.estimate))} {word} than {c.b.label}'s ({_fmt(r.a_value)} vs "
                f"{_fmt(r.b_value)}; 95% interval of the ratio {_times(i.low)} to {_times(i.high)}; {size})")
    word = "lower" if i.estimate < 0 else "higher"
    biased = ("; the estimate lies outside its own interval: the bootstrap is biased here (resampling "
              "duplicates images, which inflates a set-level metric on few images), so no verdict"
              if i.excludes_estimate else "")
    return (f"{c.a.label}'s {metric} is {_fmt(abs(i.estimate))} {word} than {c.b.label}'s ({_fmt(r.a_value)} vs "
            f"{_fmt(r.b_value)}; 95% interval of the difference {_fmt(i.low)} to {_fmt(i.high)}; {size}{biased})")


def display_rows(results: Sequence[ClaimResult]) -> list[dict[str, str]]:
    rows = []
    for r in results:
        i = r.interval
        effect_kind = {"log10_ratio_of_means": " (log10 A/B)", "log10_speedup": " (log10 speed-up)"}.get(
            r.claim.effect, "")
        rows.append({"key": r.claim.key, "statement": r.claim.statement, "source": r.claim.source,
                     "a": r.claim.a.label, "b": r.claim.b.label, "metric": r.claim.metric + effect_kind,
                     "a_value": _fmt(r.a_value), "b_value": _fmt(r.b_value),
                     "estimate": _fmt(i.estimate) if i else "-",
                     "interval": f"[{_fmt(i.low)}, {_fmt(i.high)}]" if i else (r.reason or "-"),
                     "sizes": (f"{i.n_seeds} seed{'s' if i.n_seeds != 1 else ''}, "
                               f"{'/'.join(map(str, sorted(set(i.n_images))))} images") if i else "-",
                     "verdict": r.verdict, "paper": r.claim.paper, "runs": r.runs_text(),
                     "words": effect_in_words(r),
                     "controls": "; ".join(f"{k} {_fmt(v)}" for k, v in (r.controls or {}).items()) or "-"})
    return rows


NOTES = [
    "verdict by the interval only: holds = the whole 95% interval on the claimed side of 0; does not hold = on "
    "the other side; inconclusive = it contains 0, or it excludes the estimate itself (the bootstrap is then "
    "biased: resampling duplicates images, which inflates a Fréchet distance on few images)",
    "interval: percentile bootstrap over the paired images (hierarchical over seeds when several seeds ran: "
    "`bench run --seeds 0,1,2`); A and B compared on the images both inverted",
    "'@100': the arm's milestone at step 100 (the matched budget); speed-up: time to A's final mean on the "
    "resampled images, 'not reached' = an infinite time",
    "a method run at a long budget on a subset (image2stylegan: its first max_images images by default) is "
    "compared on that subset only -- the n column says how many; `bench run --budget full` compares on all",
    "interpolation claims pair the interpolated pairs both arms drew: arms evaluated on different image counts "
    "draw different pairs and are not judged",
    "runs: the run each arm used; of runs that differ only in their image budget (`--budget full` beside the "
    "default run) the one on the most images is used; `bench claims --budget own|full` or `--run ID` chooses",
    "controls: the same metric for the reference rows beside A's run -- G samples (unrelated codes: chance for "
    "AP; G's own interpolations), G codes (G's true codes on the known-answer set: the AP and edit ceilings) -- "
    "and the AP ceiling of the boundaries on held-out codes of G; a semantic effect is read against that range",
]


def to_markdown(results: Sequence[ClaimResult]) -> str:
    head = ["claim", "A", "B", "metric", "A value", "B value", "effect A-B", "95% interval", "n", "verdict",
            "controls", "runs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in display_rows(results):
        cells = [d["key"], d["a"], d["b"], d["metric"], d["a_value"], d["b_value"], d["estimate"], d["interval"],
                 d["sizes"], d["verdict"], d["controls"], d["runs"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines + [""] + [f"- {n}" for n in NOTES])
