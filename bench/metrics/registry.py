"""The metric registry: every number the benchmark stores has one entry here.

An entry says what the number is (``description``), which way is better (``direction``), whether it is
one value per image or one per set (``kind``), and what it needs to be computed (``needs``). The report
reads directions from here; ``bench ls`` prints the table. Functions are referenced as lazy
``"module:attr"`` strings so that importing the registry constructs no network and imports no backend.

Vocabulary of ``needs`` (what the runner must have in hand):

    images            the real images            recons        their reconstructions G(codes)
    codes             the inverted W+ codes      generator     the bundle's G
    classifier        the bundle's attribute classifier (features / embed / logits)
    boundaries        attribute boundaries (unit normals in W)
    labels            ground-truth attribute labels of the images
    lpips_weights     torchvision's ImageNet AlexNet file (for the ``lpips`` package)
    inception_weights pytorch-fid's FID Inception file
    timing            wall-clock timing of ``invert``

A name may hold the placeholder ``<attr>`` (``ap_<attr>``): ``get("ap_age")`` finds that template.

This module imports only the standard library: the report loads it on its own, without torch.
"""
from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass
from typing import Callable

DIRECTIONS = ("lower", "higher")
KINDS = ("per_image", "set")
NEEDS = (
    "images", "recons", "codes", "generator", "classifier", "boundaries", "labels",
    "lpips_weights", "inception_weights", "timing",
)
ATTR = "<attr>"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(<attr>[a-z0-9_]*)?$")


class UnknownMetric(KeyError):
    """Raised by :func:`get` for a name that is not registered; the message suggests close names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str  # "lower" | "higher": which way is better
    kind: str  # "per_image" | "set"
    needs: tuple[str, ...]
    description: str
    fn: str | None = None  # "module:attr" of the function or class that computes it, imported lazily

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"bad metric name {self.name!r}: lowercase letters, digits, '_' "
                             f"(and at most one {ATTR!r})")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"{self.name}: direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        unknown = [n for n in self.needs if n not in NEEDS]
        if unknown:
            raise ValueError(f"{self.name}: unknown needs {unknown}; known: {NEEDS}")
        if self.fn is not None and ":" not in self.fn:
            raise ValueError(f"{self.name}: fn must be 'module:attr', got {self.fn!r}")

    @property
    def is_template(self) -> bool:
        return ATTR in self.name

    def better(self, a: float, b: float) -> bool:
        """True when value ``a`` is strictly better than ``b`` for this metric."""
        return a < b if self.direction == "lower" else a > b

    def load(self) -> Callable:
        """Import and return the computing function (only now is its module imported)."""
        if self.fn is None:
            raise LookupError(f"metric {self.name!r} is computed by the runner, not by one function")
        module, attr = self.fn.split(":")
        return getattr(importlib.import_module(module), attr)


_REGISTRY: dict[str, Metric] = {}


def register(metric: Metric, replace: bool = False) -> Metric:
    """Add ``metric``; registering a different metric under a taken name is an error unless ``replace``."""
    old = _REGISTRY.get(metric.name)
    if old is not None and old != metric and not replace:
        raise ValueError(f"metric {metric.name!r} is already registered")
    _REGISTRY[metric.name] = metric
    return metric


def _template_match(name: str) -> Metric | None:
    for metric in _REGISTRY.values():
        if metric.is_template:
            prefix, suffix = metric.name.split(ATTR)
            if (name.startswith(prefix) and name.endswith(suffix)
                    and len(name) > len(prefix) + len(suffix)):
                return metric
    return None


def get(name: str) -> Metric:
    """The metric called ``name``; ``ap_age`` resolves to the ``ap_<attr>`` template."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    template = _template_match(name)
    if template is not None:
        return template
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownMetric(f"unknown metric {name!r}{hint} (known: {', '.join(_REGISTRY)})")


def all_metrics() -> list[Metric]:
    """Every registered metric, in registration order."""
    return list(_REGISTRY.values())


def _builtin(name, direction, kind, needs, description, fn=None):
    register(Metric(name=name, direction=direction, kind=kind, needs=tuple(needs),
                    description=description, fn=fn))


