"""The model zoo: a *bundle* is everything an inversion method may need for one domain.

    bundle = load_bundle("synthetic-faces")      # the embedded default, shipped in the package
    bundle.generator.synthesis(codes)            # codes [B, L, D] -> images [B, 3, R, R] in [-1, 1]
    bundle.encoder(images)                       # domain-guided encoder -> [B, L, D]

Loading is strict everywhere: weight files are read with `torch.load(weights_only=True)`, every key
and shape must match (a mismatch names the key), and a missing file is an error that names the file
and how to get it -- never silently random weights (the official code's failure mode).

Known bundles are listed in `BUNDLES` (name -> `BundleSpec` with its builder and expected files):
- "synthetic-faces": trained here (`python -m bench zoo train`), weights in
  idinvert/weights/synthetic-faces/ (fp16 state dicts, a JSON card beside each, bundle.json with
  the bundle facts and file hashes, MODEL_CARD.md).
- "styleganinv-ffhq256", "stylegan2": real checkpoints from files the user supplies; their builders
  live in `idinvert.real_bundles`, which registers them into BUNDLES when this module is imported.

All networks of a loaded bundle are in eval mode with `requires_grad=False`: methods optimise codes,
never weights (gradients still flow through the networks to the codes).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn

from idinvert.nets.classifier import AttributeClassifier
from idinvert.nets.discriminator import Discriminator
from idinvert.nets.loading import load_state_dict_strict
from idinvert.nets.perceptual import DomainPerceptual
from idinvert.nets.stylegan_encoder import StyleGANEncoder
from idinvert.nets.stylegan_generator import StyleGANGenerator

__all__ = ["Bundle", "BundleSpec", "BUNDLES", "load_bundle", "tiny_random_bundle",
           "UnknownBundle", "MissingWeights", "SYNTHETIC_FACES_DIR", "REBUILD_COMMAND",
           "SYNTHETIC_FACES_FILES", "BUNDLE_MANIFEST", "PARTS", "file_sha256", "tensors_sha256",
           "weights_fingerprint", "write_bundle_manifest", "export_part", "load_part"]

PARTS = ("generator", "encoder", "conventional_encoder", "discriminator", "perceptual", "classifier")

SYNTHETIC_FACES_DIR = Path(__file__).resolve().parent / "weights" / "synthetic-faces"
REBUILD_COMMAND = "python -m bench zoo train"

# part -> (weights file, recipe target that rebuilds it). Each .pt has a .json card beside it with
# {"model": class name, "constructor": kwargs, ...}.
SYNTHETIC_FACES_FILES = {
    "generator": ("generator.pt", "gan"),
    "discriminator": ("discriminator.pt", "gan"),
    "classifier": ("classifier.pt", "classifier"),
    "conventional_encoder": ("conventional_encoder.pt", "conventional-encoder"),
    "encoder": ("encoder.pt", "domain-encoder"),
}
BUNDLE_MANIFEST = "bundle.json"

_CLASSES: dict[str, type[nn.Module]] = {
    "StyleGANGenerator": StyleGANGenerator,
    "StyleGANEncoder": StyleGANEncoder,
    "Discriminator": Discriminator,
    "AttributeClassifier": AttributeClassifier,
}


class UnknownBundle(KeyError):
    """A bundle name that is not in BUNDLES."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class MissingWeights(FileNotFoundError):
    """A weight file a bundle needs is not there; the message says which and how to get it."""


# ------------------------------------------------------------------------------------------------
# The bundle
# ------------------------------------------------------------------------------------------------

@dataclass
class Bundle:
    """Networks and facts for one domain. Images: [B, 3, R, R] RGB in [-1, 1]; codes: [B, L, D]."""
    name: str
    resolution: int
    generator: StyleGANGenerator
    encoder: Optional[nn.Module]                 # domain-guided encoder
    conventional_encoder: Optional[nn.Module]
    discriminator: Optional[nn.Module]
    perceptual: nn.Module                        # F: images -> features [B, C, h, w]
    classifier: Optional[nn.Module]
    attributes: tuple[str, ...]
    fingerprint: str
    info: dict = field(default_factory=dict)

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


def _freeze(*modules: Optional[nn.Module]) -> None:
    for m in modules:
        if m is not None:
            m.eval()
            m.requires_grad_(False)


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------

def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def export_part(module: nn.Module, weights_dir: str | Path, part: str,
                card: Optional[dict] = None) -> Path:
    """Write `part` of a synthetic-faces-style bundle: <file>.pt (fp16 state dict) and <file>.json
    ({"model": class name, "constructor": module.config, **card}). Returns the .pt path."""
    from idinvert.training.common import export_fp16_state_dict

    if part not in SYNTHETIC_FACES_FILES:
        raise ValueError(f"unknown part {part!r}; parts with files: {sorted(SYNTHETIC_FACES_FILES)}")
    name = type(module).__name__
    if name not in _CLASSES:
        raise ValueError(f"cannot export a {name}: the zoo only knows {sorted(_CLASSES)}")
    full_card = {"model": name, "constructor": dict(module.config), **(card or {})}
    return export_fp16_state_dict(module, Path(weights_dir) / SYNTHETIC_FACES_FILES[part][0],
                                  full_card)


