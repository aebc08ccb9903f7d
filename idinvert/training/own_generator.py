"""Train the comparison's encoders for a user's generator on a user's image folder (`bench train`).

    source  = load_source("stylegan2", "G.pt")                 # G (+ D, F, classifier where the bundle has them)
    folder  = training_folder("faces/", source.generator.resolution, min_images=...)
    train_bundle(source, folder, "my-bundle/", TrainSettings(steps=2000), Dist.from_env())

writes a bundle directory that `bench run --bundle my-bundle/` loads (`idinvert.bundles.trained`):

    generator.pt / .json            the source generator, copied (fp32 state dict; card: class, constructor, w_avg)
    encoder.pt, conventional_encoder.pt, e4e_encoder.pt, restyle_encoder.pt   (fp16, a JSON card beside each
                                    with every setting, the loop's summary and the validation curve)
    discriminator.pt                the domain-guided encoder's discriminator, as trained beside it
    classifier.pt                   the source bundle's attribute classifier, when F is the stand-in built on it
    curves/<part>.jsonl, curves.png training losses and validation curves
    bundle.json, MODEL_CARD.md      the facts `bench run` reads, and every setting in words
    work/<part>/                    checkpoints and logs; rerunning the same command resumes from them

The perceptual network F is VGG16 conv4_3 when `vgg16.pth` is found (`find_vgg16`), at the paper's
lambda_vgg; else the codebase's stand-in -- `DomainPerceptual` on the source bundle's attribute
classifier, lambda calibrated as for the embedded zoo -- when the source has a classifier; else there is
no perceptual term (bundle.json and the card say which).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from idinvert.domains.folder import FolderError
from idinvert.training.loop import Dist, LoopSettings, train
from idinvert.training.own_card import TRAINED_FORMAT  # re-exported
from idinvert.training.own_parts import PART_FILES, TASKS, export_part

__all__ = ["PARTS", "Source", "TrainSettings", "load_source", "find_vgg16", "training_folder",
           "train_bundle", "TRAINED_FORMAT"]

PARTS = ("conventional", "domain", "e4e", "restyle")   # and "classifier" first, with a labels CSV
VGG16_FILE = "vgg16.pth"


@dataclass
class Source:
    """The generator to train encoders for, and what its bundle brings along."""
    name: str
    generator: nn.Module
    discriminator: Optional[nn.Module] = None
    classifier: Optional[nn.Module] = None
    perceptual_layer: Optional[int] = None
    attributes: tuple[str, ...] = ()
    origin: dict[str, Any] = field(default_factory=dict)   # bundle, weights path, fingerprint


@dataclass
class TrainSettings:
    """`bench train`'s settings. `steps` / `batch_size`: per part, global batch over all processes."""
    parts: tuple[str, ...] = PARTS
    steps: int = 2000
    batch_size: int = 16
    val_images: int = 64
    val_every: int = 100
    plateau_window: int = 500
    plateau_min_improvement: float = 0.01
    checkpoint_every: int = 50
    log_every: int = 10
    max_minutes: Optional[float] = None
    lambda_pixel: float = 1.0          # conventional encoder's pixel term (next to the latent term)
    amp: bool = False                  # bf16 autocast on CUDA
    show_progress: bool = True


def load_source(bundle: str, weights_dir: Optional[str | Path] = None) -> Source:
    """The generator of a bundle spec; "stylegan2" loads the rosinality checkpoint alone (no VGG16
    needed to train). Raises ValueError when the bundle has no generator."""
    from idinvert.zoo import load_bundle

    if bundle == "stylegan2":
        from idinvert.nets.stylegan2 import load_rosinality_checkpoint
        from idinvert.real_bundles import find_stylegan2_checkpoint

        ckpt = find_stylegan2_checkpoint(weights_dir)
        g = load_rosinality_checkpoint(ckpt)
        return Source(f"stylegan2:{ckpt.name}", g, origin={"bundle": bundle, "weights": str(ckpt),
                                                              "w_avg_source": g.truncation.w_avg_source})
    b = load_bundle(bundle, weights_dir)
    if b.generator is None:
        raise ValueError(f"bundle {bundle} has no generator: bench train trains encoders for a generator")
    if type(b.generator).__name__ not in ("StyleGANGenerator", "StyleGAN2Generator"):
        raise ValueError(f"bundle {bundle}'s generator is a {type(b.generator).__name__}; bench train takes a "
                         "StyleGAN (official idinvert layout) or a rosinality StyleGAN2: pass that checkpoint "
                         "with --bundle stylegan2 --weights-dir FILE.pt")
    return Source(b.name, b.generator, b.discriminator, b.classifier, b.info.perceptual_layer,
                  tuple(b.attributes), {"bundle": bundle, "weights": str(weights_dir or ""),
                                        "fingerprint": b.fingerprint})


