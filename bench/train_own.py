"""`bench train`: train the comparison's encoders for your own generator on your own image folder.

    python -m bench train --bundle stylegan2 --weights-dir G.pt --data folder:faces/ --out my-bundle/
    torchrun --nproc_per_node 4 -m bench train ... --device cuda --amp          # the same, data-parallel
    python -m bench run --bundle my-bundle/ --data faces-test/ --methods all

The library side is `idinvert.training.own_generator` (what is trained, the bundle directory it writes);
this module checks the command line and reports. Rerunning the same command resumes (each part from its
last checkpoint; parts already exported are kept).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.errors import UsageError, check_device, check_output_dir, check_threads

__all__ = ["add_parser", "cmd_train", "PART_NAMES"]

PART_NAMES = ("conventional", "domain", "e4e", "restyle")


def add_parser(sub) -> None:
    """The `train` subcommand's arguments (defaults: `idinvert.training.own_generator.TrainSettings`)."""
    p = sub.add_parser("train", help="train the encoders for your own generator on an image folder (torchrun-able)")
    p.add_argument("--bundle", required=True,
                   help="the generator's bundle: stylegan2 (a rosinality .pt via --weights-dir), styleganinv-ffhq256, "
                        "synthetic-faces, tiny-random")
    p.add_argument("--weights-dir", type=Path, default=None, help="the bundle's weights (file or folder)")
    p.add_argument("--data", required=True, help="folder:DIR (or DIR) of RGB training images at G's resolution")
    p.add_argument("--out", type=Path, required=True, help="the bundle directory to write (rerun: resumes)")
    p.add_argument("--parts", default=",".join(PART_NAMES), help="comma list of %(default)s")
    p.add_argument("--labels", type=Path, default=None,
                   help="CSV 'file,<attr>,...' of 0/1 labels for the folder's images: an attribute classifier is "
                        "trained first (the boundaries' labeller, and F's stand-in without VGG16)")
    p.add_argument("--steps", type=int, default=None, help="steps per part (default 2000; plateau-stop before)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch over all processes (default 16)")
    p.add_argument("--val-images", type=int, default=None, help="images held out for validation (default 64)")
    p.add_argument("--val-every", type=int, default=None, help="validate every N steps (default 100)")
    p.add_argument("--plateau-window", type=int, default=None, help="plateau window in steps (default 500)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="checkpoint every N steps (default 50)")
    p.add_argument("--log-every", type=int, default=None, help="one loss-log row per N steps (default 10)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop this sitting after this long (checkpointed; rerun the same command to resume)")
    p.add_argument("--vgg16", type=Path, default=None,
                   help="the official idinvert vgg16.pth for the perceptual term (default: beside the generator's "
                        "weights, or $BENCH_HOME/weights)")
    p.add_argument("--device", default="cpu", help="cpu, cuda (under torchrun: each process its LOCAL_RANK GPU)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _settings(args: argparse.Namespace, world: int):
    from idinvert.training.own_generator import TrainSettings

    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = [p for p in parts if p not in PART_NAMES]
    if unknown or not parts:
        raise UsageError(f"--parts: unknown part(s) {', '.join(unknown) or '(none)'}; parts: {', '.join(PART_NAMES)}")
    given = {k: getattr(args, k) for k in ("steps", "batch_size", "val_images", "val_every", "plateau_window",
                                           "checkpoint_every", "log_every") if getattr(args, k) is not None}
    for k, v in given.items():
        if v < (0 if k in ("val_every", "plateau_window") else 1):
            raise UsageError(f"--{k.replace('_', '-')} must be positive, got {v}")
    if args.labels is not None:
        if not args.labels.is_file():
            raise UsageError(f"--labels {args.labels}: no such file")
        parts = ("classifier",) + parts
    s = TrainSettings(parts=parts, max_minutes=args.max_minutes, amp=args.amp, show_progress=not args.quiet, **given)
    if s.batch_size % world:
        raise UsageError(f"--batch-size {s.batch_size} does not divide by the {world} processes of this torchrun job")
    return s


def _data_dir(spec: str) -> Path:
    path = Path(spec[len("folder:"):] if spec.startswith("folder:") else spec)
    if not path.is_dir():
        raise UsageError(f"--data {spec}: no such folder")
    return path


def cmd_train(args: argparse.Namespace) -> int:
    import os

    import torch

    from idinvert.training.loop import Dist
    from idinvert.training.own_generator import find_vgg16, load_source, train_bundle, training_folder

    check_threads(args.threads)
    check_device(args.device)
    check_output_dir(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = _settings(args, int(os.environ.get("WORLD_SIZE", "1")))
    data = _data_dir(args.data)
    import idinvert.bundles  # noqa: F401  (registers the release formats)
    try:
        source = load_source(args.bundle, args.weights_dir)
    except ValueError as exc:
        raise UsageError(f"--bundle: {exc}") from None
    images = training_folder(data, source.generator.resolution, settings.val_images + settings.batch_size,
                             args.labels)
    dist = Dist.from_env(args.device)
    summaries = train_bundle(source, images, args.out, settings, dist, find_vgg16(args.vgg16, source))
    if dist.writer:
        _report(summaries, args.out, settings)
    return 0


def _report(summaries: dict, out: Path, settings) -> None:
    for part, s in summaries.items():
        val = s["exported"]["val"]
        print(f"bench train: {part}: {s['steps']} steps on {s['processes']} process(es), {s['wall_time_s']} s; "
              f"stopped at the {s['stopped']}" + (f"; validation {'BCE' if part == 'classifier' else 'MSE'} {val:.4g}" if val is not None else ""))
    if (out / "bundle.json").exists():
        print(f"bench train: wrote {out} (MODEL_CARD.md, curves.png); use it with: "
              f"python -m bench run --bundle {out} --data FOLDER")
    else:
        print(f"bench train: not finished; rerun the same command to resume from {out / 'work'}")
