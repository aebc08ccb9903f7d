"""``report.html``: one self-contained page of a results directory, built only from the store.

It never recomputes a metric: tables come from ``bench.tables`` (the same objects ``bench table``
prints), figures are drawn from stored numbers and curves, and images are the stored PNG artifacts
embedded as data URIs, so the page can be mailed or archived as one file. Every string from the data is
HTML-escaped by Jinja2's autoescaping.
"""
from __future__ import annotations

import base64
import datetime as _dt
import io
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from bench import tables as T
from bench.metrics import registry
from bench.report import figures as F
from bench.fileio import write_text_atomic
from bench.store import DB_NAME, Store

__all__ = ["build_report"]

GRID_IMAGES = 8          # test images in the reconstruction grid
INTERP_PAIRS = 3         # interpolation pairs shown
EDIT_IMAGES = 2          # images per attribute in the manipulation strips
ATTRIBUTE_ORDER = ("age", "gender", "eyeglasses", "pose", "expression")
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"))


def build_report(results_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``results_dir/report.html`` (or ``out``) from the store and return its path."""
    root = Path(results_dir)
    out = Path(out) if out is not None else root / "report.html"
    context = _context(root)
    html = _environment().get_template("report.html.j2").render(**context)
    # atomic (a reader never sees half a page), 0644 under the usual umask (a shared folder stays readable)
    return write_text_atomic(out, html)


def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(Path(__file__).parent), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _context(root: Path) -> dict[str, Any]:
    base = {"generated": _when(_dt.datetime.now(_dt.timezone.utc).timestamp()), "results_dir": str(root),
            "groups": [], "incomplete": [], "superseded": 0}
    if not (root / DB_NAME).exists():
        return {**base, "empty": f"No results store ({DB_NAME}) in {root}. "
                                 "Run `python -m bench run --methods all` to make one."}
    with Store(root, readonly=True) as store:  # reads a store on read-only media too
        sel = T.select_runs(store)
        base["incomplete"] = [{
            "method": r["method"], "run_id": r["run_id"], "params": json.dumps(r["params"], sort_keys=True),
            "started": _when(r["started"]), "done": len(store.done_image_ids(r["run_id"])),
            "n_images": r["n_images"]} for r in sel.incomplete]
        base["superseded"] = len(sel.superseded)
        if not sel.reported:
            return {**base, "empty": f"No complete runs in {root} yet. Run `python -m bench run --methods all`"
                                     " (an interrupted run resumes when the same command is repeated)."}
        images = _Images(root)
        groups = [_group(store, images, sel, key, runs) for key, runs in T.groups(sel.reported)]
        return {**base, "empty": None, "groups": groups, "multi_group": len(groups) > 1}


class _Images:
    """Stored image files as data URIs; a missing or unreadable file becomes a note, never a broken <img>."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self._cache: dict[str, tuple[str | None, str | None]] = {}

    def get(self, rel: str) -> tuple[str | None, str | None]:
        """``(data_uri, None)`` or ``(None, why_not)``."""
        if rel not in self._cache:
            self._cache[rel] = self._load(rel)
        return self._cache[rel]

    def _load(self, rel: str) -> tuple[str | None, str | None]:
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root):
            return None, f"outside the results directory: {rel}"
        try:
            data = path.read_bytes()
        except OSError:
            return None, f"missing file: {rel}"
        mime = next((m for magic, m in _MAGIC if data.startswith(magic)), None)
        if mime is None:
            return None, f"not a PNG/JPEG/GIF image: {rel}"
        try:
            from PIL import Image
            with Image.open(io.BytesIO(data)) as im:
                im.load()  # a truncated file would embed as a broken image
                # big real-resolution images and strips: embed a downscaled JPEG so the page stays light
                scale = min(1.0, MAX_EMBED_SIDE / min(im.size), MAX_EMBED_SIDE * 8 / max(im.size))
                if scale < 1.0 and len(data) > 64_000:
                    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
                    buf = io.BytesIO()
                    im.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(buf, "JPEG", quality=88)
                    data, mime = buf.getvalue(), "image/jpeg"
        except Exception:
            return None, f"unreadable image: {rel}"
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", None


