"""The model zoo: a *bundle* is everything an inversion method may need for one domain.

    bundle = load_bundle("synthetic-faces")      # the embedded default, shipped in the package
    bundle.generator.synthesis(codes)            # codes [B, L, D] -> images [B, 3, R, R] in [-1, 1]
    bundle.encoder(images)                       # domain-guided encoder -> [B, L, D]

Loading is strict everywhere: weight files are read with `torch.load(weights_only=True)`, every key
and shape must match (a mismatch names the key), and a missing file is an error that names the file
and how to get it -- never silently random weights (the official code's failure mode).

What a bundle is (`Bundle`, `BundleInfo`) and the registry `BUNDLES` live in `idinvert.bundles.base`
(re-exported here); this module is the embedded bundle. Its default test data is its domain's
(`BundleInfo.test_data`, a name in `idinvert.domains.DOMAINS`).

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

import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from idinvert.nets.classifier import AttributeClassifier
from idinvert.nets.discriminator import Discriminator
from idinvert.nets.e4e_encoder import E4EEncoder
from idinvert.nets.judge import JudgeNet
from idinvert.nets.loading import load_state_dict_strict
from idinvert.nets.perceptual import DomainPerceptual
from idinvert.nets.restyle_encoder import ReStyleEncoder
from idinvert.nets.stylegan_encoder import StyleGANEncoder
from idinvert.nets.stylegan_generator import StyleGANGenerator
from idinvert.bundles.base import (BUNDLES, NEEDS_DATA, PARTS, Bundle, BundleInfo, BundleSpec,  # noqa: F401
                                   MissingWeights, UnknownBundle, load_bundle, part_file, tensors_sha256,
                                   weights_fingerprint)
from idinvert.utils import file_sha256, freeze  # noqa: F401  (file_sha256: re-exported)

__all__ = ["Bundle", "BundleInfo", "BundleSpec", "BUNDLES", "load_bundle", "tiny_random_bundle",
           "UnknownBundle", "MissingWeights", "SYNTHETIC_FACES_DIR", "REBUILD_COMMAND",
           "SYNTHETIC_FACES_FILES", "OPTIONAL_FILES", "BUNDLE_MANIFEST", "PARTS", "file_sha256", "tensors_sha256",
           "weights_fingerprint", "write_bundle_manifest", "export_part", "load_part"]

SYNTHETIC_FACES_DIR = Path(__file__).resolve().parent / "weights" / "synthetic-faces"
REBUILD_COMMAND = "python -m bench zoo train"

# part -> (weights file, recipe target that rebuilds it). Each .pt has a .json card beside it with
# {"model": class name, "constructor": kwargs, ...}.
SYNTHETIC_FACES_FILES = {part: (part_file(part), target) for part, target in (
    ("generator", "gan"), ("discriminator", "gan"), ("classifier", "classifier"),
    ("conventional_encoder", "conventional-encoder"), ("encoder", "domain-encoder"), ("judge", "judge"),
    ("e4e_encoder", "e4e-encoder"), ("restyle_encoder", "restyle-encoder"))}
# Parts a synthetic-faces bundle may lack: it loads without them, and a method that needs one is
# skipped with a message. The manifest and the fingerprint cover those present.
OPTIONAL_FILES = frozenset({"e4e_encoder", "restyle_encoder"})
BUNDLE_MANIFEST = "bundle.json"

_CLASSES: dict[str, type[nn.Module]] = {
    "StyleGANGenerator": StyleGANGenerator,
    "StyleGANEncoder": StyleGANEncoder,
    "Discriminator": Discriminator,
    "AttributeClassifier": AttributeClassifier,
    "JudgeNet": JudgeNet,
    "E4EEncoder": E4EEncoder,
    "ReStyleEncoder": ReStyleEncoder,
}


# ------------------------------------------------------------------------------------------------
# The bundle
# ------------------------------------------------------------------------------------------------

# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------

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


def present_files(weights_dir: str | Path) -> dict[str, Path]:
    """part -> weight file of a synthetic-faces-style dir: every required part (present or not) and
    the optional parts (OPTIONAL_FILES) whose file is there."""
    weights_dir = Path(weights_dir)
    return {part: weights_dir / fname for part, (fname, _) in SYNTHETIC_FACES_FILES.items()
            if part not in OPTIONAL_FILES or (weights_dir / fname).exists()}


def write_bundle_manifest(weights_dir: str | Path, info: dict) -> dict:
    """Write weights_dir/bundle.json: `info` plus the tensors_sha256 of every part file and the
    bundle fingerprint (so a part retrained later without rewriting the manifest is detected on load).
    All required part files must exist; optional ones are covered when present. Returns what was
    written."""
    from idinvert.training.common import atomic_write_text

    weights_dir = Path(weights_dir)
    files = present_files(weights_dir)
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
    files = present_files(weights_dir)
    loaded = {part: _load_part(weights_dir, path.name, SYNTHETIC_FACES_FILES[part][1])
              for part, path in files.items()}
    parts = {part: module for part, (module, _) in loaded.items()}
    hashes = {part: h for part, (_, h) in loaded.items()}
    if not manifest_path.exists():
        raise _missing(manifest_path, f"write it with `{REBUILD_COMMAND} --target card` "
                                      "(it records the bundle facts and file hashes)")
    info = json.loads(manifest_path.read_text())
    recorded = info.get("files", {})
    for part, path in files.items():
        want = recorded.get(part, {}).get("tensors_sha256")
        if want is not None and want != hashes[part]:
            raise ValueError(f"{path} differs from the file {manifest_path} was written for; "
                             f"rerun `{REBUILD_COMMAND} --target card` after retraining a part")
    for part in set(recorded) - set(files):
        raise _missing(weights_dir / recorded[part].get("file", part),
                       f"{manifest_path} lists it; restore it or rebuild it with "
                       f"`{REBUILD_COMMAND} --target {SYNTHETIC_FACES_FILES.get(part, (0, 'card'))[1]}`")
    classifier = parts["classifier"]
    perceptual = DomainPerceptual(classifier, layer=info.get("perceptual_layer"))
    generator = parts["generator"]
    bundle = Bundle(
        name="synthetic-faces", resolution=generator.resolution, generator=generator,
        encoder=parts["encoder"], conventional_encoder=parts["conventional_encoder"],
        discriminator=parts["discriminator"], perceptual=perceptual, classifier=classifier,
        judge=parts["judge"], e4e_encoder=parts.get("e4e_encoder"),
        restyle_encoder=parts.get("restyle_encoder"), attributes=tuple(info.get("attributes", ())),
        fingerprint=weights_fingerprint(files, hashes),
        info=BundleInfo.from_dict(info, test_data="synthetic-faces"))
    freeze(*(getattr(bundle, p) for p in PARTS))
    return bundle


BUNDLES.add("synthetic-faces", BundleSpec(
    _build_synthetic_faces,
    tuple(f for f, _ in SYNTHETIC_FACES_FILES.values()) + (BUNDLE_MANIFEST,),
    "embedded default: 32 px StyleGAN + encoders trained here on the synthetic-faces domain"))
BUNDLES.add("tiny-random", BundleSpec(
    lambda weights_dir: tiny_random_bundle(),
    (),
    "random-initialised 16 px models for tests and smoke runs: exercises every code path, "
    "its numbers mean nothing"))


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------

def tiny_random_bundle(seed: int = 0, resolution: int = 16) -> Bundle:
    """Small random-initialised G / E / E_conv / D / classifier / F / judge / e4e and ReStyle
    encoders for tests (builds in ~0.1 s).

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
    judge = JudgeNet(resolution, num_attributes=len(attributes), num_nuisances=27, width=8,
                     embed_dim=16)
    # Built last so that the parts above keep the weights they had before these existed.
    e4e = E4EEncoder(**enc_kwargs)
    e4e.set_latent_avg(g.truncation.w_avg)
    restyle = ReStyleEncoder(**enc_kwargs)
    restyle.set_latent_avg(g.truncation.w_avg)
    bundle = Bundle(
        name=f"tiny-random-{resolution}px", resolution=resolution, generator=g, encoder=encoder,
        conventional_encoder=conventional, discriminator=disc,
        perceptual=DomainPerceptual(classifier), classifier=classifier, judge=judge,
        e4e_encoder=e4e, restyle_encoder=restyle,
        attributes=attributes,
        fingerprint=fingerprint_of("tiny-random-bundle", seed, resolution),
        info=BundleInfo(lambda_vgg_default=1.0, test_data="synthetic-faces", random=True,
                        extra={"note": "random weights for tests; lambda_vgg_default not calibrated"}))
    freeze(*(getattr(bundle, p) for p in PARTS))
    return bundle


# The other formats register themselves into BUNDLES (in this order, after the embedded ones), so that
# ``load_bundle`` from here finds every bundle; neither imports this module.
from idinvert import real_bundles as _real_bundles  # noqa: E402,F401  (registers on import)
import idinvert.bundles as _release_bundles  # noqa: E402  (isort: skip)

_release_bundles.register()