_P = "bench.metrics."
_builtin("mse", "lower", "per_image", ("images", "recons"),
         "mean squared pixel error, pixels in [-1, 1] (as the official idinvert code reports)",
         _P + "pixel:mse")
_builtin("psnr", "higher", "per_image", ("images", "recons"),
         "peak signal-to-noise ratio in dB, peak-to-peak 2 for [-1, 1] (= PSNR on [0, 1] with peak 1)",
         _P + "pixel:psnr")
_builtin("lpips", "lower", "per_image", ("images", "recons", "lpips_weights"),
         "LPIPS v0.1, AlexNet trunk with ImageNet weights (lpips package); unavailable without the "
         "torchvision AlexNet file", _P + "perceptual:LPIPSMetric")
_builtin("dpips", "lower", "per_image", ("images", "recons", "classifier"),
         "domain perceptual distance: LPIPS 'baseline' formula (unit-normalised channels, squared "
         "difference, channel sum, spatial mean, summed over layers) on the domain classifier's "
         "feature maps; not comparable with lpips", _P + "perceptual:dpips")
_builtin("fid", "lower", "set", ("images", "recons", "inception_weights"),
         "Frechet Inception distance, pytorch-fid InceptionV3 pool3 (2048-d), reconstructions vs real",
         _P + "frechet:fid")
_builtin("fid_floor", "lower", "set", ("images", "inception_weights"),
         "real-vs-real FID of two disjoint real sets of the evaluated size: the value of a perfect "
         "method at this sample size", _P + "frechet:real_floor")
_builtin("fid_domain", "lower", "set", ("images", "recons", "classifier"),
         "Frechet distance in the domain classifier's embedding (classifier.embed); not comparable "
         "with fid", _P + "frechet:fid_domain")
_builtin("fid_domain_floor", "lower", "set", ("images", "classifier"),
         "real-vs-real fid_domain of two disjoint real sets of the evaluated size",
         _P + "frechet:real_floor")
_builtin("swd", "lower", "set", ("images", "recons"),
         "sliced Wasserstein distance of 7x7 Laplacian-pyramid patches (ProGAN), x1e3, mean over "
         "levels down to 16 px", _P + "swd:swd")
_builtin("seconds_per_image", "lower", "set", ("timing",),
         "wall time of the method's invert() per image, warm-up excluded; device and threads stored "
         "with the run")
_builtin("ap_<attr>", "higher", "set", ("codes", "boundaries", "labels"),
         "average precision of the signed boundary distance of inverted codes against the attribute's "
         "labels (paper Fig. 3)", _P + "attributes:average_precision")
_builtin("ap_mean", "higher", "set", ("codes", "boundaries", "labels"),
         "mean of ap_<attr> over attributes")
_builtin("interp_fid", "lower", "set", ("codes", "generator", "images", "inception_weights"),
         "FID of images decoded from linear W+ interpolations between inverted pairs, vs real images "
         "(paper Table 2)", _P + "frechet:fid")
_builtin("interp_fid_domain", "lower", "set", ("codes", "generator", "images", "classifier"),
         "fid_domain of decoded W+ interpolations vs real images", _P + "frechet:fid_domain")
_builtin("interp_swd", "lower", "set", ("codes", "generator", "images"),
         "swd (x1e3) of decoded W+ interpolations vs real images", _P + "swd:swd")
_builtin("edit_success_<attr>", "higher", "set", ("codes", "generator", "boundaries", "classifier"),
         "fraction of edits along the attribute's normal that flip the classifier's prediction in the "
         "intended direction, among edits that started on the other side", _P + "edits:edit_success")
_builtin("edit_success_mean", "higher", "set", ("codes", "generator", "boundaries", "classifier"),
         "mean of edit_success_<attr> over attributes")
_builtin("edit_preservation", "higher", "set", ("codes", "generator", "boundaries", "classifier"),
         "agreement of the classifier's non-target attribute predictions before and after edits",
         _P + "edits:edit_preservation")
_builtin("edit_dpips", "lower", "set", ("codes", "generator", "boundaries", "classifier"),
         "dpips between each edited image and the unedited reconstruction (how much else changed)",
         _P + "perceptual:dpips")
