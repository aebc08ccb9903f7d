"""Result tables read from the store: the long results frame, the paper-shaped tables and their exports.

Nothing here recomputes a metric: every number is a stored set-level row (or, for a spread that the
runner did not store, a summary of the stored per-image rows). The report renders the same ``Table``
objects that ``bench table`` prints, so the page and the exports always agree.

Which runs are reported: only ``complete`` ones; of several complete runs with the same method, params,
bundle, dataset, image count and seed the latest wins. Runs of different image count or seed are different
rows (labelled by what differs) and a "best" is only marked between runs of the same count and seed. Runs made by ``bench ablate`` appear in their sweep's table; a sweep
run also appears in Table 1 when it is the method's main configuration (see ``main_runs``).
"""
from __future__ import annotations

import csv
import importlib
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import pandas as pd

from bench.defaults import MATCHED_STEP
from bench.metrics import registry
from bench.store import Store

FORMATS = ("md", "csv", "json", "latex")

# The metric registry (standard library only: importing it costs no torch) says each metric's direction,
# label, level and table; this module keeps no list of its own.


def imagenet_stand_ins() -> dict[str, str]:
    """ImageNet-backed metric -> the domain metric that stands in for it when its weights are absent."""
    return registry.stand_ins()


def per_image_metrics() -> list[str]:
    return [m.name for m in registry.all_metrics(level="per_image")]


def metric_direction(name: str) -> str:
    """'lower' or 'higher': which way is better (the registry's word)."""
    return registry.direction_of(name)


def metric_label(name: str) -> str:
    return registry.label_of(name)


# -- number formatting ----------------------------------------------------------------------------------
def fmt_number(value: float | None, sig: int = 4) -> str:
    """``sig`` significant digits, fixed-point between 1e-4 and 1e6 (``0.01230``, ``24.53``, ``1235``)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if -4 <= magnitude < 6:
        return f"{value:.{max(sig - 1 - magnitude, 0)}f}"
    return f"{value:.{sig - 1}e}"


# -- run selection --------------------------------------------------------------------------------------
# Runs that are not inversions but a reference level shown beside the methods (issue 22: the controls).
# Such a row is never marked best and appears only in the tables of the metrics it is shown in.
@dataclass(frozen=True)
class Reference:
    method: str                      # the reference method (its runs are the row)
    label: str                       # in realism / interpolation / code tables
    semantic_label: str | None = None  # in the AP and manipulation tables, where the row is a control
    note: str = ""

    def shows(self, metric: str) -> bool:
        """Whether this row appears in ``metric``'s column: the registry entry lists it in ``references``."""
        entry = registry.find(metric)
        return entry is not None and self.method in entry.references

    def label_for(self, metrics: Sequence[str]) -> str:
        semantic = any((e := registry.find(m)) is not None and e.table in ("attributes", "manipulation")
                       for m in metrics)
        return self.semantic_label if semantic and self.semantic_label else self.label


REFERENCE_METHODS = {r.method: r for r in (
    Reference(
        "g-samples", "G samples (reference)",
        semantic_label="G samples (negative control: unrelated codes)",
        note="fresh samples of the generator, one per test image, unrelated to it (no inversion): in "
             "realism and interpolation the level G reaches by itself (interpolation between G's own codes, "
             "the positive control of interpolation); in AP the negative control, at chance (the prior)"),
    Reference(
        "g-codes", "G codes (truth)",
        semantic_label="G codes (truth: positive control)",
        note="the true codes of G's own samples scored against the judge's labels of those samples (the "
             "known-answer set of the same size, --data gsamples:N): what a method that recovered every "
             "code exactly would score, i.e. each attribute's ceiling"),
)}


def is_reference(run: dict[str, Any]) -> bool:
    return run["method"] in REFERENCE_METHODS


