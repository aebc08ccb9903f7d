"""A results store filled with realistic fake runs through the Store API, so the report and the tables
can be tested without any model.

Four methods of the paper's Table 1, a lambda_dom sweep of idinvert (whose default value re-uses the main
run, as ``bench run`` then ``bench ablate`` does), one superseded older run, one run killed mid-way,
failed images, PR curves, input/reconstruction PNGs and interpolation/edit strips. ``hostile=True`` puts
HTML into every string a user can control (dataset, image ids, failure reasons, params).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.store import ImageRow, MetricRow, RunSpec, Store

ATTRIBUTES = ("age", "gender", "eyeglasses", "pose", "expression")
METHODS = ("encoder", "image2stylegan", "idinvert-encoder", "idinvert")
HOSTILE_ID = "<script>alert(1)</script>.png"
HOSTILE_REASON = "unreadable file <img src=x onerror=alert(2)>"
HOSTILE_PARAM = "<b>bold</b>"
SWEEP_VALUES = (0.0, 0.5, 2.0, 8.0)
RES = 32

# (mse, psnr, dpips, fid_domain, swd, seconds/image, interp_fid_domain, ap_mean, edit_success_mean)
QUALITY = {
    "encoder": (0.095, 16.2, 0.42, 38.0, 45.0, 0.0008, 44.0, 0.71, 0.62),
    "image2stylegan": (0.032, 20.9, 0.21, 22.0, 30.0, 2.4, 35.0, 0.66, 0.55),
    "idinvert-encoder": (0.071, 17.5, 0.33, 18.5, 28.0, 0.0009, 24.0, 0.83, 0.78),
    "idinvert": (0.036, 20.4, 0.19, 12.1, 21.0, 1.1, 16.0, 0.88, 0.84),
}
PARAMS = {
    "encoder": {},
    "image2stylegan": {"iterations": 100, "lr": 0.01},
    "idinvert-encoder": {},
    "idinvert": {"iterations": 100, "lr": 0.01, "lambda_dom": 2.0, "lambda_vgg": 5e-05},
}
LPIPS_REASON = ("torchvision AlexNet weights not found: put alexnet-owt-7be5be79.pth in "
                "$TORCH_HOME/hub/checkpoints/")
FID_REASON = ("pytorch-fid Inception weights not found: put pt_inception-2015-12-05-6726825d.pth in "
              "$TORCH_HOME/hub/checkpoints/")


@dataclass
class Fixture:
    results_dir: Path
    run_ids: dict[str, str]                  # method -> reported main run
    sweep_id: str
    sweep_run_ids: dict[float, str]          # lambda_dom -> run
    superseded_run_id: str
    incomplete_run_id: str
    values: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> metric -> stored value
    image_ids: list[str] = field(default_factory=list)


def _png(path: Path, width: int, height: int, seed: int) -> None:
    """A small deterministic striped image (stands in for a face)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 215, size=3)
    y, x = np.mgrid[0:height, 0:width]
    pattern = (x[..., None] * 3 + y[..., None] * np.arange(1, 4) * 2) % 40
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(((base + pattern) % 256).astype(np.uint8)).save(path)


def _pr_curve(ap: float, n: int = 21) -> dict[str, Any]:
    recall = [i / (n - 1) for i in range(n)]
    k = max(0.2, (1 - ap) * 6)  # higher ap -> precision stays high longer
    precision = [max(0.5, 1 - (1 - 0.5) * r ** (1 / k)) for r in recall]
    return {"precision": precision, "recall": recall, "ap": ap, "label_source": "renderer"}


def _spec(method: str, params: dict[str, Any], dataset: str, n_images: int, code_version: str) -> RunSpec:
    return RunSpec(method=method, params=params, bundle="synthetic-faces", bundle_fingerprint="fp-bundle-1",
                   dataset=dataset, dataset_fingerprint="fp-data-1", n_images=n_images, seed=0,
                   code_version=code_version)


def _begin(store: Store, spec: RunSpec, sweep_id: str | None = None) -> str:
    run_id, _ = store.begin_run(spec, torch_version="2.14.1", device="cpu", num_threads=2, sweep_id=sweep_id)
    return run_id


