"""Metrics of the benchmark: a registry (``registry``), the metric context (``context``) and pure
functions over tensors (one module per family).

Importing this package is cheap: it imports the registry and the metric modules that register the
built-in metrics (standard library and numpy only); the maths and the networks behind them (torch,
lpips, pytorch-fid, torchvision, scikit-learn) load on first attribute access or first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from .registry import (METRICS, Metric, UnknownMetric, all_metrics, direction_of, find, get, label_of,
                       metric, names, register, stand_ins, unregister)
# The built-in metrics, in the order their tables show them: each module registers its own entries.
from . import reconstruction, code_metrics, semantic_metrics  # noqa: E402,F401  (isort: skip)

_LAZY = {
    "attributes": ("APResult", "ap_mean", "ap_score", "average_precision", "average_precision_per_attribute",
                   "mean_ap", "probe_scores"),
    "edits": ("EditPreservation", "EditSuccess", "edit_preservation", "edit_success"),
    "domain_features": ("DEFAULT_DIMS", "DEFAULT_FIT_IMAGES", "DomainFeatures"),
    "errors": ("MetricUnavailable",),
    "frechet": ("FID_WEIGHTS_FILE", "FeatureStats", "InceptionFeatures", "RealFloor", "extract_features",
                "feature_stats", "fid", "fid_domain", "frechet_distance", "inception_unavailable_reason",
                "inception_weights_path", "real_floor"),
    "perceptual": ("ALEXNET_FILE", "LPIPSMetric", "alexnet_weights_path", "dpips",
                   "lpips_linear_weights_path", "lpips_unavailable_reason"),
    "pixel": ("mse", "psnr", "psnr_from_mse"),
    "stats_cache": ("StatsCache", "stats_key"),
    "swd": ("SWDResult", "swd"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = ["METRICS", "Metric", "UnknownMetric", "all_metrics", "direction_of", "find", "get", "label_of",
           "metric", "names", "register", "stand_ins", "unregister", *_WHERE]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'bench.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # importing the submodule set e.g. `swd` to the module; the function wins
    return value
