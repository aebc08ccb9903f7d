"""The code-space metrics, each function beside its registry entry: how in-domain are a method's codes
(``bench.metrics.codes`` holds the pure functions, imported when a function first runs, so that the
registry reads these entries without torch; the functions read what they need from the metric context).

- ``code_domain_term`` (per image): ``mean (w − E(G(w)))²`` with E the bundle's domain-guided encoder.
- ``code_spread`` (per image): the RMS spread of a W+ code's layers, in units of G's sampled codes' std.
- ``code_frechet`` (set): layer-wise Fréchet distance to codes sampled from G's mapping, with its floor.
- ``code_lec`` (semantic): e4e's latent editing consistency with E the domain-guided encoder, averaged
  over the attribute boundaries, an edit of one std of the boundary's signed distance (``edit_scales``);
  its detail keeps the value at α = 0 (``‖w − E(G(w))‖``, which LEC contains) and per-image values, and
  ``code_lec_excess`` = LEC − LEC at α = 0 is what the edit itself adds.
- ``code_recovery`` (set): on the known-answer set (``--data gsamples:N``, true codes known), the distance
  ‖ŵ_l − w_l‖ of each layer's recovered code to the true one in units of G's own spread there
  (``sqrt(sum_d std_ld^2)``, the RMS distance of a sampled code from the mean): 0 = recovered, about
  1.41 = as far as an unrelated sample of G.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.metrics.errors import MetricUnavailable
from bench.metrics.registry import Metric, metric, register
from bench.metrics.rows import MetricRow

if TYPE_CHECKING:
    from torch import Tensor

SAMPLE_SEED = 7_000  # codes sampled from G for the spread's scale and the Fréchet reference/floor
SCALE_SAMPLES = 2000
REFERENCE_EXTRA = 2000  # sampled codes beyond the floor's N: the Fréchet reference


def _encoder(ctx: Any) -> Any:
    enc = getattr(ctx.bundle, "encoder", None)
    if enc is None:
        raise MetricUnavailable("code_domain_term", f"bundle {ctx.bundle.name!r} has no domain-guided encoder E")
    return enc


def _codes(ctx: Any, name: str) -> Tensor:
    if ctx.codes is None or ctx.codes.ndim != 3:
        raise MetricUnavailable(name, "no W+ codes in this evaluation")
    return ctx.codes.float()


def _samples(ctx: Any, n: int) -> Tensor:
    from idinvert.boundaries import sample_codes

    key = f"code-samples:{n}"
    return ctx.resources._once(key, lambda: sample_codes(ctx.bundle.generator, n, SAMPLE_SEED).float().cpu())


_G_CODES = ("g-codes",)  # the reference run shown with every code metric: G's true codes


@metric("code_domain_term", "lower", "per_image", ("codes", "generator"),
        "the domain regulariser's own term mean_{L,D} (w - E(G(w)))^2 with E the bundle's domain-guided "
        "encoder (lambda_dom times it is idinvert's loss term): where E expects codes of G(w)",
        label="||w - E(G(w))||^2", aggregate="mean_ci", table="codes", references=_G_CODES,
        bootstrap="per_image")
def domain_term_metric(ctx: Any) -> Tensor:
    import bench.metrics.codes as C

    codes = _codes(ctx, "code_domain_term")
    g = ctx.bundle.generator
    return C.domain_regularizer_term(codes.to(ctx.device), g.synthesis, _encoder(ctx)).cpu()


@metric("code_spread", "lower", "per_image", ("codes", "generator"),
        "RMS deviation of a W+ code's layers from its own layer mean, in units of the per-dimension std "
        "of codes sampled from G (0 for a W code; G's own codes have 0 when its mapping emits one w)",
        label="layer spread", aggregate="mean_ci", table="codes", references=_G_CODES, bootstrap="per_image")
def spread_metric(ctx: Any) -> Tensor:
    import bench.metrics.codes as C

    codes = _codes(ctx, "code_spread")
    scale = ctx.resources._once("code-scale", lambda: C.w_scale(_samples(ctx, SCALE_SAMPLES)).clamp_min(1e-8))
    return C.layer_spread(codes.cpu(), scale)


@metric("code_frechet", "lower", "set", ("codes", "generator"),
        "layer-wise Frechet distance between the inverted codes and codes sampled from G's mapping, mean "
        "over layers; the floor (sampled codes of the same n vs the same reference) is stored beside it",
        label="code FD (to G's W)", table="codes", references=_G_CODES)
def frechet_metric(ctx: Any) -> MetricRow:
    import torch

    import bench.metrics.codes as C

    codes = _codes(ctx, "code_frechet")
    codes = codes[torch.isfinite(codes).flatten(1).all(1)]
    if codes.shape[0] < 2:
        return MetricRow.unavailable("code_frechet", "fewer than 2 finite codes")
    samples = _samples(ctx, codes.shape[0] + REFERENCE_EXTRA)
    fd = C.code_frechet(codes.cpu(), samples, seed=ctx.seed)
    return MetricRow("code_frechet", fd.value, detail={
        "n": fd.n, "n_reference": fd.n_reference, "floor": fd.floor,
        "floor_kind": "codes sampled from G's mapping, as many as inverted, vs the same reference",
        "per_layer": list(fd.per_layer), "floor_per_layer": list(fd.floor_per_layer)})


@metric("code_recovery", "lower", "set", ("codes", "generator"),
        "on the known-answer set (--data gsamples:N): distance of each layer of the code to the true code "
        "that made the image, in units of G's spread on that layer (sqrt(sum_d std^2)), mean over layers "
        "and images; 0 = recovered, ~1.41 = an unrelated sample of G", label="code recovery", table="codes",
        references=_G_CODES)
def recovery_metric(ctx: Any) -> MetricRow:
    import bench.metrics.codes as C

    codes = _codes(ctx, "code_recovery").cpu()
    truth = getattr(ctx.dataset, "true_codes", None)
    if truth is None:
        raise MetricUnavailable("code_recovery", "the data has no known codes (the known-answer set "
                                                 "--data gsamples:N has)")
    truth = truth[list(ctx.indices)].float()
    scale = ctx.resources._once("code-scale", lambda: C.w_scale(_samples(ctx, SCALE_SAMPLES)).clamp_min(1e-8))
    per = C.code_recovery(codes, truth, scale)  # [N, L]
    return MetricRow("code_recovery", float(per.mean()), detail={
        "n": int(per.shape[0]), "per_layer": [float(v) for v in per.mean(0)],
        "unrelated_level": 2 ** 0.5, "unit": "G's own spread per layer, sqrt(sum_d std_ld^2)"},
        arrays={"recovery": (list(ctx.ids), per.numpy())})


@metric("code_lec", "lower", "semantic", ("codes", "generator", "boundaries", "eval_network"),
        "latent editing consistency (e4e): ||w - (E(G(w + a n)) - a n)||_F with E the domain-guided encoder, "
        "a = 1 std of each boundary's signed distance, mean over boundaries; its value at a = 0 is in the "
        "detail", label="LEC", table="codes", references=_G_CODES, bootstrap="detail")
def lec_metric(ctx: Any) -> list[MetricRow]:
    import torch

    import bench.metrics.codes as C
    from bench.metrics.semantic import edit_scales, semantic_setup

    codes = _codes(ctx, "code_lec")
    encoder = _encoder(ctx)
    su = semantic_setup(ctx)
    if not su.edits:
        reason = su.no_boundary_reason
        return [MetricRow.unavailable("code_lec", reason), MetricRow.unavailable("code_lec_excess", reason)]
    g = ctx.bundle.generator
    scales = edit_scales(g, su.edits, su.config)
    x = codes.to(ctx.device)
    zero = C.latent_editing_consistency(x, g.synthesis, encoder, torch.zeros(codes.shape[1:]), alpha=0.0)
    per_attr = []
    for a, b in sorted(su.edits.items()):
        step = C.edit_step(b, codes.shape[1], codes.shape[2]).to(x)
        per_attr.append(C.latent_editing_consistency(x, g.synthesis, encoder, step, alpha=float(scales[a])))
    lec = torch.stack(per_attr).mean(0)
    common = {"n": int(codes.shape[0]), "alpha": "1 std of each boundary's signed distance",
              "attributes": sorted(su.edits), "encoder": "the bundle's domain-guided encoder E"}
    return [MetricRow("code_lec", float(lec.mean()), detail={
                **common, "lec_alpha0": float(zero.mean()),
                "per_image": {i: float(v) for i, v in zip(ctx.ids, lec)},
                "per_image_alpha0": {i: float(v) for i, v in zip(ctx.ids, zero)}}),
            MetricRow("code_lec_excess", float((lec - zero).mean()), detail={
                **common, "what": "code_lec minus its value at alpha 0 (||w - E(G(w))||): what the edit adds"})]


register(Metric("code_lec_excess", "lower", "semantic", ("codes", "generator", "boundaries", "eval_network"),
                "code_lec minus its value at a = 0 (||w - E(G(w))||, contained in LEC): what the edit itself adds",
                computed_by="code_lec", label="LEC - LEC(a=0)", table="codes", references=_G_CODES))