def _fill_run(store: Store, root: Path, run_id: str, method: str, q: tuple, image_ids: list[str], *,
              imagenet: bool, hostile: bool, salt: int) -> dict[str, float]:
    mse, psnr, dpips, fid_d, swd, spi, ifid, ap_mean, es_mean = q
    rng = random.Random(salt)
    rows, artifacts = [], []
    for idx, image_id in enumerate(image_ids):
        safe = f"img-{idx:05d}"
        inp = f"artifacts/{run_id}/input/{safe}.png"
        _png(root / inp, RES, RES, seed=idx)
        artifacts.append(("input", inp, {"image_id": image_id, "idx": idx}))
        failed = (method == "image2stylegan" and idx == 2) or (hostile and method == "encoder" and idx == 3)
        if failed:
            reason = HOSTILE_REASON if hostile and method == "encoder" else "non-finite loss (NaN) at iteration 37"
            rows.append(ImageRow(image_id, idx, status="failed", reason=reason))
            continue
        rec = f"artifacts/{run_id}/recon/{safe}.png"
        _png(root / rec, RES, RES, seed=idx * 7 + salt)
        artifacts.append(("recon", rec, {"image_id": image_id, "idx": idx}))
        jitter = lambda v: v * (1 + rng.uniform(-0.2, 0.2))  # noqa: E731
        per_image = {"mse": jitter(mse), "psnr": jitter(psnr), "dpips": jitter(dpips)}
        if imagenet:
            per_image["lpips"] = jitter(dpips * 0.8)
        rows.append(ImageRow(image_id, idx, seconds=spi, metrics=per_image))
    store.add_images(run_id, rows, artifacts)

    strips = []
    for p, (a, b) in enumerate([(0, 1), (2, 3)]):
        path = f"artifacts/{run_id}/interp/pair-{p}.png"
        _png(root / path, RES * 5, RES, seed=100 + p + salt)
        strips.append(("interp_strip", path, {"pair": [image_ids[a], image_ids[b]], "steps": 5,
                                              "layout": "real A | decoded path A..B | real B"}))
    for attr in ATTRIBUTES:
        for idx in (0, 1):
            path = f"artifacts/{run_id}/edit/{attr}-{idx}.png"
            _png(root / path, RES * 5, RES, seed=200 + idx + salt + len(attr))
            strips.append(("edit_strip", path, {"attribute": attr, "image_id": image_ids[idx],
                                                "alphas": [-3.0, -1.5, 0.0, 1.5, 3.0], "alpha_unit": "std",
                                                "layout": "real | edits at alphas (0 = the reconstruction)"}))
    strips.append(("codes", f"artifacts/{run_id}/codes.pt", {}))
    store.add_artifacts(run_id, strips)

    n_ok = sum(r.status == "ok" for r in rows)
    values = {"mse": mse, "psnr": psnr, "dpips": dpips, "fid_domain": fid_d, "swd": swd,
              "seconds_per_image": spi, "interp_fid_domain": ifid, "interp_swd": swd * 1.3,
              "ap_mean": ap_mean, "edit_success_mean": es_mean, "edit_preservation": 0.7 + es_mean / 5,
              "edit_dpips": 0.3 - es_mean / 10}
    metrics = [
        MetricRow("mse", mse, detail={"std": mse / 4, "ci95": mse / 8, "n": n_ok}),
        MetricRow("psnr", psnr, detail={"std": 1.3, "ci95": 0.8, "n": n_ok}),
        MetricRow("dpips", dpips, detail={"std": dpips / 5, "ci95": dpips / 10, "n": n_ok}),
        MetricRow("fid_domain", fid_d, detail={"floor": 3.2, "floor_kind": "two halves of the test set",
                                               "n": n_ok}),
        MetricRow("swd", swd, detail={"n": n_ok}),
        MetricRow("seconds_per_image", spi, detail={"device": "cpu", "num_threads": 2}),
        MetricRow("interp_fid_domain", ifid, detail={"floor": 3.2}),
        MetricRow("interp_swd", swd * 1.3),
        MetricRow("ap_mean", ap_mean),
        MetricRow("edit_success_mean", es_mean),
        MetricRow("edit_preservation", values["edit_preservation"]),
        MetricRow("edit_dpips", values["edit_dpips"]),
    ]
    if imagenet:
        values.update(lpips=dpips * 0.8, fid=fid_d * 1.5, interp_fid=ifid * 1.5)
        metrics += [MetricRow("lpips", dpips * 0.8, detail={"std": 0.02}),
                    MetricRow("fid", fid_d * 1.5, detail={"floor": 5.0}),
                    MetricRow("interp_fid", ifid * 1.5)]
    else:
        metrics += [MetricRow.unavailable("lpips", LPIPS_REASON), MetricRow.unavailable("fid", FID_REASON),
                    MetricRow.unavailable("interp_fid", FID_REASON)]
    curves = {}
    for i, attr in enumerate(ATTRIBUTES):
        ap = min(0.99, ap_mean + (i - 2) * 0.03)
        es = min(1.0, es_mean + (2 - i) * 0.02)
        values[f"ap_{attr}"], values[f"edit_success_{attr}"] = ap, es
        metrics += [MetricRow(f"ap_{attr}", ap, detail={"label_source": "renderer"}),
                    MetricRow(f"edit_success_{attr}", es)]
        curves[f"pr/{attr}"] = _pr_curve(ap)
    store.complete_run(run_id, metrics, curves)
    return values


