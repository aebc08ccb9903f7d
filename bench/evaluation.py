"""Turns a method's codes into stored results, driven by the metric registry.

Per batch: reconstructions are decoded once (with the method's own per-image decoder when it returns
one; those decoders are kept for the run's semantic stage, see ``run_decoders``), every ``per_image`` metric of the registry is computed on a batch context, and the rows, the codes
and the reconstructions are stored. At the end of a run: a set context with the run's stored
reconstructions, and every ``set`` and (unless ``--no-semantic``) ``semantic`` metric of the registry.
Whatever cannot be computed is stored as *unavailable* with the reason, never replaced by something else.

Which metrics an anytime run follows at its milestones is the registry's word (``Metric.anytime``); each
metric function sees the context through ``MetricContext.for_metric`` (only what its ``needs`` declare).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from bench import defaults, metrics as M
from bench.artifacts import safe_name, save_atomic, save_png
from bench.metrics.context import EvalResources, MetricContext
from bench.metrics.errors import MetricUnavailable
from bench.metrics.rows import MetricRow
from bench.store import ImageRow, MilestoneRow, Store

# -- helpers -----------------------------------------------------------------------------------------------
def mean_std_ci(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """Mean, sample std and the half-width of a normal 95% CI of the mean (None below two values)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, None, None
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
    return m, sd, 1.96 * sd / math.sqrt(len(vals))


def compute(metric: M.Metric, ctx: MetricContext) -> list[MetricRow]:
    """Run one set / semantic metric function on ``ctx``: its rows, or one unavailable row with the reason."""
    try:
        out = metric.load()(ctx.for_metric(metric))
    except MetricUnavailable as exc:
        return [MetricRow.unavailable(metric.name, exc.reason)]
    if isinstance(out, MetricRow):
        return [out]
    if isinstance(out, list):
        return out
    return [MetricRow(metric.name, None if out is None else float(out), detail={"n": ctx.n})]