# Images embedded in the page are at most this many pixels on their short side (strips: 8x on the long).
MAX_EMBED_SIDE = 128


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _num_key(value: Any) -> tuple:
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, json.dumps(value))


def _group(store: Store, images: _Images, sel: T.Selection, key: tuple[str, str],
           runs: list[dict[str, Any]]) -> dict[str, Any]:
    bundle, dataset = key
    main = T.main_runs(runs, sel.sweeps)
    labels = T.protocol_labels(main, {**T.run_labels(runs), **T.run_labels(main)})
    data = {r["run_id"]: T.RunMetrics(store, r) for r in runs}
    main_data = [data[r["run_id"]] for r in main]
    colors = {labels[r["run_id"]]: F.color(i) for i, r in enumerate(main)}
    g: dict[str, Any] = {"bundle": bundle, "dataset": dataset, "header": _header(runs, main)}
    g["banner"], g["unavailable"] = _unavailability(list(data.values()), labels)
    g["domain_warning"] = _domain_warning(runs, bundle, dataset)

    # reference rows (the controls: G samples, G codes) join the tables of the metrics they are shown in
    inversions = [r for r in main if not T.is_reference(r)]
    inv_data = [data[r["run_id"]] for r in inversions]
    t1 = T.build_table("Table 1: inversion quality and speed", main_data, T.table1_metrics(main_data), labels)
    T.add_matched_budget_rows(t1, store, main, labels)
    g["table1"] = t1
    g["scatter"] = _scatter(t1, colors)
    code_metrics = T.table_metrics(inv_data, "codes")
    g["codes_table"] = (T.build_table("In-domain measures of the codes", main_data, code_metrics, labels)
                        if any(d.has(m) for d in inv_data for m in code_metrics) else None)
    g["anytime"] = _anytime(store, main, labels, colors)
    g["claims"] = _claims(store, runs, data)
    g["grid"] = _grid(store, images, inversions, labels)
    g["pr"] = _pr(store, main_data, labels, colors)
    g["interp"] = _interp(store, images, main_data, labels)
    g["edits"] = _edits(store, images, main_data, labels)
    g["sweeps"] = _sweeps(sel, runs, data)
    g["failures"] = [{"label": labels[d.run["run_id"]], "run_id": d.run["run_id"], "image_id": im["image_id"],
                      "idx": im["idx"], "reason": im["reason"] or "(no reason stored)"}
                     for d in data.values() for im in d.images if im["status"] == "failed"]
    g["n_images_ok"] = {labels[r]: sum(im["status"] == "ok" for im in d.images) for r, d in data.items()}
    _say_each_note_once([t1, g["codes_table"], *(s.get("table") for s in (g["pr"], g["interp"], g["edits"]) if s),
                         *(s["table"] for s in g["sweeps"])])
    return g


def _say_each_note_once(tables: Sequence[T.Table | None]) -> None:
    """A footnote (what ± or the floor means, ...) is said under the first table, in page order, that has
    it; the tables below only add their own."""
    seen: set[str] = set()
    for t in tables:
        if t is None:
            continue
        t.notes = [n for n in t.notes if n not in seen]
        seen.update(t.notes)


