"""The semantic metrics' registry entries: attribute AP (and the decodable AP of a probe), interpolation
and manipulation (paper Fig. 3, Table 2, Fig. 6).

Each family is computed by one stage of ``bench.metrics.semantic`` (which needs torch and the bundle's
networks): the entry that owns a stage names it lazily, as ``"module:attr"``, so that the registry -- and
the report reading it -- never imports torch; the family's other entries say ``computed_by``.
"""
from __future__ import annotations

from bench.metrics.registry import Metric, register

_STAGES = "bench.metrics.semantic:"
_BOTH = ("g-samples", "g-codes")  # G samples: the negative control (chance); G codes: the truth
_AP_NEEDS = ("codes", "boundaries", "labels", "generator", "eval_network", "images")
_INTERP_NEEDS = ("codes", "generator", "images", "inception_weights", "eval_network", "reference")
_EDIT_NEEDS = ("codes", "generator", "boundaries", "eval_network", "labels", "images")

for _m in (
    Metric("ap_<attr>", "higher", "semantic", ("codes", "boundaries", "labels"),
           "average precision of the signed boundary distance of inverted codes against the attribute's "
           "labels (paper Fig. 3)", computed_by="ap_mean", label="AP: <attr>", table="attributes",
           references=_BOTH),
    Metric("ap_mean", "higher", "semantic", _AP_NEEDS,
           "mean of ap_<attr> over attributes (labels: --labels, else the judge's predictions)",
           _STAGES + "attribute_ap", label="mean AP", table="attributes", references=_BOTH, anytime="plotted",
           sweep="y", bootstrap="ap",
           controls=(("g-samples", "negative control (G samples, chance)"),
                     ("g-codes", "positive control (G codes, truth)"))),
    Metric("probe_ap_<attr>", "higher", "semantic", ("codes", "labels"),
           "decodable AP: AP of a linear probe (standardised L2 logistic regression) fitted on the method's own "
           "codes of the other cross-validation folds of the evaluated images, scoring each held-out code: is "
           "the attribute linearly in the codes at all, on G's boundary or not", computed_by="ap_mean",
           label="decodable AP: <attr>", table="attributes", references=("g-codes",)),
    Metric("probe_ap_mean", "higher", "semantic", ("codes", "labels"),
           "mean of probe_ap_<attr> over attributes", computed_by="ap_mean", label="mean decodable AP",
           table="attributes", references=("g-codes",)),
    Metric("interp_fid", "lower", "semantic", _INTERP_NEEDS,
           "FID of images decoded from linear W+ interpolations between inverted pairs, vs real images "
           "(paper Table 2)", _STAGES + "interpolation", label="interp. FID", table="interpolation",
           references=("g-samples",)),
    Metric("interp_fid_domain", "lower", "semantic", ("codes", "generator", "images", "eval_network"),
           "fid_domain of decoded W+ interpolations vs real images", computed_by="interp_fid",
           label="interp. FID (domain)", table="interpolation", stands_in_for="interp_fid",
           references=("g-samples",), bootstrap="frechet",
           controls=(("g-samples", "G's own interpolations (G samples)"),)),
    Metric("interp_swd", "lower", "semantic", ("codes", "generator", "images"),
           "swd (x1e3) of decoded W+ interpolations vs real images", computed_by="interp_fid",
           label="interp. SWD x1e3", unit="x1e3", table="interpolation", references=("g-samples",)),
    Metric("edit_success_<attr>", "higher", "semantic", _EDIT_NEEDS,
           "fraction of edits along the attribute's normal that flip the judge's prediction in the "
           "intended direction, among edits that started on the other side", computed_by="edit_success_mean",
           label="success: <attr>", table="manipulation", references=("g-codes",)),
    Metric("edit_success_mean", "higher", "semantic", _EDIT_NEEDS,
           "mean of edit_success_<attr> over attributes", _STAGES + "manipulation", label="mean success",
           table="manipulation", references=("g-codes",), sweep="y", bootstrap="edits",
           controls=(("g-codes", "positive control (edits of G's true codes)"),)),
    Metric("edit_preservation", "higher", "semantic", _EDIT_NEEDS,
           "agreement of the judge's non-target attribute predictions before and after edits",
           computed_by="edit_success_mean", label="preservation", table="manipulation", references=("g-codes",),
           sweep="column"),
    Metric("edit_dpips", "lower", "semantic", _EDIT_NEEDS,
           "dpips between each edited image and the unedited reconstruction (how much else changed)",
           computed_by="edit_success_mean", label="dpips to recon.", table="manipulation",
           references=("g-codes",)),
):
    register(_m)
