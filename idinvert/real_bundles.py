"""Bundles built from real weight files the user supplies: the official idinvert FFHQ-256 release and
StyleGAN2 checkpoints in rosinality's format. Registered into `idinvert.bundles.base.BUNDLES` by
`register()`.

- "styleganinv-ffhq256": files from genforce/idinvert_pytorch, in one folder (`--weights-dir DIR`, or
  `$BENCH_HOME/weights`):

      styleganinv_ffhq256_generator.pth   StyleGAN generator, 256 px, W+ 14 x 512
      styleganinv_ffhq256_encoder.pth     domain-guided encoder (images -> W+)
      vgg16.pth                           VGG16 of the perceptual loss (conv4_3)

  Built with the zoo's network classes in the official configuration and loaded strictly. F is
  `VGG16Perceptual`, lambda_vgg defaults to the paper's 5e-5; there is no conventional encoder,
  discriminator or attribute classifier (semantic metrics need `--labels`/`--boundaries`).
- "stylegan2": a rosinality `.pt` checkpoint (`g_ema`, `latent_avg`) loaded into our pure-PyTorch
  `StyleGAN2Generator`; `--weights-dir` is the `.pt` file itself or a folder holding exactly one, and
  F is the same `vgg16.pth`, looked up beside the checkpoint. No encoder: `bundle.has("encoder")` is
  False, so encoder-based methods are skipped by the runner.

Every file is read with `torch.load(weights_only=True)`; NVIDIA `.pkl` files are refused (see
`idinvert.checkpoints`). `doctor_report` lists each file as present, missing (with where it goes) or
wrong (the key or shape mismatch named) for `bench doctor`. `write_random_official_files` writes
random-initialised files in the official layouts, for tests and dry runs.

Where `$BENCH_HOME` is unset it defaults to `~/.cache/idinvert-bench`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from idinvert.bundles.base import BUNDLES, Bundle, BundleInfo, BundleSpec, MissingWeights, weights_fingerprint
from idinvert.checkpoints import PICKLE_SUFFIXES, CheckpointError, refuse_pickle, safe_torch_load
from idinvert.nets.loading import check_state_dict, load_state_dict_strict
from idinvert.nets.perceptual import PAPER_LAMBDA_VGG, VGG16Perceptual
from idinvert.nets.stylegan2 import (StyleGAN2Generator, infer_rosinality_config,
                                     load_rosinality_checkpoint)
from idinvert.nets.stylegan_encoder import StyleGANEncoder, official_idinvert_ffhq256_encoder_config
from idinvert.nets.stylegan_generator import StyleGANGenerator, official_idinvert_ffhq256_config
from idinvert.utils import freeze

__all__ = [
    "STYLEGANINV_FFHQ256", "STYLEGAN2", "GENERATOR_FILE", "ENCODER_FILE", "VGG16_FILE",
    "OFFICIAL_SOURCE", "default_weights_dir", "resolve_weights_dir", "build_styleganinv_ffhq256",
    "build_stylegan2", "find_stylegan2_checkpoint", "doctor_report", "write_random_official_files",
    "register",
]

STYLEGANINV_FFHQ256 = "styleganinv-ffhq256"
STYLEGAN2 = "stylegan2"
GENERATOR_FILE = "styleganinv_ffhq256_generator.pth"
ENCODER_FILE = "styleganinv_ffhq256_encoder.pth"
VGG16_FILE = "vgg16.pth"
OFFICIAL_SOURCE = ("the official In-Domain GAN Inversion release (github.com/genforce/idinvert_pytorch, "
                   "README 'Pre-trained Models')")
_CPU_NOTE = ("real-size networks: on a CPU this is slow -- each optimisation method takes minutes per "
             "image at its default 100 iterations (at 256 px on 2 idle cores: image2stylegan ~1.6, "
             "idinvert ~2.2 minutes per image; more on a busy machine), and the semantic analysis "
             "decodes hundreds of images per method; use --device cuda where available, or --limit")


def _default_batch_size(resolution: int) -> dict[str, int] | None:
    """The runner's default batch per device type for real-size networks (None below 128 px: the
    harness default). An optimisation step at 256 px holds about 0.2-0.35 GB of activations per image
    (measured on the CPU: image2stylegan 0.2, idinvert 0.35), so the harness's 64 would need ~20 GB;
    8 keeps a CPU run near 3 GB above the ~2.6 GB of weights. Scaled by pixel count for other sizes."""
    if resolution < 128:
        return None
    scale = (256 / resolution) ** 2
    return {"cpu": max(1, int(8 * scale)), "cuda": max(1, int(32 * scale))}


def default_weights_dir() -> Path:
    """`$BENCH_HOME/weights` ($BENCH_HOME defaults to ~/.cache/idinvert-bench)."""
    home = os.environ.get("BENCH_HOME") or str(Path.home() / ".cache" / "idinvert-bench")
    return Path(home).expanduser() / "weights"


def resolve_weights_dir(weights_dir) -> Path:
    """The folder (or, for "stylegan2", possibly a file) to read: the argument, else the default."""
    return Path(weights_dir).expanduser() if weights_dir is not None else default_weights_dir()




# --------------------------------------------------------------------------------------------------
# Parts of the official release: how each is built and loaded
# --------------------------------------------------------------------------------------------------

def _make_generator() -> StyleGANGenerator:
    return StyleGANGenerator(**official_idinvert_ffhq256_config())


def _make_encoder() -> StyleGANEncoder:
    return StyleGANEncoder(**official_idinvert_ffhq256_encoder_config())


def _load_generator(module: StyleGANGenerator, sd: dict, source: str) -> None:
    module.load_official_state_dict(sd, source)


def _load_plain(module: nn.Module, sd: dict, source: str) -> None:
    load_state_dict_strict(module, sd, source)


def _generator_problems(module: StyleGANGenerator, sd: dict) -> list[str]:
    # Keys that encode settings (not learned state) may be absent from a file; see the class.
    sd = dict(sd)
    for k in module.SETTING_KEYS:
        sd.setdefault(k, module.state_dict()[k])
    return check_state_dict(module, sd)


# part -> (file, what it is, constructor, loader, checker, what it enables)
_OFFICIAL_PARTS: dict[str, tuple[str, str, Callable[[], nn.Module], Callable, Callable, str]] = {
    "generator": (GENERATOR_FILE, "StyleGAN generator (256 px, W+ 14 x 512)", _make_generator,
                  _load_generator, _generator_problems, "every method (G)"),
    "encoder": (ENCODER_FILE, "domain-guided encoder", _make_encoder, _load_plain, check_state_dict,
                "idinvert-encoder, idinvert (encoder initialisation)"),
    "perceptual": (VGG16_FILE, "VGG16 perceptual model (conv4_3)", VGG16Perceptual, _load_plain,
                   check_state_dict, "perceptual loss of image2stylegan, idinvert"),
}


def _missing(path: Path, what: str, source: str = OFFICIAL_SOURCE):
    return MissingWeights(f"missing weight file {path} ({what}). Download it from {source} and put "
                          f"it in {path.parent} (or pass --weights-dir DIR holding it; default "
                          f"$BENCH_HOME/weights).")


def _load_official_part(weights_dir: Path, part: str) -> nn.Module:
    filename, what, make, load, _, _ = _OFFICIAL_PARTS[part]
    path = weights_dir / filename
    if not path.exists():
        raise _missing(path, what)
    sd = safe_torch_load(path, what=what)
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path} ({what}) holds a {type(sd).__name__}, expected a state dict")
    module = make()
    load(module, sd, str(path))
    return module


def _real_info(resolution: int, source: str, files: dict[str, Path], extra: dict[str, Any]):
    """The BundleInfo of a real-checkpoint bundle: the paper's lambda_vgg, no built-in test data, and
    the CPU batch size and note of real-size networks."""
    return BundleInfo(
        lambda_vgg_default=PAPER_LAMBDA_VGG, default_batch_size=_default_batch_size(resolution),
        cpu_note=_CPU_NOTE if resolution >= 128 else None, test_data=None, source=source,
        extra={"files": {part: str(path) for part, path in files.items()}, **extra,
               "semantic": "no attribute classifier: pass --labels and/or --boundaries", "note": _CPU_NOTE})


def build_styleganinv_ffhq256(weights_dir: Optional[Path] = None):
    """The official idinvert FFHQ-256 bundle from `weights_dir` (default `$BENCH_HOME/weights`)."""
    weights_dir = resolve_weights_dir(weights_dir)
    # Check every file's keys and shapes first (memory-mapped, cheap), so that one problem is
    # reported before minutes of building, and all problems are reported at once.
    wrong = []
    for part, (filename, what, make, _, problems_of, _) in _OFFICIAL_PARTS.items():
        status, detail = _check_file(weights_dir / filename, what, make, problems_of)
        if status == "missing":
            raise _missing(weights_dir / filename, what)
        if status == "wrong":
            wrong.append(f"{weights_dir / filename}: {detail}")
    if wrong:
        raise CheckpointError("the styleganinv-ffhq256 files do not fit the official networks:\n  "
                              + "\n  ".join(wrong))
    parts = {part: _load_official_part(weights_dir, part) for part in _OFFICIAL_PARTS}
    generator = parts["generator"]
    files = {part: weights_dir / spec[0] for part, spec in _OFFICIAL_PARTS.items()}
    bundle = Bundle(
        name=STYLEGANINV_FFHQ256, resolution=generator.resolution, generator=generator,
        encoder=parts["encoder"], conventional_encoder=None, discriminator=None,
        perceptual=parts["perceptual"], classifier=None, attributes=(),
        fingerprint=weights_fingerprint(files),
        info=_real_info(generator.resolution, OFFICIAL_SOURCE, files, {
            "weights_dir": str(weights_dir),
            "perceptual": "vgg16-conv4_3 (official vgg16.pth, official preprocessing)",
            "lambda_vgg_paper": PAPER_LAMBDA_VGG,
            "w_avg_source": f"{files['generator']} truncation.w_avg"}))
    freeze(generator, bundle.encoder, bundle.perceptual)
    return bundle


# --------------------------------------------------------------------------------------------------
# StyleGAN2 (rosinality .pt)
# --------------------------------------------------------------------------------------------------

def find_stylegan2_checkpoint(weights_dir: Optional[Path] = None) -> Path:
    """The checkpoint to use: `weights_dir` itself if it is a `.pt` file, else the only `.pt` in it.

    `.pkl` files are refused with an explanation; no or several `.pt` files is an error listing
    what was found.
    """
    path = resolve_weights_dir(weights_dir)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        refuse_pickle(path, "StyleGAN2 checkpoint")
    if path.is_file():
        return path
    if not path.is_dir():
        raise MissingWeights(f"no StyleGAN2 checkpoint at {path}: pass --weights-dir FILE.pt (a "
                             "rosinality checkpoint with 'g_ema' and 'latent_avg') or a folder "
                             "holding one")
    candidates = sorted(path.glob("*.pt"))
    if len(candidates) == 1:
        return candidates[0]
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if not candidates:
        hint = (f" Found NVIDIA pickles {pickles}, which are not loaded (they execute code): "
                "convert one to a rosinality .pt with a tool you trust.") if pickles else ""
        raise MissingWeights(f"no StyleGAN2 checkpoint (*.pt) in {path}.{hint}")
    raise CheckpointError(f"{path} holds several .pt files ({', '.join(p.name for p in candidates)}); "
                          "pass --weights-dir with the one to use")


def build_stylegan2(weights_dir: Optional[Path] = None):
    """A bundle around a rosinality StyleGAN2 checkpoint: G and F (VGG16 from `vgg16.pth` beside the
    checkpoint); no encoders, discriminator or classifier."""
    ckpt = find_stylegan2_checkpoint(weights_dir)
    folder = ckpt.parent
    vgg_path = folder / VGG16_FILE
    if not vgg_path.exists():
        raise _missing(vgg_path, "VGG16 perceptual model, needed as F for optimisation-based "
                                 "inversion; the file of the idinvert release, placed beside the "
                                 "StyleGAN2 checkpoint")
    generator = load_rosinality_checkpoint(ckpt)
    perceptual = _load_official_part(folder, "perceptual")
    files = {"generator": ckpt, "perceptual": vgg_path}
    cfg = generator.config
    bundle = Bundle(
        name=f"{STYLEGAN2}:{ckpt.name}", resolution=generator.resolution, generator=generator,
        encoder=None, conventional_encoder=None, discriminator=None, perceptual=perceptual,
        classifier=None, attributes=(), fingerprint=weights_fingerprint(files),
        info=_real_info(generator.resolution, f"rosinality StyleGAN2 checkpoint {ckpt}", files, {
            "architecture": {k: cfg[k] for k in ("size", "style_dim", "n_mlp", "channel_multiplier")},
            "w_avg_source": generator.truncation.w_avg_source,
            "perceptual": "vgg16-conv4_3 (official idinvert vgg16.pth)",
            "no_encoder": "no encoder for this generator: encoder-based methods are skipped"}))
    freeze(generator, perceptual)
    return bundle


# --------------------------------------------------------------------------------------------------
# bench doctor
# --------------------------------------------------------------------------------------------------

def _row(group: str, path: Path, status: str, detail: str, enables: str) -> dict[str, Any]:
    return {"group": group, "file": path.name, "status": status, "path": str(path),
            "detail": detail, "enables": enables}


def _check_file(path: Path, what: str, make: Callable[[], nn.Module], problems_of: Callable
                ) -> tuple[str, str]:
    """(status, detail) of one state-dict file against the module `make()` builds."""
    if not path.exists():
        return "missing", f"{what}: not found; it goes at {path} (from {OFFICIAL_SOURCE})"
    try:
        sd = safe_torch_load(path, what=what, mmap=True)
    except Exception as e:   # unreadable, refused, ...: report, do not crash the doctor
        return "wrong", str(e)
    if not isinstance(sd, dict):
        return "wrong", f"{what}: holds a {type(sd).__name__}, expected a state dict"
    with torch.device("meta"):   # shapes only: no memory, no initialisation cost
        module = make()
    problems = problems_of(module, sd)
    if problems:
        return "wrong", f"{what} does not fit the official layout: " + "; ".join(problems)
    return "present", what


def doctor_report(weights_dir: Optional[Path] = None) -> list[dict[str, Any]]:
    """Rows {group, file, status present|missing|wrong, path, detail, enables} for the real bundles'
    files: the three files of "styleganinv-ffhq256", and every `.pt` (StyleGAN2 checkpoint) and
    `.pkl` (refused) in the weights folder. Files are opened memory-mapped and checked against the
    networks' key layouts and shapes; nothing is loaded into a network."""
    weights_dir = resolve_weights_dir(weights_dir)
    folder = weights_dir.parent if weights_dir.is_file() else weights_dir
    rows = []
    for part, (filename, what, make, _, problems_of, enables) in _OFFICIAL_PARTS.items():
        status, detail = _check_file(folder / filename, what, make, problems_of)
        rows.append(_row(STYLEGANINV_FFHQ256, folder / filename, status, detail,
                         f"bundle {STYLEGANINV_FFHQ256}: {enables}"))
    if folder.is_dir():
        for path in sorted(folder.glob("*.pt")):
            rows.append(_stylegan2_row(path))
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES):
            rows.append(_row(STYLEGAN2, path, "wrong",
                             "NVIDIA pickle: never loaded (unpickling runs code from the file); "
                             "convert it to a rosinality .pt with a tool you trust",
                             "nothing until converted"))
    return rows


