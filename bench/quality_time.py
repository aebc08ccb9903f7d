"""Quality against time, read from the store: each run's anytime curves and the time-to-quality table.

Which metrics have curves is the registry's word (``Metric.anytime``: "measured" or "plotted"). A
run's curve of a per-image metric (``mse``, ``psnr``, ``dpips``) is the mean over images at each
milestone step, against the mean seconds per image up to that step (the batch's time to the milestone
divided by its size, encoder start included, warm-up excluded): ``bench.anytime.mean_curve``. A curve of
a set metric (``fid_domain``, ``ap_mean``) is its stored value per step (``milestone_metrics``).
Encoder methods are one point. Nothing is recomputed here.

The time-to-quality table compares runs on the images they all inverted (the long-budget method may run
on a documented subset): per-image curves are restricted to those common images, so the targets and the
times refer to the same images. Set-level curves cannot be restricted and are shown per run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from bench import anytime as A
from bench.defaults import MATCHED_STEP
from bench.metrics import registry
from bench.store import Store

FAST, SLOW = "idinvert", "image2stylegan"


@dataclass
class RunCurves:
    run: dict[str, Any]
    label: str
    steps: list[int]
    seconds: list[float]                      # mean seconds per image at each step
    per_image: dict[str, np.ndarray]          # metric -> [N, K] (nan: failed / not measured)
    image_ids: list[str]
    sets: dict[str, list[A.AnytimePoint]] = field(default_factory=dict)

    @property
    def one_point(self) -> bool:
        return len(self.steps) == 1

    def curve(self, metric: str, keep: Sequence[str] | None = None) -> list[A.AnytimePoint] | None:
        """The curve of ``metric``; per-image metrics optionally on the images ``keep`` only."""
        if metric in self.sets:
            return self.sets[metric]
        if metric not in self.per_image:
            return None
        values = self.per_image[metric]
        if keep is not None:
            rows = [i for i, image_id in enumerate(self.image_ids) if image_id in set(keep)]
            values = values[rows]
        if values.shape[0] == 0 or not np.isfinite(values).any():
            return None
        return A.mean_curve(self.steps, self.seconds, values)


def run_curves(store: Store, run: dict[str, Any], label: str) -> RunCurves | None:
    """The anytime curves of one run, or None when it stored no milestones (a run made before them)."""
    rows = store.milestones(run["run_id"])
    if not rows:
        return None
    steps = sorted({r["step"] for r in rows})
    ids = list(dict.fromkeys(r["image_id"] for r in rows))
    pos, col = {i: k for k, i in enumerate(ids)}, {s: k for k, s in enumerate(steps)}
    secs = np.full((len(ids), len(steps)), np.nan)
    per_image = registry.names(level="per_image", anytime=True)
    values = {m: np.full((len(ids), len(steps)), np.nan) for m in per_image}
    for r in rows:
        i, k = pos[r["image_id"]], col[r["step"]]
        secs[i, k] = r["seconds"] if r["seconds"] is not None else np.nan
        if r["status"] == "ok":
            for m in per_image:
                v = r["metrics"].get(m)
                if v is not None:
                    values[m][i, k] = v
    mean_secs = np.nanmean(secs, axis=0)
    if not np.isfinite(mean_secs).all():
        return None
    mean_secs = np.maximum.accumulate(mean_secs)  # float noise between equal milestones
    out = RunCurves(run, label, steps, mean_secs.tolist(), {m: v for m, v in values.items() if np.isfinite(v).any()},
                    ids)
    by, sets = {}, {m.name for m in registry.all_metrics(anytime=True) if m.level != "per_image"}
    for m in store.milestone_metrics(run["run_id"]):
        if m["name"] in sets:
            by.setdefault(m["name"], {})[m["step"]] = m["value"] if m["status"] == "ok" else None
    for name, at in by.items():
        if set(at) == set(steps) and all(v is not None for v in at.values()):
            out.sets[name] = A.curve(steps, out.seconds, [at[s] for s in steps])
    return out


def curves_for(store: Store, runs: Sequence[dict[str, Any]], labels: dict[str, str]) -> list[RunCurves]:
    """Curves of the inversion runs among ``runs`` (reference rows such as g-samples are not inversions)."""
    from bench.tables import is_reference

    out = []
    for run in runs:
        if is_reference(run):
            continue
        c = run_curves(store, run, labels.get(run["run_id"], run["method"]))
        if c is not None:
            out.append(c)
    return out


def common_images(curves: Sequence[RunCurves]) -> list[str]:
    if not curves:
        return []
    common = set(curves[0].image_ids)
    for c in curves[1:]:
        common &= set(c.image_ids)
    return [i for i in curves[0].image_ids if i in common]


def _first(curves: Sequence[RunCurves], method: str) -> RunCurves | None:
    for c in curves:
        if c.run["method"] == method and not c.one_point:
            return c
    return None


NOT_REACHED_NOTE = "'not reached (in X s)': the run's budget ended first -- a value of its own, not a time"
BUDGETS_NOTE = "budgets: "


@dataclass
class QualityTimeTable:
    methods: list[str]                    # curve labels, in order
    rows: list[dict[str, Any]]            # A.time_to_quality_table rows (plus "n_images")
    n_images: int
    notes: list[str]

    def cell(self, row: dict[str, Any], label: str, budgets_shown: bool = False) -> str:
        """A method's time to the row's target; ``budgets_shown``: a table of each run's budget is beside
        it, so a target not reached reads "not reached" instead of repeating the budget in every row."""
        t = row["times"].get(label)
        if t is None:
            return "-"
        return "not reached" if budgets_shown and not t.reached else str(t)

    def speedup_text(self, row: dict[str, Any]) -> str:
        s = row["speedup"]
        return "-" if s is None else str(s)

    def to_markdown(self) -> str:
        head = ["target", "value"] + self.methods + [f"{FAST} vs {SLOW}"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows:
            t = row["target"]
            cells = [t.name, f"{t.value:.4g}"] + [self.cell(row, m) for m in self.methods] + [self.speedup_text(row)]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes])


def quality_time_table(curves: Sequence[RunCurves]) -> QualityTimeTable | None:
    """Seconds per image each run needs to reach: image2stylegan's final MSE, idinvert's MSE at 100 steps
    (or at its budget), and the same for dpips -- on the images every run inverted. None without both
    an idinvert and an image2stylegan curve."""
    fast, slow = _first(curves, FAST), _first(curves, SLOW)
    if fast is None or slow is None:
        return None
    keep = common_images(curves)
    if len(keep) < 1:
        return None
    per_run: dict[str, dict[str, list[A.AnytimePoint]]] = {}
    for c in curves:
        per_run[c.label] = {m: pts for m in registry.names(level="per_image", anytime=True)
                            if (pts := c.curve(m, keep)) is not None}
    targets = []
    for metric in registry.names(level="per_image", anytime="plotted"):  # the time-to-quality targets
        direction = registry.direction_of(metric)
        if metric not in per_run[slow.label] or metric not in per_run[fast.label]:
            continue
        targets.append(A.target_from(per_run[slow.label][metric], f"{SLOW} final {metric}", metric,
                                     direction=direction))
        step = MATCHED_STEP if MATCHED_STEP in fast.steps else None
        targets.append(A.target_from(per_run[fast.label][metric], f"{FAST} {metric} at step "
                                     f"{step if step is not None else fast.steps[-1]}", metric, step=step,
                                     direction=direction))
    rows = A.time_to_quality_table(per_run, targets, fast=fast.label, slow=slow.label)
    notes = [f"means over the {len(keep)} images every run inverted; seconds per image up to the first "
             "milestone that meets the target, encoder start included, warm-up excluded. No interpolation "
             "between milestones: 'A-B s (after step j, by step k)' means the target was met after "
             "milestone j and by milestone k; the speed-up's range is what these brackets allow",
             NOT_REACHED_NOTE,
             f"{FAST} vs {SLOW}: how many times less time {FAST} needs (the paper: ~36x, 8 s vs ~290 s per "
             "image); 'at least'/'at most' when only one of them reached the target"]
    budgets = "; ".join(f"{c.label}: {c.steps[-1]} steps, {c.seconds[-1]:.3g} s/image on "
                        f"{len(c.image_ids)} images" for c in curves)
    notes.append(BUDGETS_NOTE + budgets)
    return QualityTimeTable([c.label for c in curves], rows, len(keep), notes)


def figure_panels(curves: Sequence[RunCurves]) -> list[tuple[str, str, list[tuple[str, list[float], list[float], list[int]]]]]:
    """(metric label, direction, [(run label, seconds, values, steps)]) per metric the registry plots
    ``anytime`` that some run has; points with 0 seconds (nothing timed yet) are left out of the log axis."""
    panels = []
    for metric in registry.names(anytime="plotted"):
        series = []
        for c in curves:
            pts = c.curve(metric)
            if pts is None:
                continue
            pts = [p for p in pts if p.seconds_per_image > 0 and math.isfinite(p.value)]
            if pts:
                series.append((c.label, [p.seconds_per_image for p in pts], [p.value for p in pts],
                               [p.step for p in pts]))
        if series:
            panels.append((registry.label_of(metric), registry.direction_of(metric), series))
    return panels
