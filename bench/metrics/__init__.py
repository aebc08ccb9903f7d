"""Metrics of the benchmark: a registry (name, direction, kind, needs) and pure functions over tensors.

Importing this package is cheap: it builds no network and imports neither lpips, pytorch-fid, torchvision
nor scikit-learn; those load when a metric that needs them is computed.
"""
from .attributes import APResult, ap_mean, average_precision, average_precision_per_attribute
from .edits import EditPreservation, EditSuccess, edit_preservation, edit_success
from .domain_features import DEFAULT_DIMS, DEFAULT_FIT_IMAGES, DomainFeatures
from .errors import MetricUnavailable
from .frechet import (FID_WEIGHTS_FILE, FeatureStats, InceptionFeatures, RealFloor, extract_features,
                      feature_stats, fid, fid_domain, frechet_distance, inception_unavailable_reason,
                      inception_weights_path, real_floor)
from .perceptual import (ALEXNET_FILE, LPIPSMetric, alexnet_weights_path, dpips,
                         lpips_linear_weights_path, lpips_unavailable_reason)
from .pixel import mse, psnr, psnr_from_mse
from .registry import Metric, UnknownMetric, all_metrics, get, register
from .stats_cache import StatsCache, stats_key
from .swd import SWDResult, swd

__all__ = [
    "DomainFeatures", "DEFAULT_DIMS", "DEFAULT_FIT_IMAGES", "Metric", "UnknownMetric", "register", "get", "all_metrics", "MetricUnavailable",
    "mse", "psnr", "psnr_from_mse",
    "LPIPSMetric", "dpips", "alexnet_weights_path", "lpips_linear_weights_path",
    "lpips_unavailable_reason", "ALEXNET_FILE",
    "FeatureStats", "feature_stats", "frechet_distance", "extract_features", "InceptionFeatures", "fid",
    "fid_domain", "RealFloor", "real_floor", "inception_weights_path", "inception_unavailable_reason",
    "FID_WEIGHTS_FILE", "StatsCache", "stats_key",
    "SWDResult", "swd",
    "APResult", "average_precision", "average_precision_per_attribute", "ap_mean",
    "EditSuccess", "EditPreservation", "edit_success", "edit_preservation",
]
