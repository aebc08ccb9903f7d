"""The metric context: one object that holds everything a metric function may need.

``EvalResources`` lives for one harness run (all methods): the bundle, the lazily built evaluation
networks (LPIPS, Inception, the evaluation embedding), the real reference sets and an on-disk cache of
real-image features (keyed by a hash of the data and the network, written atomically), so that real
statistics are computed once per harness run and reused by every method and later runs.

``MetricContext`` is one evaluation: the real images, their reconstructions (decoded once), the codes,
per-image rows and labels of one run (or one batch, for per-image metrics), plus the resources.
A metric is a function ``(ctx) -> value(s)``; see ``bench.metrics.registry``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from bench.metrics.errors import MetricUnavailable
from idinvert.utils import device_of

# fid_domain's PCA is fitted on training images from this index on: disjoint from the floor's reference
# set (the first N training images) and from the test split.
FIT_OFFSET = 40_000


@dataclass
class EvalNetwork:
    """The benchmark's evaluation network: the bundle's judge (an evaluation-only network that no method,
    encoder, GAN or boundary training uses; not the attribute classifier, whose features are the
    methods' perceptual loss F and whose predictions label the boundaries' training codes). ``embed``: images -> [B, K] (PCA-reduced) for Fréchet metrics; ``features``:
    images -> feature maps for dpips; ``logits``: images -> [B, A] attribute logits; ``label`` says what it is.
    """

    module: Any
    embed: Callable[[Tensor], Tensor]
    features: Callable[[Tensor], Any]
    logits: Callable[[Tensor], Tensor]
    attributes: tuple[str, ...]
    label: str
    id: str

    @property
    def device(self) -> torch.device:
        return device_of(self.module)


class EvalResources:
    """Per-harness-run objects shared by every method's evaluation (built on first use)."""

    def __init__(self, bundle: Any, opts: Any, device: torch.device, results_dir: Path):
        from bench.metrics.stats_cache import StatsCache

        self.bundle, self.opts, self.device = bundle, opts, device
        self.results_dir = Path(results_dir)
        self.cache = StatsCache(self.results_dir / "cache" / "features")
        self._built: dict[str, Any] = {}
        self._features: dict[str, Tensor] = {}
        self._references: dict[int, Tensor | None] = {}

    def provide(self, key: str, value: Any) -> None:
        """Use ``value`` for resource ``key`` ("lpips", "inception", "eval_network", "boundaries") instead
        of building it (tests; a caller that already holds the network)."""
        self._built[key] = value

    def _once(self, key: str, build: Callable[[], Any]) -> Any:
        """``build()`` once; a MetricUnavailable is remembered and raised again on every later call."""
        if key not in self._built:
            try:
                self._built[key] = build()
            except MetricUnavailable as exc:
                self._built[key] = exc
        value = self._built[key]
        if isinstance(value, MetricUnavailable):
            raise value
        return value

    # -- evaluation networks -------------------------------------------------------------------------
    def lpips(self) -> Any:
        from bench.metrics.perceptual import LPIPSMetric

        return self._once("lpips", lambda: LPIPSMetric(device=self.device))

    def inception(self) -> Any:
        from bench.metrics.frechet import InceptionFeatures

        return self._once("inception", lambda: InceptionFeatures(device=self.device))

    def identity(self) -> Any:
        """ArcFace IR-SE50 (``model_ir_se50.pth`` in the weights folder); MetricUnavailable without it."""
        from bench.metrics.identity import build_identity

        return self._once("identity", lambda: build_identity(getattr(self.opts, "weights_dir", None), self.device))

    def eval_network(self) -> EvalNetwork:
        """The evaluation network; MetricUnavailable when the bundle has none."""
        return self._once("eval_network", self._build_eval_network)

    def _build_eval_network(self) -> EvalNetwork:
        from bench.metrics.domain_features import DEFAULT_FIT_IMAGES, DomainFeatures

        bundle = self.bundle
        if not bundle.has("judge"):
            raise MetricUnavailable("eval_network", f"bundle {bundle.name} has no judge network (the "
                                                    "evaluation-only embedding and attribute judge that "
                                                    "define the domain metrics)")
        judge = bundle.judge
        fit = self._training_images(FIT_OFFSET, DEFAULT_FIT_IMAGES)
        embed = DomainFeatures(lambda x: judge.embed(x.to(self.device)), fit, label="judge.embed")
        return EvalNetwork(module=judge, embed=embed, features=judge.features, logits=judge,
                           attributes=tuple(bundle.attributes), label=embed.description,
                           id=f"{bundle.fingerprint[:16]}:{embed.id}")

    # -- real data -----------------------------------------------------------------------------------
    def _training_images(self, start: int, n: int) -> Tensor:
        """Training images [start, start + n) of the bundle's built-in domain (disjoint from its test
        split); MetricUnavailable for a bundle without one."""
        from idinvert.domains import domain_of

        domain = domain_of(self.bundle)
        if domain is None:
            raise MetricUnavailable("reference", f"bundle {self.bundle.name} has no built-in real "
                                                 "training images for the evaluation embedding")
        train = domain.split("train", start + n)
        return train.load(list(range(start, start + n)))

    def reference(self, n: int) -> Tensor | None:
        """A real set of ``n`` images disjoint from the test images (for real-vs-real floors), rendered
        once per harness run; None with ``--data`` (the floor then splits the test set)."""
        if n not in self._references:
            self._references[n] = None if self.opts.data is not None else self._training_images(0, n)
        return self._references[n]

    def real_features(self, extract: Callable[[Tensor], Tensor], extractor_id: str, data_key: str,
                      images: Callable[[], Tensor]) -> Tensor:
        """Features of a real image set, computed once per harness run and cached on disk under a hash of
        (data, network): ``data_key`` names the images (dataset fingerprint and indices), ``extractor_id``
        the network and its weights; ``extract``: images [N, 3, H, W] -> [N, K]. ``images()`` renders
        the images only on a miss."""
        from bench.metrics.stats_cache import stats_key

        key = stats_key(data_key, extractor_id, "images in [-1, 1], float32")
        if key not in self._features:
            hit = self.cache.get(key)
            if hit is not None:
                self._features[key] = torch.from_numpy(hit[0]["features"])
            else:
                feats = extract(images()).float().cpu()
                self.cache.put(key, {"features": feats.numpy()}, {"data": data_key, "extractor": extractor_id})
                self._features[key] = feats
        return self._features[key]