def find_vgg16(explicit: Optional[Path], source: Source) -> Optional[Path]:
    """vgg16.pth: `explicit`, else beside the source weights, else in $BENCH_HOME/weights; None if absent."""
    from idinvert.real_bundles import default_weights_dir

    if explicit is not None:
        if not Path(explicit).is_file():
            from idinvert.zoo import MissingWeights
            raise MissingWeights(f"--vgg16 {explicit}: no such file (the official idinvert vgg16.pth)")
        return Path(explicit)
    weights = Path(source.origin.get("weights") or "")
    near = (weights if weights.is_dir() else weights.parent) / VGG16_FILE if str(weights) else None
    for path in (near, default_weights_dir() / VGG16_FILE):
        if path is not None and path.is_file():
            return path
    return None


def training_folder(path: str | Path, resolution: int, min_images: int, labels_csv: Optional[Path] = None):
    """The folder's images as an ImageSet (with the CSV's labels), after checking each is RGB at resolution x
    resolution and that there are at least `min_images`; FolderError (one line) names the first problem."""
    from PIL import Image

    from idinvert.domains.folder import ImageFolder

    folder = ImageFolder(path, resolution, labels_csv=labels_csv)
    for name in folder.ids:
        with Image.open(folder.root / name) as im:
            if im.mode != "RGB":
                raise FolderError(f"{folder.root / name}: mode {im.mode}, training needs RGB images "
                                  f"(convert the folder, e.g. PIL's Image.convert('RGB'))")
            if im.size != (resolution, resolution):
                raise FolderError(f"{folder.root / name}: {im.size[0]}x{im.size[1]} px, the generator makes "
                                  f"{resolution}x{resolution}: resize/crop the training images to that size")
    if len(folder) < min_images:
        raise FolderError(f"{folder.root} holds {len(folder)} readable images; training needs at least "
                          f"{min_images} (the validation hold-out plus one global batch)")
    return folder


def choose_perceptual(source: Source, vgg16: Optional[Path], images, device) -> tuple[Optional[nn.Module], dict]:
    """(F or None, its card entry {"kind", "name", "lambda_vgg", ...}); see the module docstring."""
    from idinvert.inversion import frozen
    from idinvert.nets.perceptual import PAPER_LAMBDA_VGG, DomainPerceptual, VGG16Perceptual
    from idinvert.training.encoders import calibrate_lambda_perceptual
    from idinvert.utils import freeze

    if vgg16 is not None:
        from idinvert.checkpoints import safe_torch_load
        from idinvert.nets.loading import load_state_dict_strict

        net = VGG16Perceptual()
        load_state_dict_strict(net, safe_torch_load(vgg16, what="VGG16 perceptual model"), str(vgg16))
        freeze(net)
        return net.to(device).eval(), {"kind": "vgg16", "name": net.name, "path": str(Path(vgg16).resolve()),
                                       "lambda_vgg": PAPER_LAMBDA_VGG, "lambda_source": "the paper's value"}
    if source.classifier is None:
        return None, {"kind": "none", "name": "none", "lambda_vgg": 0.0,
                      "why": f"no {VGG16_FILE} found (pass --vgg16 FILE, or put it beside the generator or in "
                             "$BENCH_HOME/weights) and the source bundle has no attribute classifier for the "
                             "stand-in: trained without a perceptual term"}
    net = DomainPerceptual(source.classifier, layer=source.perceptual_layer).to(device).eval()
    freeze(net)
    with frozen(source.generator):
        cal = calibrate_lambda_perceptual(source.generator, net, images.load(list(range(min(64, len(images))))))
    return net, {"kind": "domain-classifier", "name": f"{net.name} (stand-in for VGG16 conv4_3, whose weights "
                 f"were not found)", "layer": net.layer, "lambda_vgg": cal["lambda_vgg"],
                 "lambda_source": "calibrated (idinvert.training.encoders.calibrate_lambda_perceptual)",
                 "calibration": cal}


