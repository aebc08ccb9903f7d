"""What the pSp, e4e and ReStyle releases share: one torch file holding the encoder and the StyleGAN2
generator it was trained with, read strictly and safely into a bundle.

A release file (e.g. `e4e_ffhq_encode.pt`) is a dict:

    state_dict   {"encoder.<key>": tensor, "decoder.<rosinality Generator key>": tensor}
    opts         the training options (a dict): encoder_type, stylegan_size (e4e) / output_size
                 (pSp, ReStyle), start_from_latent_avg, input_nc, n_iters_per_batch (ReStyle), ...
    latent_avg   the average code the encoder starts from, [L, 512] (or [512])

It is read with `torch.load(weights_only=True)` (nothing in it can run code). Strict: a key of
`state_dict` outside `encoder.` / `decoder.`, a missing or extra key, a wrong shape, an `encoder_type` the
format does not have, or a size that disagrees with the decoder is one error naming the file and the key.
The decoder is `idinvert.nets.stylegan2.StyleGAN2Generator` (the `stylegan2` bundle's class), seen through
`PooledStyleGAN2` at min(256, its size) px: the releases compare at 256 (their `face_pool`), their encoders
read 256 px images. F (VGG16, for the optimisation methods and PTI) is the idinvert release's `vgg16.pth`
beside the file, when present.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from idinvert.checkpoints import CheckpointError, safe_torch_load
from idinvert.nets.loading import check_state_dict
from idinvert.nets.psp_encoders import RELEASE_ENCODERS, style_count
from idinvert.nets.stylegan2 import StyleGAN2Generator, infer_rosinality_config

__all__ = ["ReleaseFormat", "ReleaseFile", "read_release", "check_release", "release_path",
           "COMPARE_SIZE", "PREFIXES"]

COMPARE_SIZE = 256          # the releases' face_pool: images are compared (and encoded) at 256 px
PREFIXES = ("encoder.", "decoder.")
_SIZE_KEYS = ("stylegan_size", "output_size")   # e4e names it stylegan_size; pSp and ReStyle output_size


@dataclass(frozen=True)
class ReleaseFormat:
    """One release: bundle name, official file name, the encoder types it holds, the bundle part the
    encoder fills, where to get the file, and the paper."""
    name: str
    filename: str
    encoder_types: tuple[str, ...]
    part: str
    source: str
    paper: str

    def describe(self) -> str:
        return (f"{self.paper} release {self.filename} ({'/'.join(self.encoder_types)} + StyleGAN2), "
                f"--weights-dir FILE.pt or a folder holding it")


@dataclass
class ReleaseFile:
    """A release file read and checked: its parts split by prefix and its facts."""
    path: Path
    encoder_type: str
    stylegan_size: int
    encoder_sd: dict
    decoder_sd: dict
    latent_avg: Optional[torch.Tensor]
    opts: dict

    @property
    def start_from_latent_avg(self) -> bool:
        return bool(self.opts.get("start_from_latent_avg", True))


def release_path(fmt: ReleaseFormat, weights_dir: Optional[Path]) -> Path:
    """`weights_dir` itself when it is a file, else `weights_dir / fmt.filename` (default folder:
    `$BENCH_HOME/weights`)."""
    from idinvert.real_bundles import resolve_weights_dir

    path = resolve_weights_dir(weights_dir)
    return path if path.is_file() else path / fmt.filename


def _fail(path: Path, message: str) -> CheckpointError:
    return CheckpointError(f"{path}: {message}")


def read_release(path: Path, fmt: ReleaseFormat, mmap: bool = False) -> ReleaseFile:
    """Read and check the file's container: dict, `state_dict`, `opts`, `encoder_type`, size, prefixes."""
    ckpt = safe_torch_load(path, what=f"{fmt.paper} release file", mmap=mmap)
    if not isinstance(ckpt, dict):
        raise _fail(path, f"holds a {type(ckpt).__name__}, expected a {fmt.paper} release dict "
                          "('state_dict', 'opts', 'latent_avg')")
    for key in ("state_dict", "opts"):
        if not isinstance(ckpt.get(key), dict):
            raise _fail(path, f"no '{key}' dict (found keys {sorted(map(str, ckpt))}); not a {fmt.paper} release file")
    opts, sd = ckpt["opts"], ckpt["state_dict"]
    kind = opts.get("encoder_type")
    if kind not in fmt.encoder_types:
        raise _fail(path, f"opts['encoder_type'] is {kind!r}; bundle {fmt.name} holds "
                          f"{' or '.join(fmt.encoder_types)}")
    stray = [k for k in sd if not str(k).startswith(PREFIXES)]
    if stray:
        raise _fail(path, f"unexpected key {stray[0]!r} in state_dict (only encoder.* and decoder.*)")
    split = {p: {k[len(p):]: v for k, v in sd.items() if k.startswith(p)} for p in PREFIXES}
    size = _stylegan_size(path, opts, split["decoder."])
    avg = ckpt.get("latent_avg")
    if avg is not None and (not isinstance(avg, torch.Tensor) or avg.ndim == 0 or avg.shape[-1] != 512
                            or avg.numel() not in (512, 512 * style_count(size))):
        raise _fail(path, f"latent_avg has shape {tuple(getattr(avg, 'shape', ()))}, expected "
                          f"[{style_count(size)}, 512] or [512]")
    return ReleaseFile(path, kind, size, split["encoder."], split["decoder."], avg, opts)


