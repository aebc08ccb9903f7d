"""What every bundle is, whatever its format: the ``Bundle`` (networks and facts of one domain), its
``BundleInfo``, the registry ``BUNDLES`` of known bundles (``BundleSpec``: a builder and its files) and
``load_bundle``. The embedded bundle (``idinvert.zoo``), the official checkpoints
(``idinvert.real_bundles``) and the e4e / pSp / ReStyle releases (``idinvert.bundles``) build on this
module and register themselves; it imports none of them (``idinvert.bundles.catalogue`` imports all).
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from idinvert.errors import UserError
from idinvert.registry import Registry, UnknownName
from idinvert.utils import file_sha256

__all__ = ["Bundle", "BundleInfo", "BundleSpec", "BUNDLES", "PARTS", "NEEDS_DATA", "UnknownBundle",
           "MissingWeights", "tensors_sha256", "weights_fingerprint", "load_bundle"]


class UnknownBundle(UnknownName):
    """A bundle name that is not in BUNDLES."""


class MissingWeights(UserError, FileNotFoundError):
    """A weight file a bundle needs is not there; the message says which and how to get it."""


# ------------------------------------------------------------------------------------------------
# The bundle
# ------------------------------------------------------------------------------------------------

def _part() -> Any:
    """A network field of Bundle (listed in PARTS; None where the bundle lacks it)."""
    return field(default=None, metadata={"part": True})


NEEDS_DATA = "bundle {name} has no built-in test images: pass --data FOLDER with images of its domain"


@dataclass(frozen=True)
class BundleInfo:
    """Every fact about a bundle that another module reads, with its default here and nowhere else.

    lambda_vgg_default: the perceptual weight the optimisation methods use unless given one (5e-5 for
      VGG16 conv4_3 as in the paper; a rescaled value for the embedded domain's F); None: set it.
    default_batch_size: images per batch by device type ({"cpu": 8, "cuda": 32}) for real-size
      networks; None: the harness default.
    cpu_note: a line the runner prints before a CPU run (real-size networks are slow there).
    perceptual_layer: the layer of the domain classifier that F reads (embedded bundles).
    test_data: name of the built-in domain whose test split is the default data ("synthetic-faces");
      None: the bundle has none and the user must pass --data (``needs_data`` says so).
    source: where the weights come from, for the record.
    random: True for untrained test bundles (their numbers mean nothing).
    extra: every other recorded fact (the manifest's quality bars, file hashes, notes), for display.
    """

    lambda_vgg_default: Optional[float] = None
    default_batch_size: Optional[dict[str, int]] = None
    cpu_note: Optional[str] = None
    perceptual_layer: Optional[int] = None
    test_data: Optional[str] = None
    source: Optional[str] = None
    random: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, facts: dict[str, Any], **overrides: Any) -> "BundleInfo":
        """Typed fields from ``facts`` (a manifest), the rest kept in ``extra``."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in facts.items() if k in names}
        extra = {k: v for k, v in facts.items() if k not in names}
        return cls(**{**known, **overrides}, extra=extra)

    def batch_size_for(self, device_type: str) -> Optional[int]:
        """The bundle's batch size on this device type, or None (use the harness default)."""
        if not self.default_batch_size:
            return None
        value = self.default_batch_size.get(device_type)
        return int(value) if value else None

    def needs_data(self, name: str) -> str:
        """The message for a run without --data on a bundle without built-in test images."""
        return NEEDS_DATA.format(name=name)


@dataclass
class Bundle:
    """Networks and facts for one domain. Images: [B, 3, R, R] RGB in [-1, 1]; codes: [B, L, D]."""
    name: str
    resolution: int
    generator: nn.Module = _part()                        # StyleGAN / StyleGAN2 generator
    encoder: Optional[nn.Module] = _part()                # domain-guided encoder
    conventional_encoder: Optional[nn.Module] = _part()
    discriminator: Optional[nn.Module] = _part()
    perceptual: nn.Module = _part()                       # F: images -> features [B, C, h, w]
    classifier: Optional[nn.Module] = _part()
    # The benchmark's evaluation-only network (embedding + attribute judge); no method may use it.
    judge: Optional[nn.Module] = _part()
    e4e_encoder: Optional[nn.Module] = _part()            # encoder4editing (Tov et al. 2021)
    restyle_encoder: Optional[nn.Module] = _part()        # ReStyle (Alaluf et al. 2021)
    psp_encoder: Optional[nn.Module] = _part()            # pSp (Richardson et al. 2021), release bundles
    attributes: tuple[str, ...] = ()
    fingerprint: str = ""
    info: BundleInfo = field(default_factory=BundleInfo)
    # A new optional network is one more `_part()` field here (after the others, default None): `has`,
    # `to` and `PARTS` pick it up; the builders that ship it pass it by keyword.

    @property
    def num_layers(self) -> int:
        return self.generator.num_layers

    @property
    def w_dim(self) -> int:
        return self.generator.w_space_dim

    @property
    def w_avg(self) -> torch.Tensor:
        """Mean w [D] tracked by the generator."""
        return self.generator.truncation.w_avg

    @property
    def device(self) -> torch.device:
        return self.generator.truncation.w_avg.device

    def has(self, part: str) -> bool:
        """Whether the bundle provides `part` (one of PARTS)."""
        if part not in PARTS:
            raise ValueError(f"unknown bundle part {part!r}; parts are {PARTS}")
        return getattr(self, part) is not None

    def to(self, device: str | torch.device) -> "Bundle":
        """Move every network to `device` (in place); returns self."""
        for part in PARTS:
            module = getattr(self, part)
            if module is not None:
                module.to(device)
        return self


PARTS = tuple(f.name for f in dataclasses.fields(Bundle) if f.metadata.get("part"))


def part_file(part: str) -> str:
    """The weights file of a bundle part (a ``Bundle`` field): ``<part>.pt``, its JSON card beside it, in
    the embedded zoo and in a directory ``bench train`` writes alike."""
    return f"{part}.pt"


# ------------------------------------------------------------------------------------------------
# Fingerprints and the registry
# ------------------------------------------------------------------------------------------------

def tensors_sha256(state_dict: dict) -> str:
    """sha256 of a state dict's contents (keys, dtypes, shapes, bytes): unlike the file's own hash,
    it does not change when the same weights are saved again (torch.save embeds the file name)."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        v = state_dict[key]
        digest.update(f"{key}|{v.dtype}|{tuple(v.shape)}|".encode())
        digest.update(v.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weights_fingerprint(files: dict[str, str | Path], hashes: Optional[dict[str, str]] = None
                        ) -> str:
    """Bundle fingerprint, 16 hex: sha256 over (part name, hash of its file) in part order.
    `hashes` gives a part's hash directly (e.g. its tensors_sha256); otherwise the file's sha256."""
    digest = hashlib.sha256()
    for part in sorted(files):
        digest.update(part.encode())
        h = (hashes or {}).get(part) or file_sha256(files[part])
        digest.update(h.encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class BundleSpec:
    """A known bundle: `builder(weights_dir or None) -> Bundle`, the files it needs, a description;
    `accepts_file`: `weights_dir` may be the one checkpoint file itself (not only a folder)."""
    builder: Callable[[Optional[Path]], Bundle]
    files: tuple[str, ...]
    description: str
    accepts_file: bool = False  # --weights-dir may name the checkpoint file itself (stylegan2, releases)


BUNDLES: Registry[BundleSpec] = Registry("bundle")


def load_bundle(name: str, weights_dir: str | Path | None = None,
                device: str | torch.device = "cpu") -> Bundle:
    """Build the bundle `name` (a key of BUNDLES) from `weights_dir` (default: the bundle's own
    location) and move it to `device`. Unknown names raise UnknownBundle with a suggestion."""
    if name not in BUNDLES:
        raise UnknownBundle("bundle", name, BUNDLES.names())
    bundle = BUNDLES[name].builder(Path(weights_dir) if weights_dir is not None else None)
    return bundle.to(device)