def config_key(run: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two runs the same row: a later run of the same key supersedes an earlier one."""
    return (run["method"], json.dumps(run["params"], sort_keys=True), run["bundle"], run["dataset"],
            run["n_images"], run["seed"])


def _recency(run: dict[str, Any]) -> tuple[float, float, str]:
    return (run.get("finished") or run["started"], run["started"], run["run_id"])


@dataclass
class Selection:
    """The store's runs sorted for reporting."""

    reported: list[dict[str, Any]]    # latest complete run of each configuration, in start order
    superseded: list[dict[str, Any]]  # older complete runs of a reported configuration
    incomplete: list[dict[str, Any]]  # runs still marked running (killed or in progress)
    sweeps: list[dict[str, Any]]


def select_runs(store: Store) -> Selection:
    complete = store.runs(status="complete")
    latest: dict[tuple, dict] = {}
    for run in complete:
        key = config_key(run)
        if key not in latest or _recency(run) > _recency(latest[key]):
            latest[key] = run
    reported = sorted(latest.values(), key=lambda r: (r["started"], r["run_id"]))
    chosen = {r["run_id"] for r in reported}
    superseded = [r for r in complete if r["run_id"] not in chosen]
    incomplete = store.runs(status="running")
    return Selection(reported, superseded, incomplete, store.sweeps())


def method_defaults(method: str) -> dict[str, Any] | None:
    """The method's default hyperparameters from the methods registry, or None when it cannot say."""
    try:
        registry = importlib.import_module("methods.registry")
        return dict(registry.get(method).hyperparameters())
    except Exception:  # registry absent, method unknown here, or its module failed to import
        return None


def _is_default(params: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """No stored param differs from its default (params may be stored in full or as overrides only)."""
    canon = lambda v: json.dumps(v, sort_keys=True, default=list)  # noqa: E731 - tuples are stored as lists
    return all(k in defaults and canon(v) == canon(defaults[k]) for k, v in params.items())


def main_runs(runs: Sequence[dict[str, Any]], sweeps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs of Table 1 (``runs`` of one bundle/dataset): those not made by a sweep, plus each swept
    method's main configuration.

    A run of ``bench run`` that a later sweep re-used (same run id) carries the sweep id. For a method
    whose runs all carry one, the main configuration is, in order: the runs that started before their
    sweep was created; else the run with the method's default params (methods registry); else every run,
    labelled by its params.
    """
    created = {s["sweep_id"]: s["created"] for s in sweeps}
    picked = [r for r in runs if not r.get("sweep_id")]
    have = {r["method"] for r in picked}
    for method in dict.fromkeys(r["method"] for r in runs if r["method"] not in have):
        candidates = [r for r in runs if r["method"] == method]
        chosen = [r for r in candidates if r["started"] < created.get(r["sweep_id"], -math.inf)]
        if not chosen:
            defaults = method_defaults(method)
            chosen = [r for r in candidates if defaults is not None and _is_default(r["params"], defaults)]
        picked += chosen or candidates
    order = {r["run_id"]: i for i, r in enumerate(runs)}
    return sorted(picked, key=lambda r: order[r["run_id"]])


def run_labels(runs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """A display name per run: the method, plus the params that differ when a method appears twice."""
    labels = {}
    for run in runs:
        same = [r for r in runs if r["method"] == run["method"]]
        if len(same) == 1:
            labels[run["run_id"]] = run["method"]
            continue
        keys = sorted({k for r in same for k in r["params"]})
        differing = [k for k in keys if len({json.dumps(r["params"].get(k), sort_keys=True) for r in same}) > 1]
        extra = ", ".join(f"{k}={short_value(run['params'].get(k))}" for k in differing)
        extra = ", ".join(filter(None, [extra, _identity_suffix(run, same)]))
        if not extra:  # same params, different bundle/dataset
            extra = f"{run['bundle']}/{run['dataset']}"
        labels[run["run_id"]] = f"{run['method']} ({extra})"
    return labels


def _identity_suffix(run: dict[str, Any], same: Sequence[dict[str, Any]]) -> str:
    """``n=8``, ``seed=1``: the image count and seed, where they tell apart runs of one method."""
    parts = [f"{label}={run.get(key)}" for key, label in (("n_images", "n"), ("seed", "seed"))
             if len({r.get(key) for r in same}) > 1]
    return ", ".join(parts)


def short_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value)


def groups(runs: Sequence[dict[str, Any]]) -> list[tuple[tuple[str, str], list[dict[str, Any]]]]:
    """Runs split by (bundle, dataset): numbers are only compared within one group. A control run made
    for another data set (the "G codes (truth)" row, run on the known-answer set: ``env["control_for"]``)
    joins that data's group when it is there."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        out.setdefault((run["bundle"], run["dataset"]), []).append(run)
    for run in runs:
        home = (run["bundle"], (run.get("env") or {}).get("control_for"))
        if home[1] and home in out and (run["bundle"], run["dataset"]) in out:
            out[(run["bundle"], run["dataset"])].remove(run)
            out[home].append(run)
    return [(k, v) for k, v in out.items() if v]


# -- tables ---------------------------------------------------------------------------------------------
@dataclass
class Cell:
    value: float | None
    status: str = "ok"            # ok | unavailable | absent
    reason: str | None = None     # why unavailable
    spread: str | None = None     # "± 0.0021" (95% CI half-width) or "sd 0.0021"
    floor: float | None = None    # real-vs-real value beside FID-like metrics
    floor_note: str | None = None  # how the floor was measured
    best: bool = False
    ceiling: float | None = None  # an AP's ceiling: the same boundary's AP on G's own held-out codes

    @property
    def value_text(self) -> str:
        if self.status == "absent":
            return "-"
        return "n/a" if self.value is None else fmt_number(self.value)

    @property
    def floor_text(self) -> str | None:
        if self.ceiling is not None and self.value is not None:
            return f"{self.value / self.ceiling:.2f} of ceiling {fmt_number(self.ceiling, 3)}"
        return None if self.floor is None else f"floor {fmt_number(self.floor)}"

    @property
    def text(self) -> str:
        parts = [self.value_text]
        if self.value is not None and self.spread:
            parts.append(self.spread)
        if self.value is not None and (self.floor is not None or self.ceiling is not None):
            parts.append(f"({self.floor_text})")
        return " ".join(parts)


@dataclass
class Column:
    metric: str
    label: str
    direction: str

    @property
    def arrow(self) -> str:
        return "↓" if self.direction == "lower" else "↑"


@dataclass
class Row:
    run_id: str
    label: str
    method: str
    params: dict[str, Any]
    bundle: str
    dataset: str
    n_images: int
    cells: dict[str, Cell]
    seed: int = 0


@dataclass
class Table:
    title: str
    columns: list[Column]
    rows: list[Row]
    key: str = "method"                      # heading of the label column
    notes: list[str] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        """Wide frame: one row per run, raw values (NaN where unavailable)."""
        records = []
        for row in self.rows:
            rec: dict[str, Any] = {self.key: row.label, "run_id": row.run_id, "bundle": row.bundle,
                                   "dataset": row.dataset, "n_images": row.n_images}
            for col in self.columns:
                cell = row.cells[col.metric]
                rec[col.metric] = math.nan if cell.value is None else cell.value
            records.append(rec)
        return pd.DataFrame.from_records(records)


class RunMetrics:
    """Stored rows of one run, read once: set-level metrics by name and (lazily) per-image rows."""

    def __init__(self, store: Store, run: dict[str, Any]):
        self.run = run
        self.metrics = {m["name"]: m for m in store.metrics(run["run_id"])}
        self._store = store
        self._images: list[dict[str, Any]] | None = None

    @property
    def images(self) -> list[dict[str, Any]]:
        if self._images is None:
            self._images = self._store.images(self.run["run_id"])
        return self._images

    def cell(self, name: str) -> Cell:
        row = self.metrics.get(name)
        if row is None:
            return Cell(None, status="absent")
        detail = row["detail"] or {}
        if row["status"] != "ok" or row["value"] is None:
            return Cell(None, status="unavailable", reason=str(detail.get("reason") or "unavailable"))
        floor = self._floor(name, detail)
        note = detail.get("floor_kind") if floor is not None and "floor" in detail else None
        ceiling = detail.get("ceiling")  # only rows with a held-out ceiling carry one (ap_<attr>)
        if isinstance(ceiling, (int, float)) and ceiling > 0:
            note = (f"ceiling: this boundary's AP on {detail.get('ceiling_n')} held-out codes of G, scored "
                    "against the judge's labels of their images (what recovering every code would give)")
        else:
            ceiling = None
        return Cell(row["value"], spread=self._spread(name, detail), floor=floor,
                    floor_note=str(note) if note else None, ceiling=ceiling)

    def _spread(self, name: str, detail: dict[str, Any]) -> str | None:
        ci = detail.get("ci95")
        if isinstance(ci, (int, float)) and math.isfinite(ci):
            return f"± {fmt_number(abs(ci), 2)}"
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
            return f"[{fmt_number(ci[0], 3)}, {fmt_number(ci[1], 3)}]"
        std = detail.get("std")
        if isinstance(std, (int, float)) and math.isfinite(std):
            return f"sd {fmt_number(std, 2)}"
        if name in per_image_metrics():  # not stored with the mean: summarise the stored per-image values
            values = [r["metrics"].get(name) for r in self.images if r["status"] == "ok"]
            values = [v for v in values if isinstance(v, (int, float))]
            if len(values) >= 2:
                return f"sd {fmt_number(statistics.stdev(values), 2)}"
        return None

    def _floor(self, name: str, detail: dict[str, Any]) -> float | None:
        floor = detail.get("floor")
        if isinstance(floor, (int, float)) and math.isfinite(floor):
            return float(floor)
        row = self.metrics.get(f"{name}_floor")
        if row is not None and row["status"] == "ok" and row["value"] is not None:
            return row["value"]
        return None

    def has(self, name: str) -> bool:
        row = self.metrics.get(name)
        return row is not None and row["status"] == "ok" and row["value"] is not None


def build_table(title: str, data: Sequence[RunMetrics], metrics: Sequence[str], labels: dict[str, str],
                key: str = "method") -> Table:
    """A table of ``metrics`` for the runs in ``data`` (one bundle/dataset), best value per column marked."""
    columns = [Column(m, metric_label(m), metric_direction(m)) for m in metrics]
    rows, references = [], []
    for d in data:
        run = d.run
        ref = REFERENCE_METHODS.get(run["method"])
        if ref is not None and not any(ref.shows(m) for m in metrics):
            continue  # a reference row only appears in the tables of its metrics
        cells = {m: d.cell(m) if ref is None or ref.shows(m) else Cell(None, status="absent") for m in metrics}
        label = ref.label_for(metrics) if ref is not None else labels.get(run["run_id"], run["method"])
        row = Row(run["run_id"], label, run["method"], run["params"], run["bundle"], run["dataset"],
                  run["n_images"], cells, seed=run.get("seed", 0))
        (references if ref is not None else rows).append(row)
    for col in columns:
        _mark_best(rows, col)
    table = Table(title, columns, rows + references, key=key)
    table.notes += _unlike_runs_notes(rows + references)
    for row in references:
        table.notes.append(f"{row.label}: {REFERENCE_METHODS[row.method].note}; never marked best")
    for d in data:  # facts a method stated about its run (e.g. PTI: memory per image, a reduced budget)
        label = labels.get(d.run["run_id"], d.run["method"])
        for note in (d.run.get("env") or {}).get("notes") or []:
            if f"{label}: {note}" not in table.notes:
                table.notes.append(f"{label}: {note}")
    if any(c.spread and c.spread.startswith("±") for r in rows for c in r.cells.values()):
        table.notes.append("± : half-width of the 95% confidence interval of the mean over images")
    if any(c.spread and c.spread.startswith("sd") for r in rows for c in r.cells.values()):
        table.notes.append("sd : standard deviation over images")
    if any(c.floor is not None for r in rows for c in r.cells.values()):
        table.notes.append("floor : the same distance between two disjoint real sets of this size, i.e. "
                           "the sampling noise of the estimate. New images (interpolations) cannot be "
                           "expected below it; reconstructions of the very test images can (a perfect "
                           "reconstruction scores 0)")
    return table


# An attribute AP below this share of its ceiling is "low" and gets a diagnosis; a decodable AP this far
# above the boundary AP (and at least PROBE_HIGH) says the attribute is in the codes, off G's boundary.
LOW_OF_CEILING = 0.9
PROBE_GAIN = 0.1
PROBE_HIGH = 0.8


def ap_diagnosis(table: Table) -> list[str]:
    """For every method's attribute AP below ``LOW_OF_CEILING`` of its ceiling: is the attribute lost
    (the decodable AP, a probe fitted on the method's own codes, is low too) or encoded off G's boundary
    (the probe finds it)? One line per method, read from the table's cells."""
    lines = []
    for row in table.rows:
        if row.method in REFERENCE_METHODS:
            continue
        verdicts = []
        for name, cell in row.cells.items():
            if not name.startswith("ap_") or name == "ap_mean" or cell.value is None or cell.ceiling is None:
                continue
            ratio = cell.value / cell.ceiling
            if ratio >= LOW_OF_CEILING:
                continue
            probe = row.cells.get("probe_" + name)
            attr = name[3:]
            if probe is None or probe.value is None:
                verdicts.append(f"{attr} {ratio:.2f} of ceiling (no decodable AP to tell why)")
            elif probe.value >= PROBE_HIGH and probe.value - cell.value >= PROBE_GAIN:
                verdicts.append(f"{attr} {ratio:.2f} of ceiling: encoded off G's boundary (decodable AP "
                                f"{fmt_number(probe.value, 3)})")
            else:
                verdicts.append(f"{attr} {ratio:.2f} of ceiling: lost (decodable AP {fmt_number(probe.value, 3)})")
        if verdicts:
            lines.append(f"{row.label}: " + "; ".join(verdicts))
    if lines:
        lines.insert(0, f"Low AP (below {LOW_OF_CEILING:g} of the ceiling), and why: 'lost' = a linear probe "
                        f"fitted on the method's own codes cannot find the attribute either (decodable AP < "
                        f"{PROBE_HIGH:g} or within {PROBE_GAIN:g} of the boundary AP); 'encoded off G's "
                        "boundary' = the probe finds it, G's boundary does not")
    return lines


def _unlike_runs_notes(rows: Sequence[Row]) -> list[str]:
    """Say so when a table holds runs measured on different image counts or seeds."""
    notes = []
    counts = sorted({r.n_images for r in rows})
    if len(counts) > 1:
        per = "; ".join(f"n={n}: {', '.join(r.label for r in rows if r.n_images == n)}" for n in counts)
        notes.append(f"methods measured on different numbers of images ({per}); set-level numbers such as "
                     "FID depend on n, and best is marked only between runs of the same n and seed")
    seeds = sorted({r.seed for r in rows})
    if len(seeds) > 1:
        notes.append(f"runs of different seeds ({', '.join(map(str, seeds))}); best is marked only between "
                     "runs of the same n and seed")
    return notes


def _mark_best(rows: Sequence[Row], col: Column) -> None:
    # Best is compared between like runs only (one bundle, dataset, image count and seed); a lone value
    # is not "best" of anything.
    by_group: dict[tuple[Any, ...], list[Cell]] = {}
    for row in rows:
        cell = row.cells[col.metric]
        if cell.value is not None:
            by_group.setdefault((row.bundle, row.dataset, row.n_images, row.seed), []).append(cell)
    for cells in by_group.values():
        if len(cells) < 2 or len({c.value for c in cells}) == 1:  # nothing to choose between
            continue
        best = min(c.value for c in cells) if col.direction == "lower" else max(c.value for c in cells)
        for c in cells:
            c.best = c.value == best


def pick_present(data: Sequence[RunMetrics], *names: str) -> list[str]:
    """Of alternative metrics (``lpips``, ``dpips``) those with a value in some run; else the first."""
    present = [n for n in names if any(d.has(n) for d in data)]
    return present or [names[0]]


def table_metrics(data: Sequence[RunMetrics], table: str) -> list[str]:
    """The registry's metrics of ``table``, in registry order; an ImageNet metric and the domain metric
    standing in for it share one column (the one with values, see ``pick_present``)."""
    entries = [m for m in registry.all_metrics(table=table) if not m.is_template]
    stand_in = {m.name: m.stands_in_for for m in entries if m.stands_in_for}
    names: list[str] = []
    for m in entries:
        if m.name in stand_in:
            continue  # placed with the metric it stands in for
        if m.only_when_present and not any(d.has(m.name) for d in data):
            continue
        alternatives = [m.name] + [d for d, imagenet in stand_in.items() if imagenet == m.name]
        names += pick_present(data, *alternatives) if len(alternatives) > 1 else alternatives
    return names


def table1_metrics(data: Sequence[RunMetrics]) -> list[str]:
    return table_metrics(data, "inversion")


def present_metrics(data: Iterable[RunMetrics], table: str, order: Sequence[str] = ()) -> list[str]:
    """The stored metrics of ``table`` that some run has, in registry order; a template entry
    (``ap_<attr>``) expands to its stored names, the attributes in ``order`` first, then by name."""
    stored = list(dict.fromkeys(name for d in data for name in d.metrics))
    out: list[str] = []
    for entry in registry.all_metrics(table=table):
        if not entry.is_template:
            out += [entry.name] if entry.name in stored else []
            continue
        names = [n for n in stored if registry.find(n) is entry]
        attr = {n: entry.attribute_of(n) for n in names}
        out += sorted(names, key=lambda n: (list(order).index(attr[n]) if attr[n] in order else len(order), n))
    return out




def protocol_labels(runs: Sequence[dict[str, Any]], labels: dict[str, str]) -> dict[str, str]:
    """Labels that say a run's protocol where it is not the group's: a long budget on an image subset
    (``max_images``) reads "image2stylegan (5000 steps, first 4 images)"."""
    out = dict(labels)
    n_max = max((r["n_images"] for r in runs), default=0)
    for r in runs:
        if r["params"].get("max_images") and r["n_images"] < n_max:
            out[r["run_id"]] = (f"{labels.get(r['run_id'], r['method'])} ({r['params'].get('iters')} steps, "
                                f"first {r['n_images']} images)")
    return out


def add_matched_budget_rows(table: Table, store: Store, runs: Sequence[dict[str, Any]],
                            labels: dict[str, str], step: int = MATCHED_STEP) -> Table:
    """Append, for every run whose own budget is longer than ``step`` and that stored a milestone there,
    the row of that milestone: the same run after ``step`` steps (exactly what a ``step``-step run
    returns), measured on the same images. Per-image metrics, fid_domain / ap_mean and the seconds per
    image up to the milestone are shown; other columns are '-' (measured at the final step only)."""
    added = []
    for run in runs:
        if is_reference(run):
            continue
        rows = [m for m in store.milestones(run["run_id"]) if m["step"] == step]
        if not rows or max((m["step"] for m in store.milestones(run["run_id"])), default=step) <= step:
            continue
        cells: dict[str, Cell] = {}
        ok = [m for m in rows if m["status"] == "ok"]
        sets = {m["name"]: m for m in store.milestone_metrics(run["run_id"]) if m["step"] == step}
        for col in table.columns:
            name = col.metric
            values = [m["metrics"][name] for m in ok if m["metrics"].get(name) is not None]
            if values:
                mean = sum(values) / len(values)
                spread = None
                if len(values) >= 2:
                    spread = f"± {fmt_number(1.96 * statistics.stdev(values) / math.sqrt(len(values)), 2)}"
                cells[name] = Cell(mean, spread=spread)
            elif name == registry.speed_metric():
                secs = [m["seconds"] for m in rows if m["seconds"] is not None]
                cells[name] = Cell(sum(secs) / len(secs) if secs else None, status="ok" if secs else "absent")
            elif name in sets:
                m = sets[name]
                floor = (m["detail"] or {}).get("floor")
                cells[name] = Cell(m["value"], status="ok" if m["status"] == "ok" else "unavailable",
                                   reason=(m["detail"] or {}).get("reason"),
                                   floor=floor if isinstance(floor, (int, float)) else None)
            else:
                cells[name] = Cell(None, status="absent")
        label = f"{run['method']} @{step} steps (n={run['n_images']})"
        added.append(Row(f"{run['run_id']}@{step}", label, run["method"], {**run["params"], "iters": step},
                         run["bundle"], run["dataset"], run["n_images"], cells, seed=run.get("seed", 0)))
    if added:
        table.rows += added
        table.notes.append(f"@{step} steps: the same run's milestone at step {step} (exactly a {step}-step run, "
                           f"the matched budget of idinvert's {step} steps), on that run's images; '-': "
                           "measured at the final step only; not marked best")
    return table


def table1(store: Store, run_id: str | None = None) -> Table:
    """Paper Table 1 shape: method x MSE, PSNR, LPIPS|dpips, FID|fid_domain, SWD, seconds per image."""
    if run_id is not None:
        runs = store.runs(run_id=run_id)
        if not runs:
            raise KeyError(f"no run {run_id!r} in {store.path}")
    else:
        sel = select_runs(store)
        runs = main_runs(sel.reported, sel.sweeps)
    data = [RunMetrics(store, r) for r in runs]
    labels = protocol_labels(runs, run_labels(runs))
    table = build_table("Table 1: inversion quality and speed", data, table1_metrics(data), labels)
    return add_matched_budget_rows(table, store, runs, labels)


# -- long format ----------------------------------------------------------------------------------------
FRAME_COLUMNS = ["run_id", "method", "label", "params", "bundle", "dataset", "metric", "value", "status",
                 "direction", "detail", "n_images", "seed", "code_version", "device", "sweep_id"]


def results_frame(store: Store, run_id: str | None = None) -> pd.DataFrame:
    """Every stored set-level metric of the reported runs (or of one run), one row per (run, metric)."""
    if run_id is not None:
        runs = store.runs(run_id=run_id)
        if not runs:
            raise KeyError(f"no run {run_id!r} in {store.path}")
    else:
        runs = select_runs(store).reported
    labels = run_labels(runs)
    records = []
    for run in runs:
        for m in store.metrics(run["run_id"]):
            records.append({
                "run_id": run["run_id"], "method": run["method"], "label": labels[run["run_id"]],
                "params": json.dumps(run["params"], sort_keys=True), "bundle": run["bundle"],
                "dataset": run["dataset"], "metric": m["name"], "value": m["value"], "status": m["status"],
                "direction": metric_direction(m["name"]), "detail": json.dumps(m["detail"], sort_keys=True),
                "n_images": run["n_images"], "seed": run["seed"], "code_version": run["code_version"],
                "device": run["device"], "sweep_id": run["sweep_id"],
            })
    return pd.DataFrame.from_records(records, columns=FRAME_COLUMNS)


# -- exports --------------------------------------------------------------------------------------------
def format_table(table: Table | pd.DataFrame | Sequence[dict[str, Any]], fmt: str) -> str:
    """Render a ``Table`` (paper shape) or a long frame / list of row dicts as md, csv, json or latex."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if isinstance(table, Table):
        return {"md": _table_md, "csv": _table_csv, "json": _table_json, "latex": _table_latex}[fmt](table)
    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame.from_records(list(table))
    return {"md": _frame_md, "csv": _frame_csv, "json": _frame_json, "latex": _frame_latex}[fmt](frame)


def render_table(store: Store, fmt: str = "md", run_id: str | None = None) -> str:
    """What ``bench table --format FMT [--run RUN_ID]`` prints: JSON as the long list of every stored
    metric, the other formats as Table 1 (one row per method, the columns of the report's Table 1)."""
    if fmt == "json":
        return format_table(results_frame(store, run_id), "json").rstrip("\n")
    table = table1(store, run_id)
    if not table.rows:
        return "no complete runs in this results directory; run `python -m bench run --methods all` first"
    return format_table(table, fmt).rstrip("\n")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _table_md(t: Table) -> str:
    head = [t.key, "n", "seed", *(f"{c.label} {c.arrow}" for c in t.columns)]
    lines = ["| " + " | ".join(_md_escape(h) for h in head) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(t.columns) + 2)) + "|"]
    for row in t.rows:
        cells = []
        for col in t.columns:
            cell = row.cells[col.metric]
            text = _md_escape(cell.text)
            cells.append(text.replace(cell.value_text, f"**{cell.value_text}**", 1) if cell.best else text)
        lines.append("| " + " | ".join([_md_escape(row.label), str(row.n_images), str(row.seed), *cells]) + " |")
    out = [f"**{_md_escape(t.title)}**", "", *lines]
    if t.notes:
        out += ["", *(f"{n}  " for n in t.notes)]
    return "\n".join(out) + "\n"


def _table_csv(t: Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([t.key, "run_id", "bundle", "dataset", "n_images", "seed", *(c.metric for c in t.columns)])
    for row in t.rows:
        values = [repr(row.cells[c.metric].value) if row.cells[c.metric].value is not None else ""
                  for c in t.columns]
        writer.writerow([row.label, row.run_id, row.bundle, row.dataset, row.n_images, row.seed, *values])
    return buf.getvalue()


def _table_json(t: Table) -> str:
    out = []
    for row in t.rows:
        for col in t.columns:
            cell = row.cells[col.metric]
            out.append({"run_id": row.run_id, "method": row.method, "label": row.label, "params": row.params,
                        "bundle": row.bundle, "dataset": row.dataset, "metric": col.metric, "value": cell.value,
                        "status": cell.status, "text": cell.text, "best": cell.best, "n_images": row.n_images,
                        "seed": row.seed})
    return json.dumps(out, indent=2) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_cell(cell: Cell) -> str:
    value = latex_escape(cell.value_text)
    if cell.best:
        value = rf"\textbf{{{value}}}"
    parts = [value]
    if cell.value is not None and cell.spread:
        parts.append(latex_escape(cell.spread).replace("±", r"$\pm$"))
    if cell.value is not None and cell.floor is not None:
        parts.append(f"({latex_escape(cell.floor_text or '')})")
    return " ".join(parts)


def _table_latex(t: Table) -> str:
    arrows = {"lower": r"$\downarrow$", "higher": r"$\uparrow$"}
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "r" * (len(t.columns) + 2) + "}",
             r"\toprule",
             " & ".join([latex_escape(t.key), "$n$", "seed", *(f"{latex_escape(c.label)} {arrows[c.direction]}"
                                                                for c in t.columns)]) + r" \\", r"\midrule"]
    for row in t.rows:
        lines.append(" & ".join([latex_escape(row.label), str(row.n_images), str(row.seed),
                                 *(_latex_cell(row.cells[c.metric]) for c in t.columns)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{latex_escape(t.title)}. "
              + latex_escape("; ".join(t.notes)) + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value


def _frame_json(frame: pd.DataFrame) -> str:
    records = []
    for rec in frame.to_dict(orient="records"):
        rec = {k: _jsonable(v) for k, v in rec.items()}
        for key in ("params", "detail"):
            if isinstance(rec.get(key), str):
                try:
                    rec[key] = json.loads(rec[key])
                except ValueError:
                    pass
        records.append(rec)
    return json.dumps(records, indent=2) + "\n"


def _frame_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def _frame_text_cells(frame: pd.DataFrame) -> list[list[str]]:
    return [["" if v is None or (isinstance(v, float) and math.isnan(v)) else
             (fmt_number(v) if isinstance(v, float) else str(v)) for v in rec] for rec in frame.itertuples(index=False)]


def _frame_md(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(_md_escape(str(c)) for c in frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(_md_escape(v) for v in rec) + " |" for rec in _frame_text_cells(frame)]
    return "\n".join(lines) + "\n"


def _frame_latex(frame: pd.DataFrame) -> str:
    lines = [r"\begin{tabular}{" + "l" * len(frame.columns) + "}", r"\toprule",
             " & ".join(latex_escape(str(c)) for c in frame.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in rec) + r" \\" for rec in _frame_text_cells(frame)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