def _stylegan_size(path: Path, opts: dict, decoder_sd: dict) -> int:
    """The decoder's size from opts; absent there (pSp's inference then assumes 1024), from the
    decoder's own keys (its number of toRGB blocks)."""
    size = next((opts[k] for k in _SIZE_KEYS if k in opts), None)
    if size is None:
        try:
            size = infer_rosinality_config(decoder_sd, f"{path} state_dict['decoder.*']")["size"]
        except ValueError as exc:
            raise _fail(path, f"opts names no StyleGAN size ({' / '.join(_SIZE_KEYS)}) and {exc}") from None
    if not isinstance(size, int) or size < 8 or size & (size - 1):
        raise _fail(path, f"opts has no valid StyleGAN size ({' / '.join(_SIZE_KEYS)}: {size!r})")
    return size


def make_networks(release: ReleaseFile) -> tuple[nn.Module, StyleGAN2Generator]:
    """(encoder, decoder) of the release's architecture, not loaded (build under `torch.device("meta")`
    for a shape check)."""
    return (RELEASE_ENCODERS[release.encoder_type](release.stylegan_size),
            StyleGAN2Generator(release.stylegan_size, 512, 8, channel_multiplier=2))


def check_release(release: ReleaseFile) -> None:
    """Raise naming the first problem key of `encoder.*` / `decoder.*` against the architecture."""
    with torch.device("meta"):
        encoder, decoder = make_networks(release)
    for prefix, module, sd in (("encoder.", encoder, release.encoder_sd), ("decoder.", decoder, release.decoder_sd)):
        problems = check_state_dict(module, sd)
        if problems:
            raise _fail(release.path, f"state_dict['{prefix}*'] does not fit {type(module).__name__} "
                                      f"({release.encoder_type}, size {release.stylegan_size}): "
                                      + _prefixed(problems[0], prefix))
    if release.latent_avg is None and (release.encoder_type in ("BackboneEncoder", "ProgressiveBackboneEncoder")
                                       or release.start_from_latent_avg):
        raise _fail(release.path, "no 'latent_avg' entry, which this encoder starts from")


def _prefixed(problem: str, prefix: str) -> str:
    """A check_state_dict problem with the file's own key names (encoder.x, not x)."""
    head, sep, keys = problem.partition(": ")
    if head in ("missing keys", "unexpected keys"):
        return f"{head}: " + ", ".join(prefix + k for k in keys.split(", "))
    return prefix + problem if not problem.startswith("shape mismatch") else \
        problem.replace("shape mismatch for ", f"shape mismatch for {prefix}")


