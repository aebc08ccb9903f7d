"""Fréchet distances: FID (pytorch-fid's Inception, only with its real weights) and ``fid_domain``.

Feature extraction is kept apart from the statistics: ``feature_stats`` turns features into (mu, sigma),
``frechet_distance`` compares two such pairs with the repository's one Fréchet routine
(``idinvert.quality.gaussian_frechet``), which the tables, the claims' bootstrap and the code metrics share. FID needs
pytorch-fid's ported TF-Inception file ``pt_inception-2015-12-05-6726825d.pth`` in
``$TORCH_HOME/hub/checkpoints/``; we load it ourselves (strictly, ``weights_only``) so that no download
is ever attempted unless asked for. ``fid_domain`` uses any embedding callable (``classifier.embed``).

A Fréchet distance estimated from n samples is biased upwards at small n; ``real_floor`` measures that
bias on two disjoint real sets of the evaluated size, to be stored beside every FID.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import numpy as np
import torch
from torch import Tensor

from idinvert.utils import file_sha256

from .errors import MetricUnavailable
from .perceptual import hub_checkpoints_dir

# pytorch_fid.inception.FID_WEIGHTS_URL and its basename (a test pins both against the installed package)
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_DIMS = 2048


class FeatureStats(NamedTuple):
    """Gaussian statistics of a feature set: mean [K] and covariance [K, K], float64 numpy."""

    mu: np.ndarray
    sigma: np.ndarray


def _to_numpy64(features) -> np.ndarray:
    if isinstance(features, Tensor):
        features = features.detach().cpu().double().numpy()
    return np.asarray(features, dtype=np.float64)


def feature_stats(features: Tensor | np.ndarray) -> FeatureStats:
    """features: [N, K] (N >= 2)  ->  (mu [K], sigma [K, K]), unbiased covariance as pytorch-fid uses."""
    x = _to_numpy64(features)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"expected features [N >= 2, K], got shape {x.shape}")
    return FeatureStats(x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]))


def frechet_distance(stats_a: FeatureStats, stats_b: FeatureStats) -> float:
    """||mu_a − mu_b||² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½) (``idinvert.quality.gaussian_frechet``).
    Symmetric; 0 for equal stats up to the precision of the eigendecompositions."""
    from idinvert.quality import gaussian_frechet

    mu_a, sigma_a = np.atleast_1d(stats_a[0]), np.atleast_2d(stats_a[1])
    mu_b, sigma_b = np.atleast_1d(stats_b[0]), np.atleast_2d(stats_b[1])
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape:
        raise ValueError(f"statistics of different dimensions: {mu_a.shape} vs {mu_b.shape}")
    return gaussian_frechet(mu_a, sigma_a, mu_b, sigma_b)


Extractor = Callable[[Tensor], Tensor]


@torch.no_grad()
def extract_features(extractor: Extractor, images: Tensor | Iterable[Tensor],
                     batch_size: int = 50) -> Tensor:
    """Run ``extractor`` over images [N, 3, H, W] (or an iterable of such batches)  ->  [N, K] float32 CPU."""
    if isinstance(images, Tensor):
        images = images.split(batch_size)
    out = [extractor(batch).reshape(batch.shape[0], -1).float().cpu() for batch in images]
    if not out:
        raise ValueError("no images")
    return torch.cat(out)


def inception_weights_path() -> Path:
    """``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth`` (read at call time)."""
    return hub_checkpoints_dir() / FID_WEIGHTS_FILE


def inception_unavailable_reason(weights_path: str | os.PathLike | None = None) -> str | None:
    path = Path(weights_path) if weights_path is not None else inception_weights_path()
    if not path.is_file():
        return (f"pytorch-fid's Inception weights are missing: put {FID_WEIGHTS_FILE} (from "
                f"{FID_WEIGHTS_URL}) at {path} (set TORCH_HOME to use another directory)")
    return None


_HUB_LOCK = threading.Lock()


@contextlib.contextmanager
def _hub_cache_holding(path: Path) -> Iterator[None]:
    """torch.hub's cache directory, for the duration, is one whose ``checkpoints/`` holds ``path`` under
    pytorch-fid's file name (``torch.hub.set_dir``; the previous directory is restored after)."""
    with _HUB_LOCK, tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "checkpoints").mkdir()
        (Path(tmp) / "checkpoints" / FID_WEIGHTS_FILE).symlink_to(path.resolve())
        old = torch.hub.get_dir()
        torch.hub.set_dir(tmp)
        try:
            yield
        finally:
            torch.hub.set_dir(old)


