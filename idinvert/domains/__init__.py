"""Where images come from: the built-in synthetic-faces domain, user image folders, G's own samples.

``DOMAINS`` names the built-in domains that a bundle's default test data can come from (a bundle says
which in ``BundleInfo.test_data``). The harness asks ``domain_of(bundle)`` for the bundle's domain --
its test split, its training images (reference sets, the evaluation embedding's PCA) -- and never names
a domain itself. A new built-in domain is one ``DOMAINS.add`` here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from idinvert.registry import Registry

__all__ = ["DomainSpec", "DOMAINS", "domain_of"]


@dataclass(frozen=True)
class DomainSpec:
    """A built-in domain: ``build(resolution)`` -> an object whose ``split(name, n)`` ("train" / "test")
    is an image set (``idinvert.domains.base.ImageSet``) of ``n`` images of that split."""

    build: Callable[[int], Any]
    description: str


def _synthetic_faces(resolution: int) -> Any:
    from idinvert.domains.synthetic_faces import SyntheticFaces

    return SyntheticFaces(resolution=resolution)


DOMAINS: Registry[DomainSpec] = Registry("domain")
DOMAINS.add("synthetic-faces", DomainSpec(
    _synthetic_faces, "procedurally rendered faces with exact attribute labels (train / test splits)"))


def domain_of(bundle: Any) -> Any | None:
    """The built-in domain of ``bundle``, built at its resolution; None for a bundle without one (its
    data must come from ``--data``)."""
    name = getattr(bundle.info, "test_data", None)
    return None if name is None else DOMAINS[name].build(bundle.resolution)
