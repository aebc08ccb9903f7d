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

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

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
from idinvert.registry import Registry, UnknownName
from idinvert.utils import file_sha256, freeze

__all__ = ["Bundle", "BundleInfo", "BundleSpec", "BUNDLES", "load_bundle", "tiny_random_bundle",
           "UnknownBundle", "MissingWeights", "SYNTHETIC_FACES_DIR", "REBUILD_COMMAND",
           "SYNTHETIC_FACES_FILES", "OPTIONAL_FILES", "BUNDLE_MANIFEST", "PARTS", "file_sha256", "tensors_sha256",
           "weights_fingerprint", "write_bundle_manifest", "export_part", "load_part"]

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
    "judge": ("judge.pt", "judge"),
    "e4e_encoder": ("e4e_encoder.pt", "e4e-encoder"),
    "restyle_encoder": ("restyle_encoder.pt", "restyle-encoder"),
}
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


class UnknownBundle(UnknownName):
    """A bundle name that is not in BUNDLES."""


class MissingWeights(FileNotFoundError):
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
    generator: StyleGANGenerator = _part()
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


# ------------------------------------------------------------------------------------------------
# Files
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


@dataclass(frozen=True)
class BundleSpec:
    """A known bundle: `builder(weights_dir or None) -> Bundle`, the files it needs, a description;
    `accepts_file`: `weights_dir` may be the one checkpoint file itself (not only a folder)."""
    builder: Callable[[Optional[Path]], Bundle]
    files: tuple[str, ...]
    description: str
    accepts_file: bool = False  # --weights-dir may name the checkpoint file itself (stylegan2, releases)


BUNDLES: Registry[BundleSpec] = Registry("bundle")
BUNDLES.add("synthetic-faces", BundleSpec(
    _build_synthetic_faces,
    tuple(f for f, _ in SYNTHETIC_FACES_FILES.values()) + (BUNDLE_MANIFEST,),
    "embedded default: 32 px StyleGAN + encoders trained here on the synthetic-faces domain"))
BUNDLES.add("tiny-random", BundleSpec(
    lambda weights_dir: tiny_random_bundle(),
    (),
    "random-initialised 16 px models for tests and smoke runs: exercises every code path, "
    "its numbers mean nothing"))
# "styleganinv-ffhq256" and "stylegan2" (user-supplied real checkpoints) are registered by
# idinvert.real_bundles, imported at the end of this module.


def load_bundle(name: str, weights_dir: str | Path | None = None,
                device: str | torch.device = "cpu") -> Bundle:
    """Build the bundle `name` (a key of BUNDLES) from `weights_dir` (default: the bundle's own
    location) and move it to `device`. Unknown names raise UnknownBundle with a suggestion."""
    if name not in BUNDLES:
        raise UnknownBundle("bundle", name, BUNDLES.names())
    bundle = BUNDLES[name].builder(Path(weights_dir) if weights_dir is not None else None)
    return bundle.to(device)


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


# Real-checkpoint bundles register themselves into BUNDLES (kept in their own module; imported last
# so that BundleSpec and BUNDLES exist when it does).
from idinvert import real_bundles as _real_bundles  # noqa: E402,F401