def _stylegan2_row(path: Path) -> dict[str, Any]:
    enables = f"bundle {STYLEGAN2} (--weights-dir {path}); optimisation-based methods only"
    try:
        ckpt = safe_torch_load(path, what="StyleGAN2 checkpoint", mmap=True)
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("g_ema"), dict):
            raise CheckpointError("not a rosinality StyleGAN2 checkpoint (no 'g_ema' state dict)")
        cfg = infer_rosinality_config(ckpt["g_ema"], str(path))
        with torch.device("meta"):
            module = StyleGAN2Generator(**cfg)
        problems = check_state_dict(module, ckpt["g_ema"])
        if problems:
            raise CheckpointError("g_ema does not fit rosinality's layout: " + "; ".join(problems))
    except Exception as e:
        return _row(STYLEGAN2, path, "wrong", str(e), enables)
    avg = "latent_avg present" if ckpt.get("latent_avg") is not None else \
        "no latent_avg (mean w will be estimated)"
    vgg = "" if (path.parent / VGG16_FILE).exists() else f"; needs {VGG16_FILE} beside it"
    return _row(STYLEGAN2, path, "present",
                f"StyleGAN2 {cfg['size']} px, channel multiplier {cfg['channel_multiplier']}, "
                f"n_mlp {cfg['n_mlp']}, {avg}{vgg}", enables)


