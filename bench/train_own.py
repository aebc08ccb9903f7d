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

__all__ = ["cmd_train", "PART_NAMES"]

PART_NAMES = ("conventional", "domain", "e4e", "restyle")


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
