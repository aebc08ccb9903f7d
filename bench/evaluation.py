"""Turns a method's codes into stored results: per-image rows as batches finish, set-level metrics at the end.

Only rank 0 of a run uses this. Which metrics are computable depends on what exists: the ImageNet
metrics (``lpips``, ``fid``) need their weight files; the domain metrics (``dpips``, ``fid_domain``) need
a bundle with an attribute classifier. Whatever cannot be computed is stored as *unavailable* with the
reason, never replaced silently by something else.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch

from bench import defaults, metrics as M
from bench.artifacts import safe_name, save_atomic, save_png
from bench.store import ImageRow, MetricRow, Store

PER_IMAGE = ("mse", "psnr", "dpips", "lpips")
# fid_domain's PCA is fitted on training images from this index on: disjoint from the floor's reference
# set (the first N training images) and from the test split.
FIT_OFFSET = 40_000


class Evaluator:
    def __init__(self, bundle: Any, opts: Any, device: torch.device, results_dir: Path):
        self.bundle = bundle
        self.opts = opts
        self.device = device
        self.results_dir = Path(results_dir)
        self.cache = M.StatsCache(self.results_dir / "cache" / "stats")
        self.unavailable: dict[str, str] = {}
        try:
            self.lpips = M.LPIPSMetric(device=device)
        except M.MetricUnavailable as exc:
            self.lpips = None
            self.unavailable["lpips"] = exc.reason
        self._inception: Any = None
        classifier = bundle.classifier if bundle.has("classifier") else None
        self.classifier = classifier
        if classifier is None:
            reason = f"bundle {bundle.name} has no attribute classifier (its features define the domain metric)"
            self.unavailable["dpips"] = reason
            self.unavailable["fid_domain"] = reason
        self._boundaries: dict | None = None
        self._references: dict[int, torch.Tensor | None] = {}
        self.domain_features = self._domain_features() if classifier is not None else None

    def _domain_features(self) -> "M.DomainFeatures":
        """fid_domain's feature map: classifier.embed reduced by a PCA fitted on real training images
        disjoint from the floor's reference set (see bench.metrics.domain_features)."""
        from idinvert.domains.synthetic_faces import SyntheticFaces

        train = SyntheticFaces(resolution=self.bundle.resolution).split("train", FIT_OFFSET + M.DEFAULT_FIT_IMAGES)
        fit = train.load(list(range(FIT_OFFSET, FIT_OFFSET + M.DEFAULT_FIT_IMAGES)))
        return M.DomainFeatures(lambda x: self.classifier.embed(x.to(self.device)), fit)

    # -- helpers ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, codes: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        bs = batch_size or self.opts.batch_size
        out = [self.bundle.generator.synthesis(codes[i:i + bs].to(self.device)).clamp(-1, 1).float().cpu()
               for i in range(0, codes.shape[0], bs)]
        return torch.cat(out) if out else torch.empty(0)

    def inception(self) -> Any:
        if self._inception is None and "fid" not in self.unavailable:
            try:
                self._inception = M.InceptionFeatures(device=self.device)
            except M.MetricUnavailable as exc:
                self.unavailable["fid"] = exc.reason
        return self._inception

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.domain_features(images)

    # -- per batch ----------------------------------------------------------------------------------------
    def store_batch(self, store: Store, run_id: str, part: dict[str, Any], ids: Sequence[str],
                    dataset: Any) -> None:
        indices: list[int] = part["indices"]
        codes, failed = part["codes"], part["failed"]
        per_image_seconds = part["seconds"] / max(len(indices), 1)
        images = dataset.load(indices)
        recons = self.reconstruct(codes)
        values: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            values["mse"] = M.mse(images, recons)
            values["psnr"] = M.psnr(images, recons)
            if self.classifier is not None:
                values["dpips"] = M.dpips(images.to(self.device), recons.to(self.device),
                                          self.classifier.features).cpu()
            if self.lpips is not None:
                values["lpips"] = self.lpips(images, recons)
        rows = []
        for j, idx in enumerate(indices):
            if bool(failed[j]):
                rows.append(ImageRow(ids[idx], idx, "failed", part["reasons"][j] or "inversion failed",
                                     per_image_seconds, {}))
            else:
                rows.append(ImageRow(ids[idx], idx, "ok", None, per_image_seconds,
                                     {k: float(v[j]) for k, v in values.items()}))
        rel_dir = Path("runs") / run_id
        codes_rel = rel_dir / "codes" / f"{indices[0]:06d}-{len(indices)}.pt"
        save_atomic({"indices": indices, "ids": [ids[i] for i in indices], "codes": codes, "failed": failed},
                     self.results_dir / codes_rel)
        artifacts = [("codes", str(codes_rel), {"n": len(indices)})]
        for j, idx in enumerate(indices):
            if idx < defaults.GRID_IMAGES:
                for kind, img in (("input", images[j]), ("recon", recons[j])):
                    rel = rel_dir / kind / f"{idx:04d}-{safe_name(ids[idx])}.png"
                    save_png(img, self.results_dir / rel)
                    artifacts.append((kind, str(rel), {"image_id": ids[idx], "idx": idx}))
        store.add_images(run_id, rows, artifacts)

    # -- per run ------------------------------------------------------------------------------------------
    def load_codes(self, store: Store, run_id: str, ok_indices: set[int]) -> dict[int, torch.Tensor]:
        codes: dict[int, torch.Tensor] = {}
        for art in store.artifacts(run_id, "codes"):
            blob = torch.load(self.results_dir / art["path"], map_location="cpu", weights_only=True)
            for j, idx in enumerate(blob["indices"]):
                if idx in ok_indices:
                    codes[idx] = blob["codes"][j].float()
        return codes

    def finish_run(self, store: Store, run_id: str, method: Any, dataset: Any, ids: Sequence[str]) -> None:
        rows = store.images(run_id)
        ok = [r for r in rows if r["status"] == "ok"]
        n_failed = len(rows) - len(ok)
        result: list[MetricRow] = []
        curves: dict[str, Any] = {}
        base = {"n": len(ok), "n_failed": n_failed}

        for name in PER_IMAGE:
            vals = [r["metrics"].get(name) for r in ok if r["metrics"].get(name) is not None]
            if name in self.unavailable:
                result.append(MetricRow.unavailable(name, self.unavailable[name]))
            elif vals:
                m, sd, ci = _mean_std_ci(vals)
                result.append(MetricRow(name, m, detail={**base, "std": sd, "ci95": ci}))
            else:
                result.append(MetricRow.unavailable(name, "no successfully inverted image", **base))
        secs = [r["seconds"] for r in rows if r["seconds"] is not None]
        result.append(MetricRow("seconds_per_image", sum(secs) / len(secs) if secs else None,
                                detail={"device": str(self.device), "threads": torch.get_num_threads(),
                                        "batch_size": self.opts.batch_size, "timed": "invert() only, warm-up excluded",
                                        "n": len(secs)}))

        ok_idx = sorted(r["idx"] for r in ok)
        if len(ok_idx) >= 2:
            code_map = self.load_codes(store, run_id, set(ok_idx))
            ok_idx = [i for i in ok_idx if i in code_map]
            codes = torch.stack([code_map[i] for i in ok_idx])
            recons = self.reconstruct(codes)
            reals = dataset.load(ok_idx)
            result += self._set_metrics(recons, reals, dataset, len(ok_idx))
            if self.opts.semantic:
                sem_rows, sem_curves, sem_artifacts = self._semantic(codes, reals, ok_idx, ids, dataset, run_id)
                result += sem_rows
                curves.update(sem_curves)
                if sem_artifacts:
                    store.add_artifacts(run_id, sem_artifacts)
        else:
            for name in ("fid_domain", "fid", "swd"):
                result.append(MetricRow.unavailable(name, "fewer than 2 successfully inverted images"))
        store.complete_run(run_id, result, curves)

    def _set_metrics(self, recons: torch.Tensor, reals: torch.Tensor, dataset: Any, n: int) -> list[MetricRow]:
        out: list[MetricRow] = []
        reference = self._reference(dataset, n)
        # Fréchet distance in the domain classifier's features, with the real-vs-real floor beside it.
        if self.classifier is not None:
            real_emb = self._embed(reals)
            fake_emb = self._embed(recons)
            value = M.frechet_distance(M.feature_stats(fake_emb), M.feature_stats(real_emb))
            floor = self._floor(real_emb, reference, self._embed)
            out.append(MetricRow("fid_domain", value, detail={"n": n, "dims": int(real_emb.shape[1]),
                                                              "features": self.domain_features.description,
                                                              **floor}))
        else:
            out.append(MetricRow.unavailable("fid_domain", self.unavailable["fid_domain"]))
        inception = self.inception()
        if inception is not None:
            real_f = M.extract_features(inception, reals, 50)
            fake_f = M.extract_features(inception, recons, 50)
            value = M.frechet_distance(M.feature_stats(fake_f), M.feature_stats(real_f))
            floor = self._floor(real_f, reference, lambda x: M.extract_features(inception, x, 50))
            out.append(MetricRow("fid", value, detail={"n": n, "dims": int(real_f.shape[1]), **floor}))
        else:
            out.append(MetricRow.unavailable("fid", self.unavailable["fid"]))
        sw = M.swd(recons, reals, seed=self.opts.seed)
        out.append(MetricRow("swd", sw.mean, detail={"n": n, "levels": {str(k): v for k, v in sw.levels.items()},
                                                      "unit": "x1e3"}))
        return out

    def _reference(self, dataset: Any, n: int) -> torch.Tensor | None:
        """The floor's disjoint real set of size n, rendered once per run of the harness, not per method."""
        from bench.runner import real_reference

        if n not in self._references:
            self._references[n] = real_reference(self.opts, self.bundle, n)
        return self._references[n]

    @staticmethod
    def _floor(real_feats: torch.Tensor, reference: torch.Tensor | None, extract) -> dict[str, Any]:
        """Real-vs-real Fréchet distance at the evaluated size: the test images against a disjoint real set
        of the same size (embedded domain), or two halves of the test set (user folders).
        extract: images [N, 3, H, W] -> features [N, K]."""
        if reference is not None:
            ref = extract(reference[: real_feats.shape[0]])
            value = M.frechet_distance(M.feature_stats(real_feats), M.feature_stats(ref))
            return {"floor": value, "floor_n": int(ref.shape[0]), "floor_kind": "test images vs a disjoint real set"}
        if real_feats.shape[0] < 4:
            return {"floor": None, "floor_kind": "too few images for a floor"}
        fl = M.real_floor(real_feats, real_feats.shape[0] // 2)
        return {"floor": fl.value, "floor_n": fl.n, "floor_kind": "two halves of the test set (half size)"}

    def _semantic(self, codes, reals, ok_idx, ids, dataset, run_id):
        from bench.semantic import semantic_for_run

        return semantic_for_run(self, codes, reals, ok_idx, ids, dataset, run_id)


def _mean_std_ci(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """Mean, sample std and the half-width of a normal 95% CI of the mean (None below two values)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, None, None
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
    return m, sd, 1.96 * sd / math.sqrt(len(vals))