# --------------------------------------------------------------------------------------------------
# Random files in the official layouts (tests, dry runs)
# --------------------------------------------------------------------------------------------------

def write_random_official_files(weights_dir, seed: int = 0, dtype: torch.dtype = torch.float32,
                                parts=("generator", "encoder", "perceptual")) -> dict[str, Path]:
    """Write random-initialised state dicts of the official release under its file names.

    They load strictly, like the real files, and compute nothing meaningful. `dtype=torch.float16`
    halves the size (about 60 + 330 + 30 MB); loading casts to float32. Returns {part: path}.
    """
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for part in parts:
            filename, _, make, *_ = _OFFICIAL_PARTS[part]
            module = make()
            sd = {k: (v.to(dtype) if v.is_floating_point() else v)
                  for k, v in module.state_dict().items()}
            if part == "generator":
                with torch.no_grad():   # a plausible mean w, as a trained file has
                    z = torch.randn(64, module.z_space_dim)
                    sd["truncation.w_avg"] = module.mapping(z).view(64, -1, module.w_space_dim) \
                        .mean((0, 1)).to(dtype)
            del module
            torch.save(sd, weights_dir / filename)
            out[part] = weights_dir / filename
    return out


# --------------------------------------------------------------------------------------------------

def register(bundles=None) -> None:
    """Put the real bundles' specs into `bundles` (default: the registry `BUNDLES`). Idempotent."""
    bundles = BUNDLES if bundles is None else bundles
    bundles[STYLEGANINV_FFHQ256] = BundleSpec(
        build_styleganinv_ffhq256, tuple(spec[0] for spec in _OFFICIAL_PARTS.values()),
        "official In-Domain GAN Inversion FFHQ 256 px release (files you supply via --weights-dir)")
    bundles[STYLEGAN2] = BundleSpec(
        build_stylegan2, ("<checkpoint>.pt", VGG16_FILE),
        "a StyleGAN2 checkpoint in rosinality's .pt format (--weights-dir FILE.pt), no encoder",
        accepts_file=True)


register()