def write_bundle_manifest(weights_dir: str | Path, info: dict) -> dict:
    """Write weights_dir/bundle.json: `info` plus the tensors_sha256 of every part file and the
    bundle fingerprint (so a part retrained later without rewriting the manifest is detected on load).
    All part files must exist. Returns what was written."""
    from idinvert.training.common import atomic_write_text

    weights_dir = Path(weights_dir)
    files = {part: weights_dir / fname for part, (fname, _) in SYNTHETIC_FACES_FILES.items()}
    for path in files.values():
        if not path.exists():
            raise _missing(path, "train the missing part before writing the bundle manifest")
    hashes = {part: tensors_sha256(torch.load(path, map_location="cpu", weights_only=True))
              for part, path in files.items()}
    manifest = dict(info)
    manifest["files"] = {part: {"file": path.name, "tensors_sha256": hashes[part],
                                "bytes": path.stat().st_size} for part, path in files.items()}
    manifest["fingerprint"] = weights_fingerprint(files, hashes)
    atomic_write_text(json.dumps(manifest, indent=2) + "\n", weights_dir / BUNDLE_MANIFEST)
    return manifest


def _missing(path: Path, how: str) -> MissingWeights:
    return MissingWeights(f"missing weight file {path}; {how}")


def load_part(weights_dir: str | Path, part: str) -> nn.Module:
    """One part ("generator", "encoder", ...) of a synthetic-faces-style weights dir, built from its
    JSON card and strictly loaded (fp32, eval mode; not frozen)."""
    if part not in SYNTHETIC_FACES_FILES:
        raise ValueError(f"unknown part {part!r}; parts with files: {sorted(SYNTHETIC_FACES_FILES)}")
    filename, target = SYNTHETIC_FACES_FILES[part]
    return _load_part(Path(weights_dir), filename, target)[0].eval()


def _load_part(weights_dir: Path, filename: str, target: str) -> tuple[nn.Module, str]:
    """Build the network described by <file>.json and strictly load <file> into it; returns the
    module and the file's tensors_sha256."""
    path = weights_dir / filename
    card_path = path.with_suffix(".json")
    how = f"rebuild it with `{REBUILD_COMMAND} --target {target}`"
    if not path.exists():
        raise _missing(path, how)
    if not card_path.exists():
        raise _missing(card_path, how)
    card = json.loads(card_path.read_text())
    cls_name = card.get("model")
    if cls_name not in _CLASSES or not isinstance(card.get("constructor"), dict):
        raise ValueError(f"{card_path}: expected {{'model': one of {sorted(_CLASSES)}, "
                         f"'constructor': {{...}}}}, got model={cls_name!r}")
    module = _CLASSES[cls_name](**card["constructor"])
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    load_state_dict_strict(module, state_dict, str(path))
    return module, tensors_sha256(state_dict)


# ------------------------------------------------------------------------------------------------
# Builders
# ------------------------------------------------------------------------------------------------

def _build_synthetic_faces(weights_dir: Optional[Path]) -> Bundle:
    """The embedded default: every part trained by the zoo recipe on the synthetic-faces domain."""
    weights_dir = Path(weights_dir) if weights_dir is not None else SYNTHETIC_FACES_DIR
    manifest_path = weights_dir / BUNDLE_MANIFEST
    loaded = {part: _load_part(weights_dir, fname, target)
              for part, (fname, target) in SYNTHETIC_FACES_FILES.items()}
    parts = {part: module for part, (module, _) in loaded.items()}
    hashes = {part: h for part, (_, h) in loaded.items()}
    if not manifest_path.exists():
        raise _missing(manifest_path, f"write it with `{REBUILD_COMMAND} --target card` "
                                      "(it records the bundle facts and file hashes)")
    info = json.loads(manifest_path.read_text())
    files = {part: weights_dir / fname for part, (fname, _) in SYNTHETIC_FACES_FILES.items()}
    recorded = info.get("files", {})
    for part, path in files.items():
        want = recorded.get(part, {}).get("tensors_sha256")
        if want is not None and want != hashes[part]:
            raise ValueError(f"{path} differs from the file {manifest_path} was written for; "
                             f"rerun `{REBUILD_COMMAND} --target card` after retraining a part")
    classifier = parts["classifier"]
    perceptual = DomainPerceptual(classifier, layer=info.get("perceptual_layer"))
    generator = parts["generator"]
    bundle = Bundle(
        name="synthetic-faces", resolution=generator.resolution, generator=generator,
        encoder=parts["encoder"], conventional_encoder=parts["conventional_encoder"],
        discriminator=parts["discriminator"], perceptual=perceptual, classifier=classifier,
        attributes=tuple(info.get("attributes", ())),
        fingerprint=weights_fingerprint(files, hashes),
        info=info)
    _freeze(*(getattr(bundle, p) for p in PARTS))
    return bundle