class Evaluator:
    """Rank 0's evaluation of every run of one harness run (one bundle, one device)."""

    def __init__(self, bundle: Any, opts: Any, device: torch.device, results_dir: Path):
        self.bundle = bundle
        self.opts = opts
        self.device = device
        self.results_dir = Path(results_dir)
        self.resources = EvalResources(bundle, opts, device, self.results_dir)
        self.unavailable: dict[str, str] = {}  # per-image metric -> why it has no values
        self._decoders: dict[str, dict[int, Any]] = {}  # run id -> image index -> its decoder

    @torch.no_grad()
    def reconstruct(self, codes: Tensor, decoders: Sequence[Any] | None = None) -> Tensor:
        """codes [N, L, D] -> images [N, 3, H, W] in [-1, 1] on the CPU, in batches of the run's size;
        with ``decoders`` (one generator per image, e.g. PTI's tuned G) image i decodes with its own."""
        if decoders is not None:
            return torch.cat([g.synthesis(c[None].to(self.device)).clamp(-1, 1).float().cpu()
                              for g, c in zip(decoders, codes)])
        bs = self.opts.batch_size
        out = [self.bundle.generator.synthesis(codes[i:i + bs].to(self.device)).clamp(-1, 1).float().cpu()
               for i in range(0, codes.shape[0], bs)]
        return torch.cat(out) if out else torch.empty(0)

    # -- per batch ----------------------------------------------------------------------------------------
    def per_image_values(self, ctx: MetricContext, only: Sequence[str] | None = None) -> dict[str, Tensor]:
        values: dict[str, Tensor] = {}
        with torch.no_grad():
            for metric in M.all_metrics(level="per_image"):
                if only is not None and metric.name not in only:
                    continue
                try:
                    values[metric.name] = metric.load()(ctx.for_metric(metric))
                except MetricUnavailable as exc:
                    self.unavailable[metric.name] = exc.reason
        return values

    def store_batch(self, store: Store, run_id: str, part: dict[str, Any], ids: Sequence[str],
                    dataset: Any) -> None:
        indices: list[int] = part["indices"]
        failed = part["failed"]
        per_image_seconds = part["seconds"] / max(len(indices), 1)
        images = dataset.load(indices)
        recons = self.reconstruct(part["codes"], part.get("decoders"))
        ctx = MetricContext(self.resources, images, recons, part["codes"], list(indices),
                            [ids[i] for i in indices], dataset, run_id=run_id)
        values = self.per_image_values(ctx)
        rows = [ImageRow(ids[idx], idx, "failed", part["reasons"][j] or "inversion failed", per_image_seconds, {})
                if bool(failed[j]) else
                ImageRow(ids[idx], idx, "ok", None, per_image_seconds, {k: float(v[j]) for k, v in values.items()})
                for j, idx in enumerate(indices)]
        milestones = self.milestone_rows(part, ids, images, values, dataset)
        artifacts = self._save_batch(run_id, part, ids, images, recons)
        self._save_decoders(run_id, part)
        store.add_images(run_id, rows, artifacts, milestones)

    # -- anytime points -----------------------------------------------------------------------------------
    def milestone_rows(self, part: dict[str, Any], ids: Sequence[str], images: Tensor,
                       final_values: dict[str, Tensor], dataset: Any = None) -> list[MilestoneRow]:
        """One row per image and milestone (the per-image metrics the registry follows ``anytime``); a method without milestones is
        one point at its budget (``final_step``; 0 for an encoder) with the batch's own time. A milestone
        whose codes are the final codes reuses the batch's values instead of recomputing them."""
        indices = part["indices"]
        n = max(len(indices), 1)
        points = part.get("milestones") or [{"step": int(part.get("final_step") or 0), "seconds": part["seconds"],
                                             "codes": None, "failed": part["failed"]}]
        out: list[MilestoneRow] = []
        anytime = M.names(level="per_image", anytime=True)
        for m in points:
            if m["codes"] is None or torch.equal(m["codes"], part["codes"]):
                values = {k: v for k, v in final_values.items() if k in anytime}
            else:
                ctx = MetricContext(self.resources, images, self.reconstruct(m["codes"]), m["codes"],
                                    list(indices), [ids[i] for i in indices], dataset)
                values = self.per_image_values(ctx, anytime)
            for j, idx in enumerate(indices):
                failed = bool(m["failed"][j])
                out.append(MilestoneRow(ids[idx], idx, int(m["step"]), float(m["seconds"]) / n,
                                        "failed" if failed else "ok",
                                        {} if failed else {k: float(v[j]) for k, v in values.items()}))
        return out

    def load_milestone_codes(self, store: Store, run_id: str) -> dict[int, dict[int, tuple[Tensor, bool]]]:
        """step -> {image index -> (code at that step, failed by then)} from the run's codes files
        ({} for a run whose method kept no milestones)."""
        out: dict[int, dict[int, tuple[Tensor, bool]]] = {}
        for art in store.artifacts(run_id, "codes"):
            blob = torch.load(self.results_dir / art["path"], map_location="cpu", weights_only=True)
            ms = blob.get("milestones")
            if not ms:
                continue
            for k, step in enumerate(ms["steps"]):
                at = out.setdefault(int(step), {})
                for j, idx in enumerate(blob["indices"]):
                    at[int(idx)] = (ms["codes"][k][j].float(), bool(ms["failed"][k][j]))
        return out

    def milestone_set_metrics(self, store: Store, run_id: str, dataset: Any, ids: Sequence[str],
                              final_ctx: MetricContext, final_rows: Sequence[MetricRow]
                              ) -> list[tuple[int, MetricRow]]:
        """The set-level metrics the registry follows ``anytime``, at every milestone step of the run: the
        final step (codes equal to the run's) copies the run's own rows; earlier steps are computed on the
        images not failed by then."""
        wanted = [m for m in M.all_metrics(anytime=True) if m.fn is not None
                  and (m.level == "set" or (m.level == "semantic" and self.opts.semantic))]
        final = {r.name: r for r in final_rows}
        steps = self.load_milestone_codes(store, run_id)
        final_step = max(steps) if steps else None
        out: list[tuple[int, MetricRow]] = []
        if not steps:  # one point: the run itself
            one = {r["step"] for r in store.milestones(run_id)}
            for step in sorted(one):
                out += [(step, final[m.name]) for m in wanted if m.name in final]
            return out
        labels = getattr(dataset, "labels", None)
        names = list(getattr(dataset, "attributes", None) or self.bundle.attributes)
        for step in sorted(steps):
            if step == final_step:
                out += [(step, final[m.name]) for m in wanted if m.name in final]
                continue
            at = steps[step]
            ok = [i for i in sorted(at) if not at[i][1]]
            if len(ok) < 2:
                out += [(step, MetricRow.unavailable(m.name, "fewer than 2 images not failed by this step"))
                        for m in wanted]
                continue
            codes = torch.stack([at[i][0] for i in ok])
            ctx = MetricContext(self.resources, dataset.load(ok), self.reconstruct(codes), codes, ok,
                                [ids[i] for i in ok], dataset, labels=None if labels is None else labels[ok],
                                label_names=names if labels is not None else [],
                                label_source=dataset.label_source if labels is not None else "none",
                                run_id=run_id)
            for m in wanted:
                rows = compute(m, ctx)
                out += [(step, r) for r in rows if r.name == m.name]
        return out

    # -- per-image decoders (PTI's tuned generators) --------------------------------------------------------
    def _tuned_dir(self, run_id: str) -> Path:
        return self.results_dir / "runs" / run_id / "tuned"

    def _save_decoders(self, run_id: str, part: dict[str, Any]) -> None:
        """A batch's per-image decoders: kept in memory for the run's semantic stage and written (before
        the batch's rows, like its codes) to ``runs/<id>/tuned/`` so that a resumed run has them too.
        The folder is deleted when the run completes unless ``--keep-tuned``."""
        decoders = part.get("decoders")
        if decoders is None:
            return
        indices = part["indices"]
        self._decoders.setdefault(run_id, {}).update(zip(indices, decoders))
        first = decoders[0]
        if not (callable(getattr(first, "state", None)) and callable(getattr(type(first), "from_state", None))):
            return  # not serialisable: in memory only (a resumed run decodes those images with G)
        kind = f"{type(first).__module__}:{type(first).__qualname__}"
        save_atomic({"indices": list(indices), "kind": kind, "states": [d.state() for d in decoders]},
                    self._tuned_dir(run_id) / f"{indices[0]:06d}-{len(indices)}.pt")

    def run_decoders(self, run_id: str, indices: Sequence[int]) -> list[Any] | None:
        """The per-image decoders of ``indices`` (None when the run's method has none); from memory, else
        rebuilt from ``runs/<id>/tuned/``. Raises when some images have them and others do not."""
        have = dict(self._decoders.get(run_id, {}))
        folder = self._tuned_dir(run_id)
        if folder.is_dir() and any(i not in have for i in indices):
            import importlib

            for path in sorted(folder.glob("*.pt")):
                blob = torch.load(path, map_location="cpu", weights_only=True)
                module, _, qual = blob["kind"].partition(":")
                cls = getattr(importlib.import_module(module), qual)
                for idx, state in zip(blob["indices"], blob["states"]):
                    if idx not in have:
                        have[idx] = cls.from_state(state, self.bundle.generator)
        if not have:
            return None
        missing = [i for i in indices if i not in have]
        if missing:
            raise RuntimeError(f"run {run_id}: per-image decoders of {len(missing)} image(s) are missing "
                               f"(e.g. index {missing[0]}); rerun with --fresh")
        return [have[i] for i in indices]

    def _finish_decoders(self, store: Store, run_id: str) -> None:
        """After a run: keep the tuned weights as an artifact (--keep-tuned) or delete them."""
        self._decoders.pop(run_id, None)
        folder = self._tuned_dir(run_id)
        if not folder.is_dir():
            return
        if getattr(self.opts, "keep_tuned", False):
            store.add_artifacts(run_id, [("tuned_weights", str(p.relative_to(self.results_dir)),
                                          {"what": "per-image tuned generator weights (changes from G)"})
                                         for p in sorted(folder.glob("*.pt"))])
        else:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)

    def _save_batch(self, run_id: str, part: dict[str, Any], ids: Sequence[str], images: Tensor,
                    recons: Tensor) -> list[tuple[str, str, dict]]:
        """The batch's codes and reconstructions (one file, atomically) and the grid PNGs -> artifacts."""
        indices = part["indices"]
        rel_dir = Path("runs") / run_id
        codes_rel = rel_dir / "codes" / f"{indices[0]:06d}-{len(indices)}.pt"
        blob = {"indices": indices, "ids": [ids[i] for i in indices], "codes": part["codes"],
                "failed": part["failed"], "recons": recons}
        if part.get("milestones"):
            ms = part["milestones"]
            blob["milestones"] = {"steps": [m["step"] for m in ms], "seconds": [m["seconds"] for m in ms],
                                  "codes": torch.stack([m["codes"] for m in ms]),
                                  "failed": torch.stack([torch.as_tensor(m["failed"]) for m in ms])}
        save_atomic(blob, self.results_dir / codes_rel)
        artifacts = [("codes", str(codes_rel), {"n": len(indices)})]
        for j, idx in enumerate(indices):
            if idx < defaults.GRID_IMAGES:
                for kind, img in (("input", images[j]), ("recon", recons[j])):
                    rel = rel_dir / kind / f"{idx:04d}-{safe_name(ids[idx])}.png"
                    save_png(img, self.results_dir / rel)
                    artifacts.append((kind, str(rel), {"image_id": ids[idx], "idx": idx}))
        return artifacts

    # -- per run ------------------------------------------------------------------------------------------
    def load_outputs(self, store: Store, run_id: str, ok_indices: set[int]) -> dict[int, tuple[Tensor, Tensor | None]]:
        """index -> (code, stored reconstruction or None for files written before reconstructions were)."""
        out: dict[int, tuple[Tensor, Tensor | None]] = {}
        for art in store.artifacts(run_id, "codes"):
            blob = torch.load(self.results_dir / art["path"], map_location="cpu", weights_only=True)
            for j, idx in enumerate(blob["indices"]):
                if idx in ok_indices:
                    recon = blob["recons"][j] if "recons" in blob else None
                    out[idx] = (blob["codes"][j].float(), recon)
        return out

    def run_context(self, store: Store, run_id: str, dataset: Any, ids: Sequence[str]) -> MetricContext:
        """The set-level context of a run: its successfully inverted images, codes and reconstructions."""
        rows = store.images(run_id)
        ok_idx = sorted(r["idx"] for r in rows if r["status"] == "ok")
        outputs = self.load_outputs(store, run_id, set(ok_idx))
        ok_idx = [i for i in ok_idx if i in outputs]
        codes = torch.stack([outputs[i][0] for i in ok_idx]) if ok_idx else None
        decoders = self.run_decoders(run_id, ok_idx)
        if ok_idx and all(outputs[i][1] is not None for i in ok_idx):
            recons = torch.stack([outputs[i][1] for i in ok_idx])
        else:
            recons = self.reconstruct(codes, decoders) if codes is not None else torch.empty(0)
        images = dataset.load(ok_idx) if ok_idx else torch.empty(0)
        labels = getattr(dataset, "labels", None)
        names = list(getattr(dataset, "attributes", None) or self.bundle.attributes)
        return MetricContext(self.resources, images, recons, codes, ok_idx, [ids[i] for i in ok_idx], dataset,
                             rows=rows, labels=None if labels is None else labels[ok_idx],
                             label_names=names if labels is not None else [],
                             label_source=dataset.label_source if labels is not None else "none",
                             run_id=run_id, decoders=decoders)

    def per_image_summary(self, ctx: MetricContext) -> list[MetricRow]:
        ok = [r for r in ctx.rows if r["status"] == "ok"]
        base = {"n": len(ok), "n_failed": len(ctx.rows) - len(ok)}
        out = []
        for metric in M.all_metrics(level="per_image"):
            vals = [r["metrics"][metric.name] for r in ok if r["metrics"].get(metric.name) is not None]
            if vals:
                m, sd, ci = mean_std_ci(vals)
                out.append(MetricRow(metric.name, m, detail={**base, "std": sd, "ci95": ci}))
            elif not ok:
                out.append(MetricRow.unavailable(metric.name, "no successfully inverted image", **base))
            else:
                out.append(MetricRow.unavailable(metric.name, self._reason(metric, ctx)))
        return out

    def _reason(self, metric: M.Metric, ctx: MetricContext) -> str:
        """Why a per-image metric has no stored value (asked again on one image after a resume)."""
        if metric.name not in self.unavailable and ctx.n:
            self.per_image_values(MetricContext(self.resources, ctx.images[:1], ctx.recons[:1]))
        return self.unavailable.get(metric.name, "no value was stored")

    def finish_run(self, store: Store, run_id: str, method: Any, dataset: Any, ids: Sequence[str]) -> None:
        ctx = self.run_context(store, run_id, dataset, ids)
        result = self.per_image_summary(ctx)
        levels = ("set", "semantic") if self.opts.semantic else ("set",)
        for metric in (m for m in M.all_metrics() if m.level in levels and m.fn is not None):
            if metric.needs != ("timing",) and ctx.n < 2:
                result.append(MetricRow.unavailable(metric.name, "fewer than 2 successfully inverted images"))
                continue
            result += compute(metric, ctx)
        milestone_rows = self.milestone_set_metrics(store, run_id, dataset, ids, ctx, result)
        if ctx.artifacts:
            store.add_artifacts(run_id, ctx.artifacts)
        store.complete_run(run_id, result, ctx.curves, milestone_rows)
        self._finish_decoders(store, run_id)
