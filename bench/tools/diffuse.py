"""``python -m bench diffuse``: semantic diffusion (paper Fig. 8) of a target image into context images.

    python -m bench diffuse --target face.png --context scene.png [--context other.png ...]
                            [--mask mask.png | --box x0,y0,x1,y1] [--bundle NAME] [--iters 100]
                            [--out results/diffusion/face_TO_scene.png]

Writes a PNG grid, one row per context: target | context | composite | result, and the codes beside it
(``<out>.pt``). The algorithm is ``idinvert.diffusion.diffuse`` (masked loss, no encoder regulariser).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

import torch

from bench import defaults
from bench.cli_table import standalone_parser

__all__ = ["main", "build_parser", "load_image", "load_mask", "parse_box"]


def build_parser() -> argparse.ArgumentParser:
    """``bench diffuse``'s parser, from the command table (``bench.cli_table``)."""
    return standalone_parser("diffuse")


def _usage(message: str) -> Exception:
    from bench.errors import UsageError

    return UsageError(message)


def load_image(path: Path, resolution: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """An image file -> ([1, 3, R, R] in [-1, 1], original (width, height))."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            size = im.size
            rgb = im.convert("RGB").resize((resolution, resolution), Image.BICUBIC)
    except FileNotFoundError:
        raise _usage(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise _usage(f"cannot read image {path}: {exc}") from None
    import numpy as np

    arr = torch.from_numpy(np.asarray(rgb, dtype=np.float32).copy()).permute(2, 0, 1)
    return (arr / 127.5 - 1.0)[None], size


def load_mask(path: Path, resolution: int) -> torch.Tensor:
    """A mask image (white = target region; any size, greyscale or RGB) -> binary [1, 1, R, R]."""
    from PIL import Image, UnidentifiedImageError

    from idinvert.diffusion import resize_mask

    try:
        with Image.open(path) as im:
            import numpy as np

            arr = torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32) / 255.0)
    except FileNotFoundError:
        raise _usage(f"mask not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise _usage(f"cannot read mask {path}: {exc}") from None
    try:
        return resize_mask(arr, resolution)
    except ValueError as exc:
        raise _usage(f"--mask {path}: {exc}") from None


def parse_box(text: str, image_size: tuple[int, int], resolution: int) -> tuple[int, int, int, int]:
    """'x0,y0,x1,y1' in pixels of an image of ``image_size`` (w, h), or fractions when all <= 1 ->
    the box in pixels of the model's resolution."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != 4:
        raise _usage(f"--box {text!r}: expected four numbers x0,y0,x1,y1")
    x0, y0, x1, y1 = vals
    if x1 <= x0 or y1 <= y0:
        raise _usage(f"--box {text!r}: need x0 < x1 and y0 < y1")
    w, h = image_size
    if all(0 <= v <= 1 for v in vals):
        sx = sy = float(resolution)
    else:
        sx, sy = resolution / w, resolution / h
    box = (round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy))
    if box[2] <= box[0] or box[3] <= box[1] or box[2] <= 0 or box[3] <= 0 \
            or box[0] >= resolution or box[1] >= resolution:
        raise _usage(f"--box {text!r} selects no pixel at the model's {resolution} px")
    return box


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.iters < 0:
        raise _usage(f"--iters must be >= 0, got {args.iters}")
    if args.lr <= 0:
        raise _usage(f"--lr must be > 0, got {args.lr}")
    from bench.artifacts import save_atomic, save_png, safe_name
    from bench.runner import resolve_device
    from idinvert.diffusion import box_mask, center_box, diffuse, diffusion_grid
    from idinvert.zoo import load_bundle

    device = resolve_device(args.device)
    bundle = load_bundle(args.bundle, args.weights_dir, device=device)
    res = bundle.resolution
    target, target_size = load_image(args.target, res)
    context = torch.cat([load_image(c, res)[0] for c in args.context])
    if args.mask is not None:
        mask = load_mask(args.mask, res)
        region = f"mask {args.mask}"
    else:
        box = parse_box(args.box, target_size, res) if args.box else center_box(res)
        mask = box_mask(res, box)
        region = f"box {box} at {res} px" + ("" if args.box else " (official centre crop)")
    if args.init == "encoder" and not bundle.has("encoder"):
        raise _usage(f"bundle {bundle.name} has no domain-guided encoder; use --init mean")

    t0 = time.perf_counter()
    result = diffuse(bundle, target, context, mask, steps=args.iters, lr=args.lr,
                     lambda_perceptual=args.lambda_vgg, init=args.init, seed=args.seed)
    seconds = time.perf_counter() - t0
    ctx_name = args.context[0].stem + (f"+{len(args.context) - 1}" if len(args.context) > 1 else "")
    out = args.out or Path(defaults.RESULTS_DIR) / "diffusion" / \
        f"{safe_name(args.target.stem)}_TO_{safe_name(ctx_name)}.png"
    save_png(diffusion_grid(target, context, result), out)
    save_atomic({"codes": result.codes, "init_codes": result.init_codes, "mask": result.mask,
                 "target": str(args.target), "context": [str(c) for c in args.context],
                 "bundle": bundle.name, "fingerprint": bundle.fingerprint, "iters": args.iters,
                 "lr": args.lr, "init": args.init}, out.with_suffix(".pt"))
    mse = ", ".join(f"{v:.4f}" for v in result.masked_mse.tolist())
    print(f"diffused {args.target} into {len(args.context)} context image(s) ({region}), {args.iters} "
          f"steps in {seconds:.1f}s; masked MSE {mse}")
    print(f"wrote {out} (target | context | composite | result) and {out.with_suffix('.pt')}")
    return 0
