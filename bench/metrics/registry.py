"""The metric registry: every number the benchmark stores has one entry here, and every consumer reads it.

An entry says what the number is (``description``, ``label``, ``unit``), which way is better
(``direction``), when it is computed (``level``: per image as batches finish, per set at the end of a run,
or in the semantic analysis), what it needs, how it aggregates, which table shows it, and which function
computes it from a metric context (``bench.metrics.context.MetricContext``). The evaluator, ``bench
table``, the report and ``bench ls`` all read this registry; none keeps a list of its own.

A metric function takes the context and returns:
    per_image: a tensor [B] (one value per image of the batch in ``ctx.images``);
    set / semantic: a float, a ``MetricRow``, or a list of ``MetricRow`` (a family: ``ap_<attr>`` ...);
and raises ``MetricUnavailable(reason)`` when it cannot be computed (stored with the reason).
Entries of a family that one function computes name it in ``computed_by`` and have no ``fn``.

Functions are given as callables or lazy ``"module:attr"`` strings: importing this module constructs no
network and imports no backend (only the standard library), so the report can read it without torch.

Vocabulary of ``needs``:

    images            the real images            recons          their reconstructions G(codes)
    codes             the inverted W+ codes      generator       the bundle's G
    eval_network      the evaluation network (ctx.eval_embedding: the bundle's judge, evaluation only)
    reference         a real set disjoint from the test images (real-vs-real floors)
    boundaries        attribute boundaries (unit normals in W)
    labels            ground-truth attribute labels of the images
    lpips_weights     torchvision's ImageNet AlexNet file (for the ``lpips`` package)
    inception_weights pytorch-fid's FID Inception file
    identity_weights  ArcFace IR-SE50 (model_ir_se50.pth, the identity network of pSp / e4e / ReStyle)
    timing            wall-clock timing of ``invert``

A name may hold the placeholder ``<attr>`` (``ap_<attr>``): ``get("ap_age")`` finds that template.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from idinvert.registry import Registry, UnknownName, load_ref

DIRECTIONS = ("lower", "higher")
LEVELS = ("per_image", "set", "semantic")
AGGREGATES = ("mean_ci", "value")
TABLES = ("inversion", "codes", "interpolation", "manipulation", "attributes")
NEEDS = (
    "images", "recons", "codes", "generator", "eval_network", "reference", "boundaries", "labels",
    "lpips_weights", "inception_weights", "identity_weights", "timing",
)
ATTR = "<attr>"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(<attr>[a-z0-9_]*)?$")

UnknownMetric = UnknownName


@dataclass(frozen=True)
class Metric:
    """One registered metric (see the module docstring for the meaning of each field)."""

    name: str
    direction: str  # "lower" | "higher": which way is better
    level: str  # "per_image" | "set" | "semantic"
    needs: tuple[str, ...]
    description: str
    fn: str | Callable | None = None  # (ctx) -> value(s); "module:attr" is imported on first use
    label: str | None = None  # column header; default: the name
    unit: str | None = None
    aggregate: str = "value"  # "mean_ci": mean of per-image values with a 95% CI; "value": as returned
    table: str | None = None  # the report / `bench table` table that shows it (None: long format only)
    stands_in_for: str | None = None  # the ImageNet metric this domain metric replaces when absent
    computed_by: str | None = None  # the entry whose fn produces this row (families)
    # Shown in its table only when some run has a value: a metric most bundles cannot have (identity
    # similarity needs aligned faces and IR-SE50) would otherwise add an empty column to every table.
    only_when_present: bool = False

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"bad metric name {self.name!r}: lowercase letters, digits, '_' "
                             f"(and at most one {ATTR!r})")
        for value, allowed, what in ((self.direction, DIRECTIONS, "direction"), (self.level, LEVELS, "level"),
                                     (self.aggregate, AGGREGATES, "aggregate")):
            if value not in allowed:
                raise ValueError(f"{self.name}: {what} must be one of {allowed}, got {value!r}")
        if self.table is not None and self.table not in TABLES:
            raise ValueError(f"{self.name}: table must be one of {TABLES} or None, got {self.table!r}")
        unknown = [n for n in self.needs if n not in NEEDS]
        if unknown:
            raise ValueError(f"{self.name}: unknown needs {unknown}; known: {NEEDS}")
        if isinstance(self.fn, str) and ":" not in self.fn:
            raise ValueError(f"{self.name}: fn must be 'module:attr' or a callable, got {self.fn!r}")

    @property
    def is_template(self) -> bool:
        return ATTR in self.name

    @property
    def display(self) -> str:
        return self.label or self.name

    def label_for(self, name: str) -> str:
        """The column label of ``name`` (a concrete name of this entry: ``ap_age`` for ``ap_<attr>``)."""
        if not self.is_template:
            return self.display
        prefix, suffix = self.name.split(ATTR)
        attr = name[len(prefix):len(name) - len(suffix)] if suffix else name[len(prefix):]
        return (self.label or "{attr}").replace(ATTR, attr).replace("{attr}", attr)

    def better(self, a: float, b: float) -> bool:
        """True when value ``a`` is strictly better than ``b`` for this metric."""
        return a < b if self.direction == "lower" else a > b

    def load(self) -> Callable:
        """The computing function (a lazy ``"module:attr"`` is imported only now)."""
        if self.fn is None:
            owner = f"with {self.computed_by!r}" if self.computed_by else "by the runner"
            raise LookupError(f"metric {self.name!r} is computed {owner}, not by a function of its own")
        return load_ref(self.fn) if isinstance(self.fn, str) else self.fn


METRICS: Registry[Metric] = Registry("metric")


def register(metric: Metric, replace: bool = False) -> Metric:
    """Add ``metric``; registering a different metric under a taken name is an error unless ``replace``."""
    old = METRICS._entries.get(metric.name)
    if old is not None and old != metric and not replace:
        raise ValueError(f"metric {metric.name!r} is already registered")
    METRICS.add(metric.name, metric, replace=True)
    return metric


def metric(name: str, direction: str, level: str, needs: tuple[str, ...], description: str,
           **fields: Any) -> Callable[[Callable], Callable]:
    """Decorator: register the decorated function ``(ctx) -> value(s)`` as metric ``name``.

        @metric("mean_abs", "lower", "per_image", ("images", "recons"), "mean |x - G(w)|", table="inversion")
        def mean_abs(ctx):
            return (ctx.images - ctx.recons).abs().flatten(1).mean(1)
    """
    def wrap(fn: Callable) -> Callable:
        register(Metric(name, direction, level, tuple(needs), description, fn=fn, **fields))
        return fn
    return wrap


def unregister(name: str) -> None:
    METRICS.remove(name)


def _template_match(name: str) -> Metric | None:
    for entry in METRICS.values():
        if entry.is_template:
            prefix, suffix = entry.name.split(ATTR)
            if (name.startswith(prefix) and name.endswith(suffix)
                    and len(name) > len(prefix) + len(suffix)):
                return entry
    return None


def get(name: str) -> Metric:
    """The metric called ``name``; ``ap_age`` resolves to the ``ap_<attr>`` template."""
    if name in METRICS:
        return METRICS.get(name)
    template = _template_match(name)
    if template is not None:
        return template
    return METRICS.get(name)  # raises UnknownMetric with a suggestion


def find(name: str) -> Metric | None:
    """Like :func:`get`, but None for a name the registry does not know (e.g. in an old store)."""
    try:
        return get(name)
    except UnknownMetric:
        return None


def all_metrics(level: str | None = None, table: str | None = None) -> list[Metric]:
    """Registered metrics in registration order, optionally of one level / one table."""
    return [m for m in METRICS.values()
            if (level is None or m.level == level) and (table is None or m.table == table)]


def direction_of(name: str) -> str:
    """'lower' or 'higher' for a stored metric name ('lower' for one the registry does not know)."""
    entry = find(name)
    return entry.direction if entry is not None else "lower"


def label_of(name: str) -> str:
    entry = find(name)
    return entry.label_for(name) if entry is not None else name


def stand_ins() -> dict[str, str]:
    """ImageNet metric -> the domain metric that stands in for it when its weights are absent."""
    return {m.stands_in_for: m.name for m in METRICS.values() if m.stands_in_for}


# -- the built-in metrics ----------------------------------------------------------------------------------
_E = "bench.evaluation:"
_S = "bench.semantic:"
_C = "bench.metrics.code_metrics:"
_BUILTIN = (
    Metric("mse", "lower", "per_image", ("images", "recons"),
           "mean squared pixel error, pixels in [-1, 1] (as the official idinvert code reports)",
           _E + "mse_metric", label="MSE", aggregate="mean_ci", table="inversion"),
    Metric("psnr", "higher", "per_image", ("images", "recons"),
           "peak signal-to-noise ratio in dB, peak-to-peak 2 for [-1, 1] (= PSNR on [0, 1] with peak 1)",
           _E + "psnr_metric", label="PSNR (dB)", unit="dB", aggregate="mean_ci", table="inversion"),
    Metric("lpips", "lower", "per_image", ("images", "recons", "lpips_weights"),
           "LPIPS v0.1, AlexNet trunk with ImageNet weights (lpips package); unavailable without the "
           "torchvision AlexNet file", _E + "lpips_metric", label="LPIPS", aggregate="mean_ci",
           table="inversion"),
    Metric("dpips", "lower", "per_image", ("images", "recons", "eval_network"),
           "domain perceptual distance: LPIPS 'baseline' formula (unit-normalised channels, squared "
           "difference, channel sum, spatial mean, summed over layers) on the evaluation network's "
           "feature maps; not comparable with lpips", _E + "dpips_metric", label="dpips (domain)",
           aggregate="mean_ci", table="inversion", stands_in_for="lpips"),
    Metric("id_similarity", "higher", "per_image", ("images", "recons", "identity_weights"),
           "identity similarity: cosine of the ArcFace IR-SE50 embeddings of image and reconstruction, each "
           "resized to 256 px, cropped to rows 35:223 / columns 32:220 and pooled to 112 px (the IDLoss crop "
           "of pSp / e4e / ReStyle); for aligned faces; unavailable without model_ir_se50.pth",
           "bench.metrics.identity:id_similarity_metric", label="ID sim.", aggregate="mean_ci",
           table="inversion", only_when_present=True),
    Metric("fid", "lower", "set", ("images", "recons", "inception_weights", "reference"),
           "Frechet Inception distance, pytorch-fid InceptionV3 pool3 (2048-d), reconstructions vs real; "
           "the real-vs-real floor at the same size is stored beside it", _E + "fid_metric", label="FID",
           table="inversion"),
    Metric("fid_floor", "lower", "set", ("images", "inception_weights", "reference"),
           "real-vs-real FID of two disjoint real sets of the evaluated size: the value of a perfect "
           "method at this sample size (stored in fid's detail)", computed_by="fid", label="FID floor"),
    Metric("fid_domain", "lower", "set", ("images", "recons", "eval_network", "reference"),
           "Frechet distance in the evaluation embedding (ctx.eval_embedding, PCA-reduced); not "
           "comparable with fid", _E + "fid_domain_metric", label="FID (domain)", table="inversion",
           stands_in_for="fid"),
    Metric("fid_domain_floor", "lower", "set", ("images", "eval_network", "reference"),
           "real-vs-real fid_domain of two disjoint real sets of the evaluated size (stored in "
           "fid_domain's detail)", computed_by="fid_domain", label="FID (domain) floor",
           stands_in_for="fid_floor"),
    Metric("swd", "lower", "set", ("images", "recons"),
           "sliced Wasserstein distance of 7x7 Laplacian-pyramid patches (ProGAN), x1e3, mean over "
           "levels down to 16 px", _E + "swd_metric", label="SWD x1e3", unit="x1e3", table="inversion"),
    Metric("seconds_per_image", "lower", "set", ("timing",),
           "wall time of the method's invert() per image, warm-up excluded; device and threads stored "
           "with the run", _E + "seconds_metric", label="s / image", unit="s", table="inversion"),
    # -- how in-domain are the codes (issue 13; bench.metrics.code_metrics): the "codes" table ---------
    Metric("code_domain_term", "lower", "per_image", ("codes", "generator"),
           "the domain regulariser's own term mean_{L,D} (w - E(G(w)))^2 with E the bundle's domain-guided "
           "encoder (lambda_dom times it is idinvert's loss term): where E expects codes of G(w)",
           _C + "domain_term_metric", label="||w - E(G(w))||^2", aggregate="mean_ci", table="codes"),
    Metric("code_spread", "lower", "per_image", ("codes", "generator"),
           "RMS deviation of a W+ code's layers from its own layer mean, in units of the per-dimension std "
           "of codes sampled from G (0 for a W code; G's own codes have 0 when its mapping emits one w)",
           _C + "spread_metric", label="layer spread", aggregate="mean_ci", table="codes"),
    Metric("code_frechet", "lower", "set", ("codes", "generator"),
           "layer-wise Frechet distance between the inverted codes and codes sampled from G's mapping, mean "
           "over layers; the floor (sampled codes of the same n vs the same reference) is stored beside it",
           _C + "frechet_metric", label="code FD (to G's W)", table="codes"),
    Metric("code_recovery", "lower", "set", ("codes", "generator"),
           "on the known-answer set (--data gsamples:N): distance of each layer of the code to the true code "
           "that made the image, in units of G's spread on that layer (sqrt(sum_d std^2)), mean over layers "
           "and images; 0 = recovered, ~1.41 = an unrelated sample of G", _C + "recovery_metric",
           label="code recovery", table="codes"),
    Metric("code_lec", "lower", "semantic", ("codes", "generator", "boundaries"),
           "latent editing consistency (e4e): ||w - (E(G(w + a n)) - a n)||_F with E the domain-guided encoder, "
           "a = 1 std of each boundary's signed distance, mean over boundaries; its value at a = 0 is in the "
           "detail", _C + "lec_metric", label="LEC", table="codes"),
    Metric("code_lec_excess", "lower", "semantic", ("codes", "generator", "boundaries"),
           "code_lec minus its value at a = 0 (||w - E(G(w))||, contained in LEC): what the edit itself adds",
           computed_by="code_lec", label="LEC - LEC(a=0)", table="codes"),
    Metric("ap_<attr>", "higher", "semantic", ("codes", "boundaries", "labels"),
           "average precision of the signed boundary distance of inverted codes against the attribute's "
           "labels (paper Fig. 3)", computed_by="ap_mean", label="AP: <attr>", table="attributes"),
    Metric("ap_mean", "higher", "semantic", ("codes", "boundaries", "labels"),
           "mean of ap_<attr> over attributes", _S + "attribute_ap", label="mean AP", table="attributes"),
    Metric("probe_ap_<attr>", "higher", "semantic", ("codes", "labels"),
           "decodable AP: AP of a linear probe (standardised L2 logistic regression) fitted on the method's own "
           "codes of the other cross-validation folds of the evaluated images, scoring each held-out code: is "
           "the attribute linearly in the codes at all, on G's boundary or not", computed_by="ap_mean",
           label="decodable AP: <attr>", table="attributes"),
    Metric("probe_ap_mean", "higher", "semantic", ("codes", "labels"),
           "mean of probe_ap_<attr> over attributes", computed_by="ap_mean", label="mean decodable AP",
           table="attributes"),
    Metric("interp_fid", "lower", "semantic", ("codes", "generator", "images", "inception_weights"),
           "FID of images decoded from linear W+ interpolations between inverted pairs, vs real images "
           "(paper Table 2)", _S + "interpolation", label="interp. FID", table="interpolation"),
    Metric("interp_fid_domain", "lower", "semantic", ("codes", "generator", "images", "eval_network"),
           "fid_domain of decoded W+ interpolations vs real images", computed_by="interp_fid",
           label="interp. FID (domain)", table="interpolation", stands_in_for="interp_fid"),
    Metric("interp_swd", "lower", "semantic", ("codes", "generator", "images"),
           "swd (x1e3) of decoded W+ interpolations vs real images", computed_by="interp_fid",
           label="interp. SWD x1e3", unit="x1e3", table="interpolation"),
    Metric("edit_success_<attr>", "higher", "semantic", ("codes", "generator", "boundaries", "eval_network"),
           "fraction of edits along the attribute's normal that flip the judge's prediction in the "
           "intended direction, among edits that started on the other side", computed_by="edit_success_mean",
           label="success: <attr>", table="manipulation"),
    Metric("edit_success_mean", "higher", "semantic", ("codes", "generator", "boundaries", "eval_network"),
           "mean of edit_success_<attr> over attributes", _S + "manipulation", label="mean success",
           table="manipulation"),
    Metric("edit_preservation", "higher", "semantic", ("codes", "generator", "boundaries", "eval_network"),
           "agreement of the judge's non-target attribute predictions before and after edits",
           computed_by="edit_success_mean", label="preservation", table="manipulation"),
    Metric("edit_dpips", "lower", "semantic", ("codes", "generator", "boundaries", "eval_network"),
           "dpips between each edited image and the unedited reconstruction (how much else changed)",
           computed_by="edit_success_mean", label="dpips to recon.", table="manipulation"),
)
for _m in _BUILTIN:
    register(_m)