@dataclass(frozen=True)
class BundleSpec:
    """A known bundle: `builder(weights_dir or None) -> Bundle`, the files it needs, a description."""
    builder: Callable[[Optional[Path]], Bundle]
    files: tuple[str, ...]
    description: str


BUNDLES: dict[str, BundleSpec] = {
    "synthetic-faces": BundleSpec(
        _build_synthetic_faces,
        tuple(f for f, _ in SYNTHETIC_FACES_FILES.values()) + (BUNDLE_MANIFEST,),
        "embedded default: 32 px StyleGAN + encoders trained here on the synthetic-faces domain"),
    "tiny-random": BundleSpec(
        lambda weights_dir: tiny_random_bundle(),
        (),
        "random-initialised 16 px models for tests and smoke runs: exercises every code path, "
        "its numbers mean nothing"),
    # "styleganinv-ffhq256" and "stylegan2" (user-supplied real checkpoints) are registered by
    # idinvert.real_bundles, imported at the end of this module.
}


def load_bundle(name: str, weights_dir: str | Path | None = None,
                device: str | torch.device = "cpu") -> Bundle:
    """Build the bundle `name` (a key of BUNDLES) from `weights_dir` (default: the bundle's own
    location) and move it to `device`. Unknown names raise UnknownBundle with a suggestion."""
    if name not in BUNDLES:
        close = difflib.get_close_matches(name, list(BUNDLES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownBundle(f"unknown bundle {name!r}{hint}; known bundles: {', '.join(BUNDLES)}")
    bundle = BUNDLES[name].builder(Path(weights_dir) if weights_dir is not None else None)
    return bundle.to(device)


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------

def tiny_random_bundle(seed: int = 0, resolution: int = 16) -> Bundle:
    """Small random-initialised G / E / E_conv / D / classifier / F for tests (builds in ~0.1 s).

    Images are in [-1, 1] (final tanh); w_avg is the mean mapped w of 256 random z, so mean-w
    initialisation behaves as with a trained bundle. Nothing here is trained: numbers computed with
    it test plumbing only.
    """
    from idinvert.domains.synthetic_faces import ATTRIBUTES
    from idinvert.domains.base import fingerprint_of

    with torch.random.fork_rng(devices=[]):   # initialisers draw from the global RNG; leave it as found
        torch.manual_seed(seed)
        return _tiny_random_bundle(seed, resolution, ATTRIBUTES, fingerprint_of)


def _tiny_random_bundle(seed: int, resolution: int, attributes, fingerprint_of) -> Bundle:
    g = StyleGANGenerator(resolution, z_space_dim=32, w_space_dim=32, num_mapping_layers=2,
                          repeat_w=True, final_tanh=True, truncation_psi=None,
                          truncation_layers=None, fmaps_base=16 * resolution, fmaps_max=32)
    with torch.no_grad():
        z = torch.randn(256, g.z_space_dim, generator=torch.Generator().manual_seed(seed))
        g.truncation.w_avg.copy_(g.mapping(z).mean(0))
    enc_kwargs = dict(resolution=resolution, w_space_dim=g.w_space_dim, encoder_channels_base=8,
                      encoder_channels_max=32)
    encoder = StyleGANEncoder(**enc_kwargs)
    conventional = StyleGANEncoder(**enc_kwargs)
    disc = Discriminator(resolution, fmaps_base=8 * resolution, fmaps_max=32)
    classifier = AttributeClassifier(resolution, num_attributes=len(attributes), width=8,
                                     embed_dim=16)
    bundle = Bundle(
        name=f"tiny-random-{resolution}px", resolution=resolution, generator=g, encoder=encoder,
        conventional_encoder=conventional, discriminator=disc,
        perceptual=DomainPerceptual(classifier), classifier=classifier, attributes=attributes,
        fingerprint=fingerprint_of("tiny-random-bundle", seed, resolution),
        info={"random": True, "lambda_vgg_default": 1.0,
              "note": "random weights for tests; lambda_vgg_default not calibrated"})
    _freeze(*(getattr(bundle, p) for p in PARTS))
    return bundle


# Real-checkpoint bundles register themselves into BUNDLES (kept in their own module; imported last
# so that BundleSpec and BUNDLES exist when it does).
from idinvert import real_bundles as _real_bundles  # noqa: E402,F401