def _new_discriminator(resolution: int, seed: int) -> nn.Module:
    """A fresh D at the generator's resolution (sized like the embedded zoo's, capped at 256 maps)."""
    from idinvert.nets.discriminator import Discriminator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Discriminator(resolution, fmaps_base=max(2048, 32 * resolution), fmaps_max=256)


def _make_task(part: str, source: Source, F, fcard: dict, images, settings: TrainSettings, out_dir: Path,
               device):
    """The loop task of one part, with the zoo's config for it (batch and steps from `settings`)."""
    cls, config_cls = TASKS[part]
    config = dataclasses.replace(config_cls(), batch_size=settings.batch_size, steps=settings.steps)
    val_x = images.load(list(range(settings.val_images)))
    card = {"perceptual": fcard["name"], "lambda_vgg": fcard["lambda_vgg"], "source": source.origin}
    common = dict(steps=settings.steps, val_x=val_x, out_dir=out_dir, device=device, card=card,
                  exporter=export_part)
    if part == "conventional":
        return cls(source.generator, config, lambda_pixel=settings.lambda_pixel, **common)
    if part == "classifier":
        return cls(source.generator, images.load, images.labels, range(settings.val_images, len(images)),
                   config, **common)
    real = (F, images.load, range(settings.val_images, len(images)), fcard["lambda_vgg"])
    if part == "domain":
        disc = source.discriminator
        card["discriminator"] = "the source bundle's, fine-tuned" if disc is not None else "new, trained beside E"
        disc = disc if disc is not None else _new_discriminator(source.generator.resolution, config.seed)
        return cls(source.generator, disc, *real, config, **common)
    return cls(source.generator, *real, config, **common)


_NO_F = {"name": "none (the classifier's loss has no perceptual term)", "lambda_vgg": 0.0}


def _with_classifier(source: Source, images, out_dir: Path) -> Source:
    """`source` with the classifier `bench train` trained on the folder's labels, once it is exported."""
    path = out_dir / PART_FILES["classifier"][1]
    if not path.exists():
        return source
    from idinvert.bundles.trained import load_network
    return dataclasses.replace(source, classifier=load_network(path), attributes=tuple(images.attributes),
                               perceptual_layer=None)


def _minutes_left(budget: Optional[float], clock) -> Optional[float]:
    """What is left of this sitting's budget (the budget covers all parts together)."""
    return None if budget is None else max(0.0, budget - clock.total() / 60)


def train_bundle(source: Source, images, out_dir: str | Path, settings: TrainSettings, dist: Dist = Dist(),
                 vgg16: Optional[Path] = None) -> dict:
    """Train each part of `settings.parts` not yet exported in `out_dir`; when all are there, write the
    generator, bundle.json, curves and MODEL_CARD.md. Returns {part: summary} of this sitting."""
    from idinvert.training.common import Stopwatch
    from idinvert.utils import freeze

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    G = source.generator.to(dist.device).eval()
    freeze(G)
    summaries, clock = {}, Stopwatch()
    F, fcard = None, None
    for part in settings.parts:
        if part != "classifier" and fcard is None:   # after the classifier: F's stand-in may be built on it
            source = _with_classifier(source, images, out_dir)
            F, fcard = choose_perceptual(source, vgg16, images, dist.device)
        if (out_dir / PART_FILES[part][1]).exists():
            continue   # exported by an earlier sitting
        task = _make_task(part, source, F, fcard or _NO_F, images, settings, out_dir, dist.device)
        loop = LoopSettings(steps=settings.steps, batch_size=settings.batch_size, seed=task.config.seed,
                            checkpoint_every=settings.checkpoint_every, log_every=settings.log_every,
                            val_every=settings.val_every, plateau_window=settings.plateau_window,
                            plateau_min_improvement=settings.plateau_min_improvement,
                            max_minutes=_minutes_left(settings.max_minutes, clock), amp=settings.amp)
        summaries[part] = s = train(task, loop, out_dir / "work" / part, dist, settings.show_progress)
        if not s["complete"]:
            return summaries   # this sitting's time is up: the next one resumes here
    if dist.writer and all((out_dir / PART_FILES[p][1]).exists() for p in settings.parts):
        from idinvert.training.own_card import write_bundle_files
        write_bundle_files(source, out_dir, settings, fcard, images)
    dist.barrier()
    return summaries
