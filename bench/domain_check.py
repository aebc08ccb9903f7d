"""Is a user's ``--data`` folder in the bundle's domain? A check run before any inversion.

The bundle's metrics (the domain Fréchet distance, dpips, attribute AP through the bundle's classifier)
only mean what they say for images of the domain the bundle was trained on: photographs run through the
embedded cartoon-face bundle give numbers that measure out-of-domain inversion, with labels from a
classifier that never saw a photograph. So the data is compared with the bundle's own real set in the
evaluation embedding (the judge's full embedding, of which ``fid_domain`` uses a PCA projection): the typical distance of the data's images to the
real set, against the floor — the same distance for real images that are not in that set, i.e. what a
new image of the domain gives. A ratio above ``RATIO_LIMIT`` marks the data out of the domain:
the runner prints a warning, stores the verdict in each run's ``env["domain_check"]`` and the report
shows a banner.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

# Measured on the embedded bundle with its judge's embedding: its test split saved as PNGs sits at a
# ratio of 0.96-1.01, the same images brightened by 20/255 at 1.02-1.09; smooth colour fields at 1.8 and
# uniform noise at 1.7 (8 or 64 images; tests/test_reliability.py::test_4).
RATIO_LIMIT = 1.4
MAX_IMAGES = 256          # enough for a stable verdict; the check stays a second or two
MIN_IMAGES = 4
REFERENCE_IMAGES = 1024   # the bundle's real set (training split; the PCA was fitted on other images)
K = 5


@dataclass
class DomainCheck:
    status: str                    # "in" | "out" | "unavailable"
    distance: float | None = None  # median distance of the data's images to the bundle's real set
    floor: float | None = None     # the same for other real images of the domain
    ratio: float | None = None
    n: int = 0
    limit: float = RATIO_LIMIT
    features: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def message(self, dataset: str, bundle: str) -> str:
        if self.status == "out":
            return (f"the data {dataset} looks out of the domain of bundle {bundle}: its distance to the "
                    f"bundle's real images is {self.distance:.4g}, {self.ratio:.1f}x the real-vs-real floor "
                    f"{self.floor:.4g} (limit {self.limit:g}x, {self.n} images). Its numbers measure "
                    "out-of-domain inversion, and attribute labels from the bundle's classifier may be "
                    "meaningless for it")
        if self.status == "in":
            return (f"domain check: {dataset} is within bundle {bundle}'s domain (distance "
                    f"{self.ratio:.2f}x the real-vs-real floor, {self.n} images)")
        return f"domain check not done: {self.reason}"


def check_domain(dataset: Any, n: int, bundle: Any, features: Any) -> DomainCheck:
    """``features``: images -> [B, K], the evaluation embedding, or None when the bundle has none
    (no classifier, or no built-in real images to fit it on: then there is nothing to compare with).

    The distance of an image to the real set is the distance to its ``K``-th nearest neighbour among
    ``REFERENCE_IMAGES`` real images; the data's distance is the median over (up to ``MAX_IMAGES``) of
    its images, the floor the same median over as many other real images. Unlike a Fréchet distance,
    whose covariance term is mostly noise at a few images, this stays sharp for a handful of images."""
    if features is None:
        return DomainCheck("unavailable", reason=f"bundle {bundle.name} has no evaluation embedding with a "
                                                 "built-in real set to compare the data with")
    m = min(n, MAX_IMAGES)
    if m < MIN_IMAGES:
        return DomainCheck("unavailable", n=m, reason=f"only {m} image(s); the check needs {MIN_IMAGES}")
    from idinvert.domains import domain_of

    domain = domain_of(bundle)
    if domain is None:
        return DomainCheck("unavailable", n=m, reason=f"bundle {bundle.name} has no built-in real images "
                                                       "to compare the data with")
    picks = torch.linspace(0, n - 1, m).round().long().tolist()  # spread over the whole set
    data = dataset.load(picks)
    real = domain.split("train", REFERENCE_IMAGES + m)
    with torch.no_grad():
        ref = features(real.load(list(range(REFERENCE_IMAGES)))).double()
        held = features(real.load(list(range(REFERENCE_IMAGES, REFERENCE_IMAGES + m)))).double()
        f_data = features(data).double()
    distance = float(_kth_neighbour(f_data, ref).median())
    floor = float(_kth_neighbour(held, ref).median())
    ratio = distance / max(floor, 1e-12)
    return DomainCheck("out" if ratio > RATIO_LIMIT else "in", distance=distance, floor=floor, ratio=ratio,
                       n=m, features=f"{K}-th nearest-neighbour distance among {REFERENCE_IMAGES} real images, "
                                     f"in {getattr(features, 'description', 'the evaluation embedding')}")


def _kth_neighbour(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """x: [N, D], ref: [M, D] -> [N]: each row's distance to its K-th nearest row of ref."""
    return torch.cdist(x, ref).topk(K, dim=1, largest=False).values[:, -1]
