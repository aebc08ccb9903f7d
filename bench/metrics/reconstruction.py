"""The reconstruction metrics, each function beside its registry entry: pixel error, perceptual and identity
distances per image; Fréchet distances (with their real-vs-real floors), SWD and timing per set.

Importing this module costs no torch (the report reads these entries without it): the maths behind each
function (``bench.metrics.pixel``, ``frechet``, ``perceptual``, ``swd``, ``identity``) is imported when the
function first runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from bench.metrics.registry import Metric, metric, register
from bench.metrics.rows import MetricRow

if TYPE_CHECKING:
    from torch import Tensor

    from bench.metrics.context import MetricContext

FEATURE_BATCH = 50  # images per forward pass of the Inception extractor (pytorch-fid's default)


# -- per image: (ctx) -> [B] --------------------------------------------------------------------------------
@metric("mse", "lower", "per_image", ("images", "recons"),
        "mean squared pixel error, pixels in [-1, 1] (as the official idinvert code reports)",
        label="MSE", aggregate="mean_ci", table="inversion", anytime="plotted", sweep="x", scatter_rank=1,
        bootstrap="per_image")
def mse_metric(ctx: MetricContext) -> Tensor:
    from bench.metrics.pixel import mse

    return mse(ctx.images, ctx.recons)


@metric("psnr", "higher", "per_image", ("images", "recons"),
        "peak signal-to-noise ratio in dB, peak-to-peak 2 for [-1, 1] (= PSNR on [0, 1] with peak 1)",
        label="PSNR (dB)", unit="dB", aggregate="mean_ci", table="inversion", anytime="measured",
        sweep="column", bootstrap="per_image")
def psnr_metric(ctx: MetricContext) -> Tensor:
    from bench.metrics.pixel import psnr

    return psnr(ctx.images, ctx.recons)


@metric("lpips", "lower", "per_image", ("images", "recons", "lpips_weights"),
        "LPIPS v0.1, AlexNet trunk with ImageNet weights (lpips package); unavailable without the "
        "torchvision AlexNet file", label="LPIPS", aggregate="mean_ci", table="inversion", sweep="column",
        scatter_rank=2, bootstrap="per_image")
def lpips_metric(ctx: MetricContext) -> Tensor:
    return ctx.lpips(ctx.images, ctx.recons)


@metric("dpips", "lower", "per_image", ("images", "recons", "eval_network"),
        "domain perceptual distance: LPIPS 'baseline' formula (unit-normalised channels, squared "
        "difference, channel sum, spatial mean, summed over layers) on the evaluation network's "
        "feature maps; not comparable with lpips", label="dpips (domain)", aggregate="mean_ci",
        table="inversion", stands_in_for="lpips", anytime="plotted", sweep="x", scatter_rank=2,
        bootstrap="per_image")
def dpips_metric(ctx: MetricContext) -> Tensor:
    from bench.metrics.perceptual import dpips

    net = ctx.eval_embedding
    return dpips(ctx.images.to(ctx.device), ctx.recons.to(ctx.device), net.features).cpu()


@metric("id_similarity", "higher", "per_image", ("images", "recons", "identity_weights"),
        "identity similarity: cosine of the ArcFace IR-SE50 embeddings of image and reconstruction, each "
        "resized to 256 px, cropped to rows 35:223 / columns 32:220 and pooled to 112 px (the IDLoss crop "
        "of pSp / e4e / ReStyle); for aligned faces; unavailable without model_ir_se50.pth",
        label="ID sim.", aggregate="mean_ci", table="inversion", only_when_present=True,
        bootstrap="per_image")
def id_similarity_metric(ctx: MetricContext) -> Tensor:
    from bench.metrics.identity import identity_similarity

    return identity_similarity(ctx.identity, ctx.images, ctx.recons)


# -- Fréchet distances to the real images, with their floors --------------------------------------------------
def frechet_with_floor(real: Tensor, fake: Tensor, ref: Tensor | None,
                       floor_seed: int | None = None) -> tuple[float, dict[str, Any]]:
    """Fréchet distance of ``fake`` [M, K] to ``real`` [N, K] features, and the real-vs-real floor at the
    same size: ``real`` against the disjoint reference features ``ref`` (embedded domain), else two
    disjoint subsets of ``real`` (user folders: halves when ``floor_seed`` is None, else of ``M`` rows)."""
    from bench.metrics.frechet import feature_stats, frechet_distance, real_floor

    value = frechet_distance(feature_stats(fake), feature_stats(real))
    if ref is not None and ref.shape[0] >= 2:
        floor = {"floor": frechet_distance(feature_stats(real), feature_stats(ref)),
                 "floor_n": int(ref.shape[0]), "floor_kind": "the real images vs a disjoint real set"}
    elif real.shape[0] < 4:
        floor = {"floor": None, "floor_kind": "too few real images for a floor"}
    else:
        size = real.shape[0] // 2 if floor_seed is None else fake.shape[0]
        fl = real_floor(real, size, seed=floor_seed or 0)
        floor = {"floor": fl.value, "floor_n": fl.n, "floor_kind": "two disjoint subsets of the real images"}
    return value, {"dims": int(real.shape[1]), **floor}


def frechet_to_real(ctx: MetricContext, extract: Callable[[Tensor], Tensor], extractor_id: str,
                    fake_images: Tensor, floor_seed: int | None = None,
                    keep: dict[str, Tensor] | None = None) -> tuple[float, dict[str, Any]]:
    """Fréchet distance of ``fake_images`` to the context's real images in one feature space, with its
    floor against a disjoint real set of the fake set's size. ``keep``: receives the features used
    ("fake" [M, K], "real" [N, K], in the images' order), to be stored as the row's ingredients."""
    real = ctx.real_features(extract, extractor_id)
    fake = extract(fake_images).float().cpu()
    ref = ctx.reference_features(extract, extractor_id, fake.shape[0])
    if keep is not None:
        keep.update(fake=fake, real=real)
    return frechet_with_floor(real, fake, ref, floor_seed)


def inception_extract(ctx: MetricContext) -> tuple[Callable[[Tensor], Tensor], str]:
    """The Inception feature map (images -> [N, 2048]) and its id; MetricUnavailable without weights."""
    from bench.metrics.frechet import extract_features

    inception = ctx.inception
    return (lambda x: extract_features(inception, x, FEATURE_BATCH)), getattr(inception, "id", "inception")


@metric("fid", "lower", "set", ("images", "recons", "inception_weights", "reference"),
        "Frechet Inception distance, pytorch-fid InceptionV3 pool3 (2048-d), reconstructions vs real; "
        "the real-vs-real floor at the same size is stored beside it", label="FID", table="inversion",
        sweep="column", scatter_rank=0, references=("g-samples",))
def fid_metric(ctx: MetricContext) -> MetricRow:
    extract, extractor_id = inception_extract(ctx)
    value, detail = frechet_to_real(ctx, extract, extractor_id, ctx.recons)
    return MetricRow("fid", value, detail={"n": ctx.n, **detail})


register(Metric("fid_floor", "lower", "set", ("images", "inception_weights", "reference"),
                "real-vs-real FID of two disjoint real sets of the evaluated size: the value of a perfect "
                "method at this sample size (stored in fid's detail)", computed_by="fid", label="FID floor"))


@metric("fid_domain", "lower", "set", ("images", "recons", "eval_network", "reference"),
        "Frechet distance in the evaluation embedding (ctx.eval_embedding, PCA-reduced); not "
        "comparable with fid", label="FID (domain)", table="inversion", stands_in_for="fid",
        anytime="plotted", sweep="column", scatter_rank=0, references=("g-samples",), bootstrap="frechet")
def fid_domain_metric(ctx: MetricContext) -> MetricRow:
    net = ctx.eval_embedding
    feats: dict[str, Tensor] = {}
    value, detail = frechet_to_real(ctx, net.embed, net.id, ctx.recons, keep=feats)
    # per-image embeddings of the reconstructions and of the real images: a bootstrap over images
    # recomputes the distance from them (``bench claims``)
    arrays = {k: (list(ctx.ids), v.numpy().astype(np.float32)) for k, v in feats.items()} \
        if len(ctx.ids) == ctx.n else None
    return MetricRow("fid_domain", value, detail={"n": ctx.n, "features": net.label, **detail}, arrays=arrays)


register(Metric("fid_domain_floor", "lower", "set", ("images", "eval_network", "reference"),
                "real-vs-real fid_domain of two disjoint real sets of the evaluated size (stored in "
                "fid_domain's detail)", computed_by="fid_domain", label="FID (domain) floor",
                stands_in_for="fid_floor"))


# -- the rest of the set: (ctx) -> MetricRow ---------------------------------------------------------------
@metric("swd", "lower", "set", ("images", "recons"),
        "sliced Wasserstein distance of 7x7 Laplacian-pyramid patches (ProGAN), x1e3, mean over "
        "levels down to 16 px", label="SWD x1e3", unit="x1e3", table="inversion", references=("g-samples",))
def swd_metric(ctx: MetricContext) -> MetricRow:
    from bench.metrics.swd import swd

    sw = swd(ctx.recons, ctx.images, seed=ctx.seed)
    return MetricRow("swd", sw.mean, detail={"n": ctx.n, "levels": {str(k): v for k, v in sw.levels.items()},
                                              "unit": "x1e3"})


@metric("seconds_per_image", "lower", "set", ("timing",),
        "wall time of the method's invert() per image, warm-up excluded; device and threads stored "
        "with the run", label="s / image", unit="s", table="inversion", sweep="column", bootstrap="seconds")
def seconds_metric(ctx: MetricContext) -> MetricRow:
    import torch

    secs = [r["seconds"] for r in ctx.rows if r["seconds"] is not None]
    return MetricRow("seconds_per_image", sum(secs) / len(secs) if secs else None,
                     detail={"device": str(ctx.device), "threads": torch.get_num_threads(),
                             "batch_size": ctx.batch_size, "timed": "invert() only, warm-up excluded",
                             "n": len(secs)})