def data_key(dataset: Any, indices: Sequence[int]) -> str:
    """A short, stable name of some images of a dataset: its fingerprint and a hash of the indices."""
    digest = hashlib.sha256(json.dumps([int(i) for i in indices]).encode()).hexdigest()[:16]
    return f"{getattr(dataset, 'fingerprint', '?')}:{len(indices)}:{digest}"


@dataclass
class MetricContext:
    """What one metric evaluation sees. Images are CPU tensors [N, 3, H, W] in [-1, 1].

    images / recons: the real images and their reconstructions (decoded once); codes: [N, L, D] or None;
    indices / ids: the images' positions in the dataset and their ids; rows: the run's stored per-image
    rows (set level); seconds: per-image invert() times; labels / label_names / label_source: ground
    truth of the images when known; run_id, out_dir: where a metric may save image artifacts.
    A metric adds curves to ``curves`` and ``(kind, relative path, meta)`` tuples to ``artifacts``.
    """

    resources: EvalResources
    images: Tensor
    recons: Tensor
    codes: Tensor | None = None
    indices: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    dataset: Any = None
    rows: list[dict] = field(default_factory=list)
    labels: Tensor | None = None
    label_names: list[str] = field(default_factory=list)
    label_source: str = "none"
    run_id: str | None = None
    curves: dict[str, Any] = field(default_factory=dict)
    artifacts: list[tuple[str, str, dict]] = field(default_factory=list)
    memo: dict[str, Any] = field(default_factory=dict)
    # One decoder per image (``.synthesis(codes [N, L, D])``) for a method whose output is more than a
    # code (PTI's per-image tuned generator); None: every code decodes with the bundle's G.
    decoders: list[Any] | None = None

    def __post_init__(self) -> None:
        if self.labels is not None:
            self.labels = torch.as_tensor(self.labels).long().cpu()
            if self.labels.shape != (self.n, len(self.label_names)):
                raise ValueError(f"labels must be [N={self.n}, {len(self.label_names)}], one column per "
                                 f"attribute of {self.label_names}, got {tuple(self.labels.shape)}")

    # -- shortcuts ----------------------------------------------------------------------------------
    @property
    def bundle(self) -> Any:
        return self.resources.bundle

    @property
    def device(self) -> torch.device:
        return self.resources.device

    @property
    def seed(self) -> int:
        return int(self.resources.opts.seed)

    @property
    def n(self) -> int:
        return int(self.images.shape[0])

    @property
    def eval_embedding(self) -> EvalNetwork:
        """THE evaluation network of the benchmark (embedding, feature maps, attribute logits, label).
        Every metric that judges images through a network reads it here, so replacing the network is
        this one accessor. Raises MetricUnavailable when there is none."""
        return self.resources.eval_network()

    def reference(self, n: int) -> Tensor | None:
        return self.resources.reference(n)

    @property
    def lpips(self) -> Any:
        """The LPIPS network (``lpips_weights``); MetricUnavailable without its ImageNet file."""
        return self.resources.lpips()

    @property
    def inception(self) -> Any:
        """pytorch-fid's Inception (``inception_weights``); MetricUnavailable without its weights."""
        return self.resources.inception()

    @property
    def identity(self) -> Any:
        """ArcFace IR-SE50 (``identity_weights``); MetricUnavailable without model_ir_se50.pth."""
        return self.resources.identity()

    @property
    def batch_size(self) -> int | None:
        return getattr(self.resources.opts, "batch_size", None)

    def for_metric(self, metric: Any) -> "MetricView":
        """This context as ``metric`` sees it: what its ``needs`` declare, and a clear error for the rest."""
        return MetricView(self, metric)

    @torch.no_grad()
    def decode(self, codes: Tensor, owners: Sequence[int] | None = None, batch_size: int = 128) -> Tensor:
        """codes [N, L, D] -> images [N, 3, H, W] in [-1, 1] on the CPU. ``owners[n]``: the position (in
        this context) of the image whose code code n was derived from (its edit, an interpolation from
        it); with per-image ``decoders`` code n decodes with ``decoders[owners[n]]``, else with the
        bundle's G. A context with decoders needs ``owners``."""
        if self.decoders is None:
            g = self.bundle.generator
            dev = device_of(g)
            out = [g.synthesis(c.to(dev)).clamp(-1, 1).float().cpu() for c in codes.split(batch_size)]
            return torch.cat(out) if out else torch.empty(0)
        if owners is None or len(owners) != codes.shape[0]:
            raise ValueError("this context decodes with per-image decoders: give the owner image of each code")
        out = []
        start = 0
        while start < len(owners):  # runs of consecutive codes of one owner, decoded together
            end = start
            while end < len(owners) and owners[end] == owners[start] and end - start < batch_size:
                end += 1
            out.append(self.decoders[owners[start]].synthesis(codes[start:end].float().to(self.device))
                       .clamp(-1, 1).float().cpu())
            start = end
        return torch.cat(out)

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """A value shared by several metrics of this evaluation, computed once."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def real_features(self, extract: Callable[[Tensor], Tensor], extractor_id: str) -> Tensor:
        """``extract(self.images)`` [N, K], cached per harness run (and on disk when the dataset is known)."""
        if self.dataset is None:
            return self.cached(f"real:{extractor_id}", lambda: extract(self.images).float().cpu())
        return self.resources.real_features(extract, extractor_id, data_key(self.dataset, self.indices),
                                            lambda: self.images)

    def reference_features(self, extract: Callable[[Tensor], Tensor], extractor_id: str,
                           n: int) -> Tensor | None:
        """Features of the first ``n`` images of the disjoint real reference set, or None (no reference)."""
        ref = self.reference(n)
        if ref is None:
            return None
        key = f"reference:{self.bundle.name}:{self.bundle.resolution}px:train[0:{n}]"
        return self.resources.real_features(extract, extractor_id, key, lambda: ref[:n])


# The context's attributes a metric must declare in ``needs`` to read (the rest -- n, ids, seed, device,
# memo, curves, artifacts, resources -- is bookkeeping every metric may use).
GUARDED = {
    "images": "images", "real_features": "images", "recons": "recons", "codes": "codes",
    "bundle": "generator", "decode": "generator", "decoders": "generator",
    "eval_embedding": "eval_network", "reference": "reference", "reference_features": "reference",
    "labels": "labels", "label_names": "labels", "label_source": "labels",
    "lpips": "lpips_weights", "inception": "inception_weights", "identity": "identity_weights",
    "rows": "timing",
}


class UndeclaredNeed(AttributeError):
    """A metric function read a part of the context that its registry entry's ``needs`` do not declare
    (a bug in the metric's declaration, not a missing resource: never stored as unavailable)."""


class MetricView:
    """A MetricContext seen by one metric: reading a guarded attribute (``GUARDED``) that the metric's
    ``needs`` do not declare raises ``UndeclaredNeed``; everything else reads (and writes) through."""

    def __init__(self, ctx: MetricContext, metric: Any):
        object.__setattr__(self, "_ctx", ctx)
        object.__setattr__(self, "_metric", metric)

    def __getattr__(self, name: str) -> Any:
        need = GUARDED.get(name)
        if need is not None and need not in self._metric.needs:
            raise UndeclaredNeed(f"metric {self._metric.name!r} reads ctx.{name}, which needs {need!r}; "
                                 f"add {need!r} to its registry entry's needs (declared: "
                                 f"{', '.join(self._metric.needs)})")
        return getattr(self._ctx, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._ctx, name, value)

    def for_metric(self, metric: Any) -> "MetricView":
        return MetricView(self._ctx, metric)