def _domain_warning(runs: Sequence[dict[str, Any]], bundle: str, dataset: str) -> str | None:
    """The stored verdict of the runner's domain check (bench.domain_check), when it found the data out
    of the bundle's domain."""
    for run in runs:
        check = (run.get("env") or {}).get("domain_check") or {}
        if check.get("status") == "out":
            return (f"The data {dataset} is far from bundle {bundle}'s own real images: Fréchet distance "
                    f"{check.get('distance', float('nan')):.4g} in the evaluation embedding, "
                    f"{check.get('ratio', float('nan')):.1f}x the real-vs-real floor "
                    f"{check.get('floor', float('nan')):.4g} (limit {check.get('limit', float('nan')):g}x, "
                    f"{check.get('n')} images). The numbers below measure out-of-domain inversion, and "
                    "attribute labels from the bundle's classifier may mean nothing for these images.")
    return None


def _header(runs: Sequence[dict[str, Any]], main: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    def distinct(values: Any) -> str:
        return ", ".join(dict.fromkeys(str(v) for v in values))

    finished = sorted(r["finished"] for r in runs if r.get("finished"))
    dates = _when(finished[0]) if finished and finished[0] == finished[-1] else \
        f"{_when(finished[0])} to {_when(finished[-1])}" if finished else "-"
    world = [r["world_size"] for r in runs if r.get("world_size", 1) > 1]
    rows = [
        ("bundle", distinct(r["bundle"] for r in runs)),
        ("dataset", distinct(r["dataset"] for r in runs)),
        ("test images", distinct(r["n_images"] for r in runs)),
        ("device", distinct(f"{r['device']}, {r['num_threads']} threads" for r in runs)),
        ("code version", distinct(r["code_version"] for r in runs)),
        ("torch", distinct(r["torch_version"] for r in runs)),
        ("seed", distinct(r["seed"] for r in runs)),
        ("runs", f"{len(main)} methods in Table 1, {len(runs)} complete runs in all"),
        ("finished", dates),
    ]
    if world:
        rows.insert(4, ("processes", distinct(world)))
    return rows


def _unavailability(data: Sequence[T.RunMetrics], labels: dict[str, str]) -> tuple[list, list]:
    """The ImageNet banner (which backbone metrics are missing, why, and what stands in) and the list of
    every other metric that could not be computed."""
    reasons: dict[str, dict[str, list[str]]] = {}
    for d in data:
        for name, row in d.metrics.items():
            if row["status"] == "unavailable":
                reason = str((row["detail"] or {}).get("reason") or "no reason stored")
                reasons.setdefault(name, {}).setdefault(reason, []).append(labels[d.run["run_id"]])
    banner, other = [], []
    for name in sorted(reasons):
        entry = {"metric": name, "label": T.metric_label(name),
                 "reasons": [{"reason": r, "runs": ", ".join(dict.fromkeys(v))} for r, v in reasons[name].items()]}
        stand_ins = T.imagenet_stand_ins()
        if name in stand_ins:
            stand_in = stand_ins[name]
            has = any(d.has(stand_in) for d in data)
            entry["stand_in"] = T.metric_label(stand_in) if has else None
            banner.append(entry)
        else:
            other.append(entry)
    return banner, other


def _anytime(store: Store, main: Sequence[dict[str, Any]], labels: dict[str, str],
             colors: dict[str, str]) -> dict | None:
    """Quality against time (issue 13): the milestone curves of every inversion run and the
    time-to-quality table; None when no run stored milestones."""
    from bench import quality_time as Q

    curves = Q.curves_for(store, main, labels)
    panels = Q.figure_panels(curves)
    if not panels:
        return None
    table = Q.quality_time_table(curves)
    return {"figure": _uri(F.quality_vs_time(panels, colors)),
            "methods": [c.label for c in curves],
            "budgets": [{"label": c.label, "steps": ", ".join(map(str, c.steps)), "n": len(c.image_ids),
                         "seconds": f"{c.seconds[-1]:.3g}"} for c in curves],
            "table": None if table is None else {
                # the budgets table above the figure says each run's budget once
                "methods": table.methods, "fast": Q.FAST, "slow": Q.SLOW,
                "notes": [n for n in table.notes if not n.startswith(Q.BUDGETS_NOTE)],
                "rows": [{"target": r["target"].name, "value": f"{r['target'].value:.4g}",
                          "cells": [table.cell(r, m, budgets_shown=True) for m in table.methods],
                          "speedup": table.speedup_text(r)} for r in table.rows]}}


def _claims(store: Store, runs: Sequence[dict[str, Any]], data: dict[str, T.RunMetrics]) -> dict | None:
    """The paper's claims as verdicts on this group's runs (``bench claims``), and the short block of
    verdicts that leads the page; None when no claim has both arms here."""
    from bench import claims_store as CS

    results = CS.judge_store(store, runs=runs, n_boot=1000)
    if all(r.reason and r.reason.startswith("no complete run") for r in results):
        return None
    rows = CS.display_rows(results)
    lead = [{"verdict": r.verdict, "statement": r.claim.statement, "source": r.claim.source, "words": row["words"],
             "controls": _control_levels(data.values(), r.claim.metric)}
            for r, row in zip(results, rows) if r.interval is not None]
    return {"rows": rows, "lead": lead, "not_judged": [r.claim.key for r in results if r.interval is None],
            "notes": CS.NOTES + ["the report uses 1000 resamples; `bench claims` 2000 by default"],
            "method": "Each claim of the paper (PAPER.md) with the two numbers it compares, their difference "
                      "and its 95% interval; 'not judged' says why a claim has no verdict here."}


def _control_levels(data: Iterable[T.RunMetrics], metric: str) -> str | None:
    """The levels of ``metric`` in the reference rows (controls) this group holds -- G samples, and any
    other reference method the store has (``tables.REFERENCE_METHODS``) -- e.g. "G samples (reference)
    14.50"; None when there is none, so the verdict block shows controls exactly when the store has them."""
    levels = [f"{ref.label_for([metric])} {T.fmt_number(d.cell(metric).value)}"
              for d in data if (ref := T.REFERENCE_METHODS.get(d.run["method"])) is not None
              and ref.shows(metric) and d.cell(metric).value is not None]
    return "; ".join(levels) or None


def _scatter(t1: T.Table, colors: dict[str, str]) -> str | None:
    # The registry's scatter panels present in the table, lowest rank first: the FID-like column (the
    # paper's Pareto view), then reconstruction error.
    rank = {m.name: m.scatter_rank for m in registry.all_metrics(scatter_rank=True)}
    quality = sorted((c for c in t1.columns if c.metric in rank), key=lambda c: rank[c.metric])
    speed = registry.speed_metric()
    panels = []
    for col in quality[:2]:
        points = [F.Point(r.label, r.cells[speed].value, r.cells[col.metric].value)
                  for r in t1.rows
                  if r.cells[speed].value and r.cells[speed].value > 0
                  and r.cells[col.metric].value is not None]
        if points:
            panels.append((col.label, points))
    return _uri(F.runtime_quality(panels, colors)) if panels else None


def _tile(images: _Images, rel: str | None, alt: str, missing: str) -> dict[str, Any]:
    if rel is None:
        return {"src": None, "alt": alt, "note": missing}
    src, why = images.get(rel)
    return {"src": src, "alt": alt, "note": why}


def _grid(store: Store, images: _Images, main: Sequence[dict[str, Any]], labels: dict[str, str]) -> dict | None:
    inputs: dict[str, tuple[int, str]] = {}
    recons: dict[str, dict[str, str]] = {}
    order: dict[str, int] = {}
    for run in main:
        for a in store.artifacts(run["run_id"], "input"):
            image_id = str(a["meta"].get("image_id", a["path"]))
            inputs.setdefault(image_id, a["path"])
            order.setdefault(image_id, int(a["meta"].get("idx", len(order))))
        rec = {}
        for a in store.artifacts(run["run_id"], "recon"):
            image_id = str(a["meta"].get("image_id", a["path"]))
            rec[image_id] = a["path"]
            order.setdefault(image_id, int(a["meta"].get("idx", len(order))))
        recons[run["run_id"]] = rec
    with_recon = {i for rec in recons.values() for i in rec}
    chosen = sorted((i for i in order if i in with_recon), key=lambda i: (order[i], i))[:GRID_IMAGES]
    if not chosen:
        return None
    rows = [{"label": "input", "tiles": [_tile(images, inputs.get(i), f"input {i}", "no input stored")
                                          for i in chosen]}]
    for run in main:
        failed = {im["image_id"]: im["reason"] for im in store.images(run["run_id"]) if im["status"] == "failed"}
        tiles = []
        for i in chosen:
            missing = f"failed: {failed[i]}" if i in failed else "no reconstruction stored"
            tiles.append(_tile(images, recons[run["run_id"]].get(i), f"{labels[run['run_id']]} {i}", missing))
        rows.append({"label": labels[run["run_id"]], "tiles": tiles})
    return {"image_ids": chosen, "rows": rows}


def _pr(store: Store, data: Sequence[T.RunMetrics], labels: dict[str, str], colors: dict[str, str]) -> dict | None:
    curves = {d.run["run_id"]: store.curves(d.run["run_id"]) for d in data}
    attrs: list[str] = []
    for c in curves.values():
        attrs += [name[3:] for name in c if name.startswith("pr/") and name[3:] not in attrs]
    attrs.sort(key=lambda a: (ATTRIBUTE_ORDER.index(a) if a in ATTRIBUTE_ORDER else len(ATTRIBUTE_ORDER), a))
    # the attribute table's columns: each attribute's AP, their mean, and beside them the decodable AP (a
    # probe on the method's own codes): is an attribute lost, or encoded off G's boundary?
    ap_metrics = T.present_metrics(data, "attributes", ATTRIBUTE_ORDER)
    if not attrs and not ap_metrics:
        return None
    panels, sources = [], {}
    for attr in attrs:
        lines = []
        for d in data:
            c = curves[d.run["run_id"]].get(f"pr/{attr}")
            if not c or not c.get("precision"):
                continue
            lines.append(F.Curve(labels[d.run["run_id"]], c["precision"], c["recall"], c.get("ap")))
            if c.get("label_source"):
                sources.setdefault(attr, []).append(str(c["label_source"]))
        panels.append((attr, lines))
    figure = _uri(F.pr_curves(panels, colors)) if panels else None
    table = T.build_table("Attribute AP of inverted codes", data, ap_metrics, labels) if ap_metrics else None
    if table is not None:
        table.notes += T.ap_diagnosis(table)
    return {"figure": figure, "table": table,
            "sources": [(a, ", ".join(dict.fromkeys(s))) for a, s in sources.items()]}


def _interp(store: Store, images: _Images, data: Sequence[T.RunMetrics], labels: dict[str, str]) -> dict | None:
    names = []
    if any((e := registry.find(n)) is not None and e.table == "interpolation" for d in data for n in d.metrics):
        names = T.table_metrics(data, "interpolation")
    table = T.build_table("Table 2: interpolation", data, names, labels) if names else None
    pairs: dict[tuple[str, ...], dict[str, Any]] = {}
    for d in data:
        for a in store.artifacts(d.run["run_id"], "interp_strip"):
            pair = tuple(str(p) for p in a["meta"].get("pair", [a["path"]]))
            entry = pairs.setdefault(pair, {"pair": pair, "steps": a["meta"].get("steps"),
                                            "layout": a["meta"].get("layout"), "rows": []})
            entry["rows"].append({"label": labels[d.run["run_id"]],
                                  **_tile(images, a["path"], f"{labels[d.run['run_id']]} interpolation", "")})
    strips = list(pairs.values())[:INTERP_PAIRS]
    if table is None and not strips:
        return None
    return {"table": table, "strips": strips}


def _edits(store: Store, images: _Images, data: Sequence[T.RunMetrics], labels: dict[str, str]) -> dict | None:
    names = T.present_metrics(data, "manipulation", ATTRIBUTE_ORDER)
    table = T.build_table("Manipulation: success and preservation", data, names, labels) if names else None
    by_attr: dict[str, dict[str, dict[str, Any]]] = {}
    for d in data:
        ref = T.REFERENCE_METHODS.get(d.run["method"])
        if ref is not None and not any(ref.shows(n) for n in registry.names(table="manipulation")):
            continue  # a control whose edits mean nothing (unrelated codes) shows no strips either
        for a in store.artifacts(d.run["run_id"], "edit_strip"):
            attr = str(a["meta"].get("attribute", "?"))
            image_id = str(a["meta"].get("image_id", a["path"]))
            item = by_attr.setdefault(attr, {}).setdefault(image_id, {
                "image_id": image_id, "rows": [], "alphas": a["meta"].get("alphas"),
                "alpha_unit": a["meta"].get("alpha_unit"), "layout": a["meta"].get("layout")})
            item["rows"].append({"label": labels[d.run["run_id"]],
                                 **_tile(images, a["path"], f"{labels[d.run['run_id']]} {attr} edit", "")})
    attrs = sorted(by_attr, key=lambda a: (ATTRIBUTE_ORDER.index(a) if a in ATTRIBUTE_ORDER else 99, a))
    strips = []
    for attr in attrs:
        items = list(by_attr[attr].values())[:EDIT_IMAGES]
        for item in items:
            alphas = item["alphas"]
            item["alphas"] = ", ".join(f"{a:g}" if isinstance(a, (int, float)) else str(a) for a in alphas) \
                if isinstance(alphas, list) else None
        strips.append({"attribute": attr, "images": items})
    if table is None and not strips:
        return None
    return {"table": table, "strips": strips}


def _sweeps(sel: T.Selection, runs: Sequence[dict[str, Any]], data: dict[str, T.RunMetrics]) -> list[dict]:
    out = []
    for sweep in sel.sweeps:
        param = sweep["param"]
        members = [r for r in runs if r.get("sweep_id") == sweep["sweep_id"]]
        if not members:
            continue
        members.sort(key=lambda r: (r["method"], _num_key(r["params"].get(param))))
        methods = list(dict.fromkeys(r["method"] for r in members))
        value_text = {r["run_id"]: T.short_value(r["params"].get(param)) for r in members}
        labels = {r["run_id"]: (f"{r['method']}, " if len(methods) > 1 else "") + f"{param}={value_text[r['run_id']]}"
                  for r in members}
        member_data = [data[r["run_id"]] for r in members]
        metrics = [m for m in registry.names(sweep=True) if any(d.has(m) for d in member_data)]
        table = T.build_table(f"Sweep of {param}", member_data, metrics, labels, key=param)
        xs = [(m, T.metric_label(m)) for m in registry.names(sweep="x") if m in metrics]
        ys = [(m, T.metric_label(m)) for m in registry.names(sweep="y") if m in metrics]
        figure = None
        if xs and ys:
            series = []
            for method in methods:
                mdata = [d for d in member_data if d.run["method"] == method]
                points = {(x, y): [(d.cell(x).value, d.cell(y).value) for d in mdata] for x, _ in xs for y, _ in ys}
                series.append(F.SweepSeries(method, [value_text[d.run["run_id"]] for d in mdata], points))
            figure = _uri(F.sweep_tradeoff(param, xs, ys, series, {m: F.color(i) for i, m in enumerate(methods)}))
        out.append({"sweep_id": sweep["sweep_id"], "param": param, "methods": ", ".join(methods),
                    "value_list": ", ".join(T.short_value(v) for v in sweep["values"]),
                    "missing": [T.short_value(v) for v in sweep["values"]
                                if not any(_same(r["params"].get(param), v) for r in members)],
                    "table": table, "figure": figure})
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