def describe_release(release: ReleaseFile) -> dict[str, Any]:
    """The facts a run records about the file."""
    keep = ("encoder_type", "stylegan_size", "output_size", "input_nc", "start_from_latent_avg",
            "n_iters_per_batch", "dataset_type", "lpips_lambda", "id_lambda", "l2_lambda")
    return {"file": str(release.path), **{k: release.opts[k] for k in keep if k in release.opts
                                          and isinstance(release.opts[k], (int, float, str, bool))}}


# --------------------------------------------------------------------------------------------------
# Building the bundle
# --------------------------------------------------------------------------------------------------

def _missing(fmt: ReleaseFormat, path: Path):
    from idinvert.bundles.base import MissingWeights

    return MissingWeights(f"missing release file {path} ({fmt.paper}: {fmt.filename}). Download it from "
                          f"{fmt.source} and put it at {path} (or pass --weights-dir FILE.pt; default folder "
                          "$BENCH_HOME/weights).")


def load_release_networks(release: ReleaseFile) -> tuple[nn.Module, StyleGAN2Generator]:
    """(encoder with its latent_avg, decoder with w_avg), loaded strictly, in eval mode, float32."""
    from idinvert.nets.loading import load_state_dict_strict

    check_release(release)
    # Built without initialising (meta, then empty storage): every persistent tensor comes from the file,
    # and the two non-persistent ones (the start code, the mean w) are set below.
    with torch.device("meta"):
        encoder, decoder = make_networks(release)
    encoder, decoder = encoder.to_empty(device="cpu"), decoder.to_empty(device="cpu")
    load_state_dict_strict(encoder, release.encoder_sd, f"{release.path} state_dict['encoder.*']")
    load_state_dict_strict(decoder, release.decoder_sd, f"{release.path} state_dict['decoder.*']")
    avg = None if release.latent_avg is None else release.latent_avg.float().reshape(-1, 512)
    restyle = release.encoder_type in ("BackboneEncoder", "ProgressiveBackboneEncoder")
    encoder.set_latent_avg(avg if (restyle or release.start_from_latent_avg) else None)
    if avg is not None:
        decoder.set_w_avg(avg[0], f"{release.path} latent_avg (row 0)")
    else:
        decoder.set_w_avg(decoder.estimate_w_avg(4096, seed=0),
                          "estimated: mean of mapping(z) over 4096 samples, seed 0 (the file has no latent_avg)")
    return encoder.eval(), decoder.eval()


def _perceptual(folder: Path) -> Optional[nn.Module]:
    """VGG16 F from the idinvert release's vgg16.pth beside the file; None when absent."""
    from idinvert.nets.loading import load_state_dict_strict
    from idinvert.nets.perceptual import VGG16Perceptual
    from idinvert.real_bundles import VGG16_FILE

    path = folder / VGG16_FILE
    if not path.exists():
        return None
    sd = safe_torch_load(path, what="VGG16 perceptual model")
    if not isinstance(sd, dict):
        raise _fail(path, f"holds a {type(sd).__name__}, expected a state dict")
    return load_state_dict_strict(VGG16Perceptual(), sd, str(path))


def _batch_sizes(native: int) -> Optional[dict[str, int]]:
    """Default batch per device type: an optimisation step holds the decoder's activations at its own
    size (x16 those of 256 px at 1024 px), so a CPU run takes one 1024 px image at a time."""
    if native < 128:
        return None
    scale = (256 / native) ** 2
    return {"cpu": max(1, int(8 * scale)), "cuda": max(1, int(128 * scale))}


