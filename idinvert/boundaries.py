"""InterFaceGAN attribute boundaries in W, trained on sampled codes labelled by the attribute classifier.

Procedure (Shen et al., InterFaceGAN; as ``genforce/interfacegan`` ``train_boundary``, written anew here):

1. draw z ~ N(0, I) (seeded), map to w = mapping(z) — *untruncated*, so the boundary covers the whole
   W distribution in which inverted codes of real images lie; render G(w broadcast to every layer);
2. score each image with the classifier's *logit* per attribute (logits, not probabilities: a confident
   classifier saturates the sigmoid and sorting saturated probabilities is sorting noise);
3. per attribute keep the ``top_fraction`` highest-scoring codes as positives and the same number of
   lowest-scoring as negatives (capped so that no code is taken against the sign of its logit, which
   matters for an attribute the generator renders rarely); split each side ``1 - val_fraction`` /
   ``val_fraction`` (seeded);
4. fit a linear SVM on the raw w (no standardisation: the max-margin direction is wanted in W's own
   Euclidean metric, where edits are made); normal n = coef / ||coef||, offset = intercept / ||coef||;
5. record the validation accuracy on the held-out extremes and, because the extremes are the easy
   cases, also the agreement with the classifier's thresholded prediction on *all* sampled codes
   (``meta["all_accuracy"]``) and the spread of the signed distances (``meta["distance_std"]``, the
   scale in which edit strengths are chosen, see ``bench.metrics.semantic``).

Where the hyperplane sits: the SVM separates the two extremes, so for a balanced attribute it passes
near the median code, not necessarily through the classifier's decision threshold. Distances are
therefore meaningful up to that offset; rankings (AP) and edits (differences of distance) do not use it.

Defaults, measured on the embedded synthetic-faces bundle (shipped G and classifier): 6,000 sampled
codes, boundaries fitted on 4,000, the other 2,000 scored by signed distance, AP against the
classifier's thresholded prediction, mean over the five attributes (gender per column in brackets):

    top_fraction   0.02          0.05          0.10          0.20          0.35          0.50
    held-out AP    0.871 (0.81)  0.901 (0.85)  0.919 (0.85)  0.914 (0.77)  0.918 (0.77)  0.919 (0.77)

and at top_fraction 0.1 with n_samples 1000 / 2000 / 3000 / 4000: 0.872 / 0.906 / 0.908 / 0.919.
InterFaceGAN's 2% is made for 500k samples of graded attributes; ours are binary and rendered
exactly, the classifier is confident on > 92% of samples (|p - 0.5| > 0.4), and with a few thousand
samples 2% leaves too few codes for a hyperplane in 128-d W. Above 10% the rarer side runs out: the
generator renders long hair (gender) on only 21% of samples, so 20% a side takes every positive, down
to the doubtful ones, and the gender normal degrades (AP 0.85 -> 0.77; edits along it flip 7% / 16%
of the eligible codes at 1.5 / 3 std instead of 72% / 83%). Hence ``top_fraction = 0.1`` and
``n_samples = 5000`` (past the plateau; ~45 s of CPU for sampling, once per bundle thanks to the
cache). ``C = 1`` (LinearSVC); C = 0.1 changed held-out AP by < 0.003 on an earlier GAN snapshot.

Issue 22: the harness now builds boundaries by a named construction (``BoundarySettings.construction``,
``idinvert.boundary_constructions``, where the held-out comparison is): the scoring boundaries by the
best AP ceiling on G's held-out codes, the edit directions by the best edit-success ceiling. The
procedure above is the construction None (and ``svm-10%-per-layer``, its re-implementation there).

Boundaries are stored as ``Boundary`` records (``idinvert.official_boundaries``): the W normal is
repeated over the applied layers (all by default, or a chosen list, as the official editing scripts'
``manipulate_layers``), so our boundaries and the official per-layer ones are used the same way
(``idinvert.editing``).

``BoundaryCache`` keeps trained boundaries per bundle under a key hashed from the bundle's fingerprint
and every setting; files are written atomically and read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from idinvert.boundary_constructions import CONSTRUCTIONS, DEFAULT_CONSTRUCTION, fit_construction
from idinvert.editing import edit_codes, signed_distance  # noqa: F401  (part of this module's API)
from idinvert.official_boundaries import Boundary
from idinvert.utils import atomic_save, device_of

__all__ = ["BoundarySettings", "DEFAULT_SETTINGS", "train_boundaries", "train_boundary_from_codes",
           "sample_scored_codes", "sample_codes", "distance_spread", "BoundaryCache", "edit_codes",
           "signed_distance", "ALGORITHM_VERSION"]

# Bump when the training procedure changes in a way that changes the result (invalidates caches).
ALGORITHM_VERSION = "interfacegan-w-linearsvc-v2-constructions"
CACHE_FORMAT = "idinvert-bench-boundaries-v1"


@dataclass(frozen=True)
class BoundarySettings:
    """Everything that determines a set of trained boundaries besides the bundle (the cache key).

    n_samples:    codes sampled from G
    top_fraction: fraction of codes taken as positives (and as many as negatives), per attribute
    val_fraction: share of the chosen codes held out for validation accuracy
    seed:         sampling and split seed
    layers:       W+ layers the boundaries apply to (None = all)
    C:            SVM regularisation (LinearSVC's C; 1.0 as sklearn's SVC default)
    construction: a named construction of ``idinvert.boundary_constructions`` (its own selection, layout
                  and model; ``top_fraction``, ``val_fraction`` and ``C`` then do not apply), or None for
                  the InterFaceGAN procedure of this module with the settings above
    """

    n_samples: int = 5_000
    top_fraction: float = 0.1
    val_fraction: float = 0.3
    seed: int = 0
    layers: tuple[int, ...] | None = None
    C: float = 1.0
    space: str = "w"
    construction: str | None = DEFAULT_CONSTRUCTION  # idinvert.boundary_constructions; None: the procedure above

    def __post_init__(self) -> None:
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(l) for l in self.layers))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEFAULT_SETTINGS = BoundarySettings()


# --------------------------------------------------------------------------------------------------
# Sampling and the SVM
# --------------------------------------------------------------------------------------------------


# The last few (networks' state, n, seed) -> (codes, logits) of sample_scored_codes: a run builds its
# scoring and its edit boundaries from the same labelled sample, and sampling dominates the cost.
_SCORED_CACHE: list[tuple[tuple, tuple[Any, Any], tuple[Tensor, Tensor]]] = []


def _state_token(module: Any) -> tuple:
    """Identity of a module's current weights: the object, and each tensor's storage and in-place
    version counter (any optimiser step or load_state_dict bumps them)."""
    if not isinstance(module, torch.nn.Module):
        return (id(module),)
    return (id(module),) + tuple((t.data_ptr(), t._version) for t in
                                 list(module.parameters()) + list(module.buffers()))


def sample_scored_codes(generator: Any, classifier: Any, n_samples: int, seed: int,
                        batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Sample ``n_samples`` codes and score their images: -> (codes, logits [N, A]), on the CPU.
    Repeated calls with the same networks (unchanged weights), n and seed return the kept result.

    codes are w [N, D] for a generator with a shared W space (images: w broadcast to all layers), and
    whole untruncated W+ codes [N, L, D] for one whose mapping emits a code per layer (``repeat_w``
    False, the official StyleGAN-inv layout). z is drawn on the CPU from
    ``torch.Generator().manual_seed(seed)`` so the codes do not depend on the device.
    """
    key = (_state_token(generator), _state_token(classifier), int(n_samples), int(seed))
    for k, nets, (codes, logits) in _SCORED_CACHE:
        if k == key and nets[0] is generator and nets[1] is classifier:
            return codes.clone(), logits.clone()
    result = _sample_scored_codes(generator, classifier, n_samples, seed, batch_size)
    # the entry holds the networks themselves, so their ids cannot be reused while it lives
    _SCORED_CACHE[:] = [*_SCORED_CACHE[-1:], (key, (generator, classifier), result)]
    return result[0].clone(), result[1].clone()


