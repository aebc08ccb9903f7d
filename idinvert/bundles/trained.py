"""Bundle format: a directory written by `bench train` (idinvert.training.own_generator).

`bench run --bundle DIR` (or `--bundle trained --weights-dir DIR`) loads it: bundle.json (format
"bench-train/1"), the generator copy (generator.pt + generator.json: class, constructor, mean w), the
encoders it trained (each .pt with its JSON card), the discriminator trained beside the domain-guided
encoder, and F as the card names it -- VGG16 from the `vgg16.pth` it was trained with (missing: an
error naming the file), the domain-classifier stand-in from classifier.pt, or none. A StyleGAN2 generator
is wrapped in `PooledStyleGAN2` at its own size (no pooling), whose `synthesis` is a module, as PTI needs. Loading is strict
(`weights_only=True`, every key and shape); a listed part whose file is missing is an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from idinvert.bundles.base import part_file
from idinvert.nets.classifier import AttributeClassifier
from idinvert.nets.discriminator import Discriminator
from idinvert.nets.e4e_encoder import E4EEncoder
from idinvert.nets.loading import load_state_dict_strict
from idinvert.nets.restyle_encoder import ReStyleEncoder
from idinvert.nets.stylegan2 import StyleGAN2Generator
from idinvert.nets.stylegan_encoder import StyleGANEncoder
from idinvert.nets.stylegan_generator import StyleGANGenerator

__all__ = ["NAME", "FORMAT", "is_trained_dir", "build_trained_bundle", "load_network", "SPEC_FILES", "PART_FILES"]

NAME = "trained"
FORMAT = "bench-train/1"
SPEC_FILES = ("bundle.json", "generator.pt", "generator.json")
_CLASSES = {c.__name__: c for c in (StyleGAN2Generator, StyleGANGenerator, StyleGANEncoder, E4EEncoder,
                                    ReStyleEncoder, Discriminator, AttributeClassifier)}
# `bench train`'s part -> (bundle field, weights file); bundle.json's "parts" lists the files it wrote
PART_FILES = {part: (field, part_file(field)) for part, field in (
    ("conventional", "conventional_encoder"), ("domain", "encoder"), ("e4e", "e4e_encoder"),
    ("restyle", "restyle_encoder"), ("classifier", "classifier"))}
# bundle field -> weights file of the networks read when present (the encoders come from "parts")
_FIXED = {field: part_file(field) for field in ("discriminator", "classifier")}
_FIELDS = {file: field for field, file in PART_FILES.values()}


def is_trained_dir(path) -> bool:
    """Whether `path` is a directory written by `bench train` (its bundle.json says so)."""
    manifest = Path(path) / "bundle.json"
    try:
        return Path(path).is_dir() and json.loads(manifest.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def _missing(path: Path, what: str):
    from idinvert.bundles.base import MissingWeights
    return MissingWeights(f"missing weight file {path} ({what}); rerun `bench train` with the same --out to "
                          "rebuild it")


def load_network(path: Path) -> nn.Module:
    """The network <path>.json describes, strictly loaded from <path> (fp32)."""
    card_path = path.with_suffix(".json")
    for p in (path, card_path):
        if not p.exists():
            raise _missing(p, "part of a bench train bundle")
    card = json.loads(card_path.read_text())
    if card.get("model") not in _CLASSES:
        raise ValueError(f"{card_path}: model {card.get('model')!r} is not one of {sorted(_CLASSES)}")
    module = _CLASSES[card["model"]](**card["constructor"])
    load_state_dict_strict(module, torch.load(path, map_location="cpu", weights_only=True), str(path))
    if "w_avg" in card:
        module.truncation.w_avg.copy_(torch.tensor(card["w_avg"]))
    return module.float().eval()


def _perceptual(manifest: dict, parts: dict) -> Optional[nn.Module]:
    from idinvert.nets.perceptual import DomainPerceptual, VGG16Perceptual

    kind = manifest["perceptual"]["kind"]
    if kind == "vgg16":
        path = Path(manifest["perceptual"]["path"])
        if not path.exists():
            raise _missing(path, "VGG16 perceptual model the encoders were trained with; put vgg16.pth back")
        from idinvert.checkpoints import safe_torch_load
        net = VGG16Perceptual()
        load_state_dict_strict(net, safe_torch_load(path, what="VGG16 perceptual model"), str(path))
        return net
    if kind == "domain-classifier":
        return DomainPerceptual(parts["classifier"], layer=manifest["perceptual"].get("layer"))
    return None


def build_trained_bundle(weights_dir: Optional[Path]):
    """The bundle in `weights_dir` (a `bench train` output directory)."""
    from idinvert.bundles.base import Bundle, BundleInfo, MissingWeights, weights_fingerprint
    from idinvert.utils import freeze

    if weights_dir is None or not is_trained_dir(weights_dir):
        raise MissingWeights(f"{weights_dir}: not a bench train output directory (no bundle.json of format "
                             f"{FORMAT}); pass --bundle DIR with a directory `bench train --out DIR` wrote")
    d = Path(weights_dir)
    manifest = json.loads((d / "bundle.json").read_text())
    files = {"generator": d / "generator.pt"}
    files.update({_FIELDS[f]: d / f for f in manifest["parts"].values()})
    files.update({k: d / f for k, f in _FIXED.items() if (d / f).exists()})
    parts = {k: load_network(p) for k, p in files.items()}
    if isinstance(parts["generator"], StyleGAN2Generator):
        # synthesis as a module (not a method), so that PTI can tune it per image; at its own size: no pooling
        from idinvert.nets.pooled_generator import PooledStyleGAN2
        parts["generator"] = PooledStyleGAN2(parts["generator"], parts["generator"].resolution)
    perceptual = _perceptual(manifest, parts)
    facts = {k: v for k, v in manifest.items() if k not in ("name", "resolution", "attributes")}
    info = BundleInfo.from_dict(facts, test_data=None, source=f"bench train output {d}")
    bundle = Bundle(name=manifest["name"], resolution=manifest["resolution"], perceptual=perceptual,
                    attributes=tuple(manifest.get("attributes", ())), info=info,
                    fingerprint=weights_fingerprint(files), **parts)
    freeze(*(m for m in (*parts.values(), perceptual) if m is not None))
    return bundle
