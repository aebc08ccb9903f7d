"""The registry's code-space metrics: how in-domain are a method's codes (``bench.metrics.codes`` holds
the pure functions; these wrappers read what they need from the metric context).

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

from typing import Any

import torch
from torch import Tensor

from bench.metrics import codes as C
from bench.metrics.errors import MetricUnavailable
from bench.store import MetricRow

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


def domain_term_metric(ctx: Any) -> Tensor:
    codes = _codes(ctx, "code_domain_term")
    g = ctx.bundle.generator
    return C.domain_regularizer_term(codes.to(ctx.device), g.synthesis, _encoder(ctx)).cpu()


def spread_metric(ctx: Any) -> Tensor:
    codes = _codes(ctx, "code_spread")
    scale = ctx.resources._once("code-scale", lambda: C.w_scale(_samples(ctx, SCALE_SAMPLES)).clamp_min(1e-8))
    return C.layer_spread(codes.cpu(), scale)


def frechet_metric(ctx: Any) -> MetricRow:
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


def recovery_metric(ctx: Any) -> MetricRow:
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


def lec_metric(ctx: Any) -> list[MetricRow]:
    from bench.semantic import _setup, edit_scales

    codes = _codes(ctx, "code_lec")
    encoder = _encoder(ctx)
    su = _setup(ctx)
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