@torch.no_grad()
def _sample_scored_codes(generator: Any, classifier: Any, n_samples: int, seed: int,
                         batch_size: int) -> tuple[Tensor, Tensor]:
    per_layer = getattr(generator, "repeat_w", True) is False
    device = device_of(generator)
    rng = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n_samples, generator.z_space_dim, generator=rng)
    ws, logits = [], []
    modes = [(m, m.training) for m in (generator, classifier) if isinstance(m, torch.nn.Module)]
    try:
        for m, _ in modes:
            m.eval()
        for chunk in z.split(batch_size):
            if per_layer:
                code = generator.z_to_wp(chunk.to(device), truncate=False)
                images = generator.synthesis(code)
            else:
                code = generator.mapping(chunk.to(device))
                if code.ndim == 3:  # a mapping that already broadcasts
                    code = code[:, 0]
                images = generator.synthesis(code[:, None].expand(-1, generator.num_layers, -1))
            ws.append(code.float().cpu())
            logits.append(classifier(images).float().cpu())
    finally:
        for m, mode in modes:
            m.train(mode)
    return torch.cat(ws), torch.cat(logits)


def train_boundary_from_codes(codes: Tensor | np.ndarray, scores: Tensor | np.ndarray, *,
                              top_fraction: float = DEFAULT_SETTINGS.top_fraction,
                              val_fraction: float = DEFAULT_SETTINGS.val_fraction, seed: int = 0,
                              C: float = DEFAULT_SETTINGS.C) -> dict[str, Any]:
    """Fit one linear boundary: codes [N, D], scores [N] (higher = more of the attribute).

    Returns {"normal": Tensor [D] (unit), "offset": float (intercept / ||coef||, so that
    ``normal·w + offset`` is the signed Euclidean distance), "val_accuracy", "train_accuracy",
    "all_accuracy" (agreement of the boundary's side with ``scores > 0`` on all N codes),
    "distance_std", "distance_mean" (of all N codes), "n_train", "n_val", "selection" (plain rank,
    or capped so that no code is taken against the sign of its score)}.
    """
    x, s = _as_float64(codes), _as_float64(scores)
    if x.ndim != 2 or s.shape != (x.shape[0],):
        raise ValueError(f"expected codes [N, D] and scores [N], got {x.shape} and {s.shape}")
    if not 0 < top_fraction <= 0.5:
        raise ValueError(f"top_fraction must be in (0, 0.5], got {top_fraction}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    chosen, selection = _codes_a_side(s, top_fraction, val_fraction)
    n_val = int(round(chosen * val_fraction))
    n_train = chosen - n_val
    n = x.shape[0]
    order = np.argsort(-s, kind="stable")
    rng = np.random.default_rng(seed)
    pos = order[:chosen][rng.permutation(chosen)]
    neg = order[n - chosen:][rng.permutation(chosen)]
    train_x = np.concatenate([x[pos[:n_train]], x[neg[:n_train]]])
    train_y = np.concatenate([np.ones(n_train), np.zeros(n_train)])
    normal, offset = _fit_normal(train_x, train_y, C, seed)

    def accuracy(px: np.ndarray, label: np.ndarray) -> float | None:
        return float(((px @ normal + offset > 0) == label).mean()) if len(label) else None

    val_x = np.concatenate([x[pos[n_train:]], x[neg[n_train:]]])
    val_y = np.concatenate([np.ones(n_val), np.zeros(n_val)]).astype(bool)
    dist = x @ normal + offset
    return {
        "normal": torch.from_numpy(normal).float(),
        "offset": offset,
        "val_accuracy": accuracy(val_x, val_y),
        "train_accuracy": accuracy(train_x, train_y.astype(bool)),
        "all_accuracy": float(((dist > 0) == (s > 0)).mean()),
        "distance_mean": float(dist.mean()),
        "distance_std": float(dist.std()),
        "n_train": int(n_train), "n_val": int(n_val), "selection": selection,
    }


def _as_float64(values: Tensor | np.ndarray) -> np.ndarray:
    return np.asarray(values.detach().cpu().numpy() if isinstance(values, Tensor) else values, np.float64)


def _codes_a_side(scores: np.ndarray, top_fraction: float, val_fraction: float) -> tuple[int, str]:
    """How many top- and bottom-scored codes a side the boundary is fitted on (training + validation),
    and how they were selected. scores: [N]."""
    n = scores.shape[0]
    chosen = min(int(n * top_fraction), n // 2)
    n_val = int(round(chosen * val_fraction))
    if chosen - n_val < 2:
        raise ValueError(f"{n} samples x top_fraction {top_fraction} leaves {chosen - n_val} training codes "
                         f"a side; sample more codes")
    # Never call a code positive that the classifier itself scores negative (or vice versa): for an
    # attribute the generator renders rarely, the top fraction would otherwise reach across the
    # decision threshold. Fall back to pure ranking (InterFaceGAN) when one side is too rare to train.
    capped = min(chosen, int((scores > 0).sum()), int((scores <= 0).sum()))
    if capped < chosen and capped - int(round(capped * val_fraction)) >= 2:
        return capped, "rank, capped at the classifier's decision threshold"
    return chosen, "rank"


def _fit_normal(train_x: np.ndarray, train_y: np.ndarray, C: float, seed: int) -> tuple[np.ndarray, float]:
    """A linear SVM's unit normal [D] and offset (signed distance of the origin) on codes train_x [M, D]
    with 0/1 labels train_y [M]."""
    from sklearn.svm import LinearSVC

    svm = LinearSVC(C=C, max_iter=20_000, random_state=seed)
    svm.fit(train_x, train_y)
    coef = svm.coef_.reshape(-1)
    norm = float(np.linalg.norm(coef))
    if not norm > 0:
        raise ValueError("the SVM found no direction (all coefficients zero)")
    return coef / norm, float(svm.intercept_[0]) / norm


def train_boundaries(generator: Any, classifier: Any, attributes: Sequence[str], *,
                     n_samples: int = DEFAULT_SETTINGS.n_samples,
                     top_fraction: float = DEFAULT_SETTINGS.top_fraction,
                     val_fraction: float = DEFAULT_SETTINGS.val_fraction,
                     seed: int = DEFAULT_SETTINGS.seed, space: str = "w",
                     layers: Sequence[int] | None = None, C: float = DEFAULT_SETTINGS.C,
                     construction: str | None = None, batch_size: int = 256,
                     progress: Callable[[str], None] | None = None) -> dict[str, Boundary]:
    """InterFaceGAN boundaries for every attribute of the classifier: -> {attribute: Boundary}.

    attributes: names of the classifier's logit columns, in order.
    layers: W+ layers the boundaries apply to (None = all ``generator.num_layers``).
    Each Boundary has ``normal [L, D]`` (the unit W normal repeated on every row; for a per-layer
    generator, ``repeat_w`` False, one SVM per layer and each row its own unit normal), ``layers``,
    ``offset``, ``val_accuracy`` and ``meta`` (train/all accuracy, distance spread, sample counts).
    """
    if space != "w":
        raise ValueError(f"boundaries are trained in W only (space='w'), got space={space!r}")
    t0 = time.perf_counter()
    codes, logits = sample_scored_codes(generator, classifier, n_samples, seed, batch_size)
    if logits.shape[1] != len(attributes):
        raise ValueError(f"classifier gives {logits.shape[1]} logits, {len(attributes)} attribute names")
    num_layers = int(generator.num_layers)
    layer_list = list(range(num_layers)) if layers is None else [int(l) for l in layers]
    out = {}
    for a, name in enumerate(attributes):
        if construction is not None:
            out[name] = _constructed(codes, logits[:, a], name, construction, num_layers, seed + a, n_samples)
            if progress is not None:
                progress(f"boundary {name} ({construction}): agreement with the classifier on all "
                         f"{n_samples} codes {out[name].meta['all_accuracy']:.3f}")
            continue
        if codes.ndim == 3:
            normal, fit = _fit_per_layer(codes, logits[:, a], layer_list, top_fraction=top_fraction,
                                         val_fraction=val_fraction, seed=seed + a, C=C)
        else:
            fit = train_boundary_from_codes(codes, logits[:, a], top_fraction=top_fraction,
                                            val_fraction=val_fraction, seed=seed + a, C=C)
            normal = fit["normal"].expand(num_layers, -1).clone()
        meta = {k: fit[k] for k in ("train_accuracy", "all_accuracy", "distance_mean", "distance_std",
                                    "n_train", "n_val", "selection")}
        meta.update(n_samples=n_samples, top_fraction=top_fraction, positive_rate=float(
            (logits[:, a] > 0).float().mean()), algorithm=ALGORITHM_VERSION,
            layout="per-layer W+" if codes.ndim == 3 else "W")
        out[name] = _make_boundary(name, normal, layer_list, fit["offset"], fit["val_accuracy"], meta)
        if progress is not None:
            progress(f"boundary {name}: val acc {fit['val_accuracy']:.3f}, all-codes agreement "
                     f"{fit['all_accuracy']:.3f}")
    if progress is not None:
        progress(f"trained {len(out)} boundaries on {n_samples} codes in {time.perf_counter() - t0:.1f}s")
    return out


def _constructed(codes: Tensor, scores: Tensor, attribute: str, construction: str, num_layers: int,
                 seed: int, n_samples: int) -> Boundary:
    """One attribute's boundary by a named construction, with the statistics the harness reads
    (``distance_std``: the unit of edit strengths; ``all_accuracy``: agreement with the labeller)."""
    if construction not in CONSTRUCTIONS:
        raise ValueError(f"unknown boundary construction {construction!r}; known: {', '.join(CONSTRUCTIONS)}")
    wp = codes if codes.ndim == 3 else codes[:, None]  # a shared-W generator: one layer, repeated below
    normal, layers, offset, meta = fit_construction(wp, scores, attribute, CONSTRUCTIONS[construction], seed)
    meta.update(construction_name=construction, n_samples=n_samples)
    if codes.ndim == 2:
        normal, layers = normal.expand(num_layers, -1).clone(), list(range(num_layers))
    b = _make_boundary(attribute, normal, layers, offset, None, meta)
    dist = signed_distance(wp.expand(-1, num_layers, -1) if codes.ndim == 2 else wp, b)
    b.meta.update(all_accuracy=float(((dist > 0) == (scores > 0)).float().mean()),
                  distance_mean=float(dist.mean()), distance_std=float(dist.std()),
                  positive_rate=float((scores > 0).float().mean()), algorithm=ALGORITHM_VERSION,
                  layout="per-layer W+" if codes.ndim == 3 else "W")
    return b


def _fit_per_layer(codes: Tensor, scores: Tensor, layers: list[int], **svm) -> tuple[Tensor, dict]:
    """One SVM per W+ layer on that layer's codes (the official per-layer boundaries: every row a unit
    normal). The boundary's signed distance is the mean over its layers of the per-layer distances,
    so its offset is the mean of the per-layer offsets. Returns (normal [L, D], summary as
    train_boundary_from_codes gives, accuracies of the combined distance, per-layer val accuracy in
    "layer_val_accuracy")."""
    L, D = codes.shape[1], codes.shape[2]
    normal = torch.zeros(L, D)
    fits = {}
    for layer in layers:
        fits[layer] = train_boundary_from_codes(codes[:, layer], scores, **svm)
        normal[layer] = fits[layer]["normal"]
    offset = float(np.mean([f["offset"] for f in fits.values()]))
    dist = (codes[:, layers] * normal[layers]).sum(-1).mean(1).numpy() + offset
    s = scores.numpy() if isinstance(scores, Tensor) else np.asarray(scores)
    vals = [f["val_accuracy"] for f in fits.values() if f["val_accuracy"] is not None]
    first = next(iter(fits.values()))
    return normal, {
        "offset": offset, "val_accuracy": float(np.mean(vals)) if vals else None,
        "train_accuracy": float(np.mean([f["train_accuracy"] for f in fits.values()])),
        "all_accuracy": float(((dist > 0) == (s > 0)).mean()),
        "distance_mean": float(dist.mean()), "distance_std": float(dist.std()),
        "n_train": first["n_train"], "n_val": first["n_val"], "selection": first["selection"],
        "layer_val_accuracy": {int(k): f["val_accuracy"] for k, f in fits.items()},
    }


@torch.no_grad()
def sample_codes(generator: Any, n: int, seed: int, batch_size: int = 1024) -> Tensor:
    """``n`` untruncated W+ codes [n, L, D] of z ~ N(0, I) drawn from a CPU generator seeded ``seed``
    (works for mappings that emit one w, broadcast, and for those that emit a whole W+ code)."""
    device = device_of(generator)
    z = torch.randn(n, generator.z_space_dim, generator=torch.Generator().manual_seed(int(seed)))
    out = []
    for chunk in z.split(batch_size):
        chunk = chunk.to(device)
        if hasattr(generator, "z_to_wp"):
            wp = generator.z_to_wp(chunk, truncate=False)
        else:
            w = generator.mapping(chunk)
            wp = w if w.ndim == 3 else w[:, None].expand(-1, generator.num_layers, -1)
        out.append(wp.float().cpu())
    return torch.cat(out)


def distance_spread(codes: Tensor, boundaries: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per boundary, mean and std of the signed distances of ``codes`` [N, L, D] (sampled codes give
    the scale in which edit strengths are expressed): -> {attribute: {"mean", "std"}}."""
    out = {}
    for name, b in boundaries.items():
        d = signed_distance(codes, b)
        out[name] = {"mean": float(d.mean()), "std": float(d.std())}
    return out


def _make_boundary(attribute: str, normal: Tensor, layers: list[int], offset: float,
                   val_accuracy: float | None, meta: dict[str, Any]) -> Boundary:
    n = meta.get("n_samples")
    kind = meta.get("construction_name") or "interfacegan linear svm"
    source = f"{kind} on {n} sampled w codes" if n else kind
    return Boundary(attribute=attribute, normal=normal, layers=list(layers), source=source,
                    val_accuracy=val_accuracy, offset=float(offset), meta=dict(meta))


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------

class BoundaryCache:
    """Trained boundaries on disk: ``dir/boundaries-<key>.pt``, one file per (bundle, settings).

    The key is a hash of the bundle fingerprint, the attribute names, the settings and the algorithm
    version. Files hold only tensors, numbers, strings, lists and dicts (loadable with
    ``weights_only=True``) and are written to a temporary file then renamed, so a reader never sees a
    half-written file and concurrent writers of one key leave one whole file.
    """

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)

    @staticmethod
    def key(fingerprint: str, attributes: Sequence[str], settings: BoundarySettings) -> str:
        blob = json.dumps({"fingerprint": fingerprint, "attributes": list(attributes),
                           "settings": settings.as_dict(), "algorithm": ALGORITHM_VERSION},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def path(self, key: str) -> Path:
        return self.dir / f"boundaries-{key}.pt"

    def load(self, key: str) -> dict[str, Boundary] | None:
        """The cached boundaries for ``key``, or None when absent (a corrupt file raises)."""
        path = self.path(key)
        if not path.is_file():
            return None
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != CACHE_FORMAT or blob.get("key") != key:
            raise ValueError(f"{path} is not a boundary cache file for key {key}")
        return {name: _make_boundary(name, rec["normal"], rec["layers"], rec["offset"],
                                     rec["val_accuracy"], rec["meta"])
                for name, rec in blob["boundaries"].items()}

    def save(self, key: str, boundaries: dict[str, Boundary], info: dict[str, Any] | None = None) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        blob = {"format": CACHE_FORMAT, "key": key, "info": _plain(info or {}),
                "boundaries": {name: {"normal": torch.as_tensor(b.normal).detach().float().cpu().clone(),
                                      "layers": [int(l) for l in b.layers],
                                      "offset": float(getattr(b, "offset", 0.0) or 0.0),
                                      "val_accuracy": None if b.val_accuracy is None
                                      else float(b.val_accuracy),
                                      "meta": _plain(getattr(b, "meta", {}) or {})}
                               for name, b in boundaries.items()}}
        return atomic_save(blob, self.path(key), fsync=True)

    def get_or_train(self, bundle: Any, settings: BoundarySettings = DEFAULT_SETTINGS,
                     progress: Callable[[str], None] | None = None) -> dict[str, Boundary]:
        """Cached boundaries of ``bundle`` (needs generator and classifier), training them on a miss."""
        attributes = list(bundle.attributes)
        key = self.key(bundle.fingerprint, attributes, settings)
        cached = self.load(key)
        if cached is not None:
            return cached
        if getattr(bundle, "classifier", None) is None:
            raise ValueError(f"bundle {getattr(bundle, 'name', '?')!r} has no attribute classifier to "
                             f"label sampled codes; supply boundary files instead")
        kwargs = settings.as_dict()
        boundaries = train_boundaries(bundle.generator, bundle.classifier, attributes, progress=progress,
                                      **kwargs)
        self.save(key, boundaries, {"bundle": getattr(bundle, "name", ""),
                                    "fingerprint": bundle.fingerprint, "settings": kwargs})
        return boundaries


def _plain(obj: Any) -> Any:
    """Make ``obj`` weights_only-loadable: dicts/lists/tuples of str, int, float, bool, None, tensors."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)