def build_fixture_store(results_dir: str | Path, *, imagenet: bool = False, hostile: bool = False,
                        n_images: int = 6) -> Fixture:
    """Fill ``results_dir`` with a store of complete, superseded, swept and incomplete runs."""
    root = Path(results_dir)
    dataset = "folder:/data/<faces>&co" if hostile else "synthetic-faces:test"
    image_ids = [f"test-{i:05d}" for i in range(n_images)]
    if hostile:
        image_ids[0] = HOSTILE_ID
    params = {m: dict(p) for m, p in PARAMS.items()}
    if hostile:
        params["image2stylegan"]["note"] = HOSTILE_PARAM

    with Store(root) as store:
        # An older run of idinvert-encoder (earlier code version), superseded by the one below.
        old = _begin(store, _spec("idinvert-encoder", params["idinvert-encoder"], dataset, n_images, "0.0.9"))
        _fill_run(store, root, old, "idinvert-encoder", (0.5, 9.9, 0.9, 99.0, 99.0, 0.5, 99.0, 0.5, 0.5),
                  image_ids, imagenet=imagenet, hostile=hostile, salt=99)

        run_ids, values = {}, {}
        for salt, method in enumerate(METHODS, start=1):
            run_id = _begin(store, _spec(method, params[method], dataset, n_images, "0.1.0"))
            values[method] = _fill_run(store, root, run_id, method, QUALITY[method], image_ids,
                                       imagenet=imagenet, hostile=hostile, salt=salt)
            run_ids[method] = run_id

        sweep_id = store.add_sweep("lambda_dom", list(SWEEP_VALUES), ["idinvert"])
        sweep_run_ids = {}
        for k, lam in enumerate(SWEEP_VALUES):
            spec = _spec("idinvert", {**params["idinvert"], "lambda_dom": lam}, dataset, n_images, "0.1.0")
            run_id, status = store.begin_run(spec, torch_version="2.14.1", device="cpu", num_threads=2,
                                             sweep_id=sweep_id)
            sweep_run_ids[lam] = run_id
            if status == "complete":  # the default value: the main idinvert run, re-used
                continue
            # More lambda_dom: worse reconstruction, better editing (paper Fig. 9).
            t = math.log1p(lam) / math.log1p(8.0)
            q = (0.028 + 0.02 * t, 21.4 - 2 * t, 0.16 + 0.06 * t, 16.0 - 6 * t, 24.0 - 4 * t, 1.1,
                 22.0 - 8 * t, 0.72 + 0.2 * t, 0.6 + 0.3 * t)
            _fill_run(store, root, run_id, "idinvert", q, image_ids, imagenet=imagenet, hostile=hostile,
                      salt=10 + k)

        # A run killed half-way: it stays "running" and must not be reported as a result.
        incomplete = _begin(store, _spec("optim-w", {"iterations": 100}, dataset, n_images, "0.1.0"))
        store.add_images(incomplete, [ImageRow(image_ids[i], i, seconds=0.5, metrics={"mse": 0.05})
                                      for i in range(2)])

    return Fixture(root, run_ids, sweep_id, sweep_run_ids, old, incomplete, values, image_ids)
