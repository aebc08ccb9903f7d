"""Bundles: `base.py` (what every bundle is, and the registry `BUNDLES`) and the formats, one file
each: the pSp, e4e and ReStyle releases (`release.py` holds what they share) and `bench train` output
directories (`trained.py`). `register()` puts them into `BUNDLES`; `idinvert.zoo` (the embedded bundle)
calls it after registering its own, so that importing the zoo gives every bundle. Nothing here imports
the zoo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from idinvert.bundles import e4e, psp, restyle, trained
from idinvert.bundles.release import ReleaseFormat, build_release_bundle

__all__ = ["RELEASE_FORMATS", "register", "doctor_rows"]

RELEASE_FORMATS: tuple[ReleaseFormat, ...] = (e4e.FORMAT, psp.FORMAT, restyle.PSP_FORMAT, restyle.E4E_FORMAT)


def _builder(fmt: ReleaseFormat):
    def build(weights_dir: Optional[Path]):
        return build_release_bundle(fmt, weights_dir)
    build.__name__ = f"build_{fmt.name.replace('-', '_')}"
    return build


def register(bundles=None) -> None:
    """Add the release bundles to `bundles` (default `BUNDLES`). Idempotent."""
    from idinvert.bundles.base import BUNDLES, BundleSpec

    bundles = BUNDLES if bundles is None else bundles
    for fmt in RELEASE_FORMATS:
        bundles[fmt.name] = BundleSpec(_builder(fmt), (fmt.filename,), fmt.describe(), accepts_file=True)
    bundles[trained.NAME] = BundleSpec(
        trained.build_trained_bundle, trained.SPEC_FILES,
        "a directory written by `bench train` (--bundle DIR, or --bundle trained --weights-dir DIR)")


def doctor_rows(weights_dir: Optional[Path] = None) -> list[dict[str, Any]]:
    """`bench doctor` rows for the four release files and IR-SE50 (see `idinvert.bundles.doctor`)."""
    from idinvert.bundles.doctor import rows

    return rows(RELEASE_FORMATS, weights_dir)