def build_release_bundle(fmt: ReleaseFormat, weights_dir: Optional[Path] = None):
    """The bundle `fmt.name` from the release file (see the module docstring)."""
    from idinvert.nets.perceptual import PAPER_LAMBDA_VGG
    from idinvert.nets.pooled_generator import PooledStyleGAN2
    from idinvert.real_bundles import VGG16_FILE
    from idinvert.utils import freeze
    from idinvert.bundles.base import Bundle, BundleInfo, weights_fingerprint

    path = release_path(fmt, weights_dir)
    if not path.exists():
        raise _missing(fmt, path)
    release = read_release(path, fmt)
    encoder, decoder = load_release_networks(release)
    generator = PooledStyleGAN2(decoder, min(COMPARE_SIZE, release.stylegan_size))
    perceptual = _perceptual(path.parent)
    files = {"release": path, **({"perceptual": path.parent / VGG16_FILE} if perceptual is not None else {})}
    info = BundleInfo(
        lambda_vgg_default=PAPER_LAMBDA_VGG, default_batch_size=_batch_sizes(release.stylegan_size),
        cpu_note=(f"a {release.stylegan_size} px StyleGAN2 decoder: on a CPU the optimisation methods and PTI "
                  "take minutes per image; use --device cuda, or --limit") if release.stylegan_size >= 128 else None,
        test_data=None, source=f"{fmt.paper} release {path} ({fmt.source})",
        extra={"release": describe_release(release), "files": {k: str(v) for k, v in files.items()},
               "compare_resolution": generator.resolution, "decoder_resolution": release.stylegan_size,
               "encoder_input": "256 x 256 (other sizes resized: area when larger, bilinear when smaller)",
               "perceptual": "vgg16-conv4_3 (idinvert release vgg16.pth)" if perceptual is not None else
               f"none: put {VGG16_FILE} beside {path.name} for image2stylegan, idinvert and pti",
               "w_avg_source": decoder.truncation.w_avg_source,
               "semantic": "no attribute classifier: pass --labels and/or --boundaries"})
    bundle = Bundle(name=fmt.name, resolution=generator.resolution, generator=generator, encoder=None,
                    conventional_encoder=None, discriminator=None, perceptual=perceptual, classifier=None,
                    attributes=(), fingerprint=weights_fingerprint(files), info=info, **{fmt.part: encoder})
    freeze(generator, encoder, perceptual)
    return bundle


# --------------------------------------------------------------------------------------------------
# Random files in the release layouts (tests, dry runs)
# --------------------------------------------------------------------------------------------------

def write_random_release(fmt: ReleaseFormat, target: Path, stylegan_size: int = 32, seed: int = 0,
                         dtype: torch.dtype = torch.float16) -> Path:
    """Write a random-initialised file in `fmt`'s layout (at `target`, or `target / fmt.filename` for a
    folder): the architecture at `stylegan_size` (pSp's pyramid needs >= 32), opts as the release's, a
    plausible latent_avg. It loads strictly like the real file and computes nothing meaningful."""
    target = Path(target)
    path = target / fmt.filename if target.is_dir() else target
    kind = fmt.encoder_types[0]
    probe = ReleaseFile(path, kind, stylegan_size, {}, {}, None, {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder, decoder = make_networks(probe)
        with torch.no_grad():
            avg = decoder.mapping(torch.randn(64, 512)).mean(0)
    restyle = kind in ("BackboneEncoder", "ProgressiveBackboneEncoder")
    opts = {"encoder_type": kind, ("stylegan_size" if fmt.paper == "e4e" else "output_size"): stylegan_size,
            "start_from_latent_avg": True, "input_nc": 6 if restyle else 3, "dataset_type": "ffhq_encode",
            "note": "random weights written by idinvert-bench for tests; not a trained model"}
    if restyle:
        opts["n_iters_per_batch"] = 5
    sd = {f"{prefix}{k}": (v.to(dtype) if v.is_floating_point() else v)
          for prefix, module in (("encoder.", encoder), ("decoder.", decoder))
          for k, v in module.state_dict().items()}
    torch.save({"state_dict": sd, "opts": opts,
                "latent_avg": avg.unsqueeze(0).repeat(style_count(stylegan_size), 1).to(dtype)}, path)
    return path