class InceptionFeatures:
    """pytorch-fid's FID InceptionV3, pool3 features: ``extractor(images) -> [B, 2048]``.

    ``dims`` picks another of pytorch-fid's blocks (64, 192, 768); the metric ``fid`` is 2048 only.

    images: [B, 3, H, W] in [-1, 1]; mapped to [0, 1], then pytorch-fid resizes bilinearly to 299x299
    and rescales to [-1, 1] itself (its ``resize_input`` / ``normalize_input`` defaults).
    Raises :class:`MetricUnavailable` when the weights file is missing; ``allow_download=True`` is the
    explicit opt-in to let pytorch-fid fetch it.
    """

    name = "fid"
    dims = FID_DIMS
    preprocessing = "[-1,1]->[0,1] clamped; pytorch-fid bilinear resize to 299 (align_corners=False); float32"

    def __init__(self, device: str | torch.device = "cpu",
                 weights_path: str | os.PathLike | None = None, allow_download: bool = False,
                 dims: int = FID_DIMS):
        from pytorch_fid import inception as fid_inception

        if dims not in fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM:
            raise ValueError(f"pytorch-fid offers dims {sorted(fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM)}")
        self.dims = dims
        block = fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[dims]
        path = Path(weights_path) if weights_path is not None else inception_weights_path()
        self.device = torch.device(device)
        if allow_download and weights_path is None and not path.is_file():
            self.model = fid_inception.InceptionV3([block])
        else:
            reason = inception_unavailable_reason(path)
            if reason is not None:
                raise MetricUnavailable(self.name, reason)

            # pytorch-fid reads its weights through torch.hub's cache: check the file holds tensors only
            # (weights_only), then show it to pytorch-fid as the cached file, so nothing reaches for the net
            torch.load(path, map_location="cpu", weights_only=True)
            with _hub_cache_holding(path):
                self.model = fid_inception.InceptionV3([block])
        self.weights_path = path
        self.model.eval().requires_grad_(False).to(self.device)
        self._id: str | None = None

    @property
    def id(self) -> str:
        """Identifies the extractor for cache keys: package version, block, and the weights' hash."""
        if self._id is None:
            from importlib.metadata import version

            self._id = (f"pytorch-fid-{version('pytorch-fid')}:inception-v3-fid:dims-{self.dims}:"
                        f"sha256-{file_sha256(self.weights_path)[:16]}")
        return self._id

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        x = ((images.to(self.device, torch.float32) + 1) / 2).clamp(0, 1)
        out = self.model(x)[0]
        if out.shape[-2:] != (1, 1):  # the blocks before pool3 give maps; pytorch-fid averages them
            out = torch.nn.functional.adaptive_avg_pool2d(out, (1, 1))
        return out.flatten(1).cpu()


def _stats_of(x: Tensor | FeatureStats, extractor: Extractor, batch_size: int) -> FeatureStats:
    if isinstance(x, tuple):
        return FeatureStats(*x)
    return feature_stats(extract_features(extractor, x, batch_size))


def fid(fake: Tensor | FeatureStats, real: Tensor | FeatureStats,
        extractor: InceptionFeatures | None = None, batch_size: int = 50,
        device: str | torch.device = "cpu") -> float:
    """FID between two image sets [N, 3, H, W] in [-1, 1] (either may be given as cached FeatureStats).

    Builds :class:`InceptionFeatures` when ``extractor`` is None, which raises MetricUnavailable
    without its weights file. The stored ``fid`` metric is the 2048-d default; another extractor gives
    a Fréchet distance that must be stored under another name.
    """
    if extractor is None and not (isinstance(fake, tuple) and isinstance(real, tuple)):
        extractor = InceptionFeatures(device=device)
    return frechet_distance(_stats_of(fake, extractor, batch_size), _stats_of(real, extractor, batch_size))


def fid_domain(fake: Tensor | FeatureStats, real: Tensor | FeatureStats, embed: Extractor,
               batch_size: int = 50) -> float:
    """Fréchet distance in a domain embedding, e.g. ``classifier.embed: [B, 3, H, W] -> [B, K]``.

    Not comparable with ``fid``: different features, reported under its own name.
    """
    return frechet_distance(_stats_of(fake, embed, batch_size), _stats_of(real, embed, batch_size))


@dataclass(frozen=True)
class RealFloor:
    """Real-vs-real Fréchet distance of two disjoint random subsets of ``n`` real images each."""

    value: float
    n: int  # subset size actually used (smaller than asked when the pool holds fewer than 2n)
    n_requested: int
    n_pool: int
    seed: int


def real_floor(real_features: Tensor | np.ndarray, n: int, seed: int = 0) -> RealFloor:
    """The Fréchet distance between independent real samples of size ``n`` (the estimate's noise level;
    what a perfect *generator* would get — a perfect *reconstruction* of the same images scores 0): split a pool of real
    features [N, K] into two disjoint random subsets of ``n`` (``N // 2`` when N < 2n) and compare them.
    Features come from the same extractor as the FID it accompanies (Inception or classifier.embed)."""
    x = _to_numpy64(real_features)
    pool = x.shape[0]
    used = min(n, pool // 2)
    if used < 2:
        raise ValueError(f"need at least 4 real feature rows for a floor, got {pool}")
    order = np.random.default_rng(seed).permutation(pool)
    a, b = x[order[:used]], x[order[used:2 * used]]
    return RealFloor(value=frechet_distance(feature_stats(a), feature_stats(b)), n=used,
                     n_requested=n, n_pool=pool, seed=seed)
