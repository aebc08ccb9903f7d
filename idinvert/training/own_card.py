"""The files that make a `bench train` output directory a bundle: the generator copy, bundle.json, the
training curves (JSONL and a figure) and MODEL_CARD.md (rendered from own_card.md.j2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jinja2

from idinvert.training.model_card import fmt
from idinvert.training.own_parts import PART_FILES
from idinvert.utils import atomic_save, atomic_write_text

__all__ = ["write_bundle_files", "write_generator", "GENERATOR_FILE"]

GENERATOR_FILE = "generator.pt"



TRAINED_FORMAT = "bench-train/1"   # bundle.json "format" of a directory written by `bench train`

def write_generator(generator, out_dir: Path) -> Path:
    """generator.pt (fp32 state dict, so the copy is the source exactly) and generator.json (class,
    constructor, w_avg and where it came from: StyleGAN2's mean w is not part of its state dict)."""
    path = atomic_save({k: v.detach().cpu() for k, v in generator.state_dict().items()}, out_dir / GENERATOR_FILE)
    card = {"model": type(generator).__name__, "constructor": dict(generator.config),
            "w_avg": generator.truncation.w_avg.detach().cpu().tolist(),
            "w_avg_source": getattr(generator.truncation, "w_avg_source", "the generator's truncation.w_avg")}
    atomic_write_text(json.dumps(card) + "\n", path.with_suffix(".json"))
    return path


def _copy_curves(out_dir: Path, parts) -> dict[str, list[dict]]:
    curves = {}
    (out_dir / "curves").mkdir(exist_ok=True)
    for part in parts:
        work = out_dir / "work" / part
        for name, target in (("log.jsonl", f"{part}.jsonl"), ("val.jsonl", f"{part}.val.jsonl")):
            if (work / name).exists():
                shutil.copyfile(work / name, out_dir / "curves" / target)
        log = out_dir / "curves" / f"{part}.jsonl"
        curves[part] = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else []
    return curves


def _plot_curves(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(curves)), figsize=(4 * max(1, len(curves)), 3), squeeze=False)
    for ax, (part, rows) in zip(axes[0], curves.items()):
        for key in sorted({k for r in rows for k in r if k.startswith("loss")}):
            ax.plot([r["step"] for r in rows if key in r], [r[key] for r in rows if key in r], label=key)
        ax.set_title(part)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_bundle_files(source, out_dir: Path, settings, fcard: dict, images) -> dict:
    """Write generator, curves, bundle.json and MODEL_CARD.md into `out_dir`; returns the manifest."""
    write_generator(source.generator, out_dir)
    if fcard["kind"] == "domain-classifier" and not (out_dir / "classifier.pt").exists():   # the source's
        from idinvert.training.own_parts import write_part
        write_part(source.classifier, out_dir / "classifier.pt", {"part": "classifier", "from": source.origin})
    curves = _copy_curves(out_dir, settings.parts)
    _plot_curves(curves, out_dir / "curves.png")
    G = source.generator
    manifest = {
        "format": TRAINED_FORMAT, "name": f"trained:{out_dir.name}", "resolution": G.resolution,
        "num_layers": G.num_layers, "w_dim": G.w_space_dim, "source": source.origin, "dir": str(out_dir),
        "attributes": list(source.attributes) if (out_dir / "classifier.pt").exists() else [],
        "perceptual": fcard, "lambda_vgg_default": fcard["lambda_vgg"] or None,
        "perceptual_layer": fcard.get("layer"),
        "parts": {part: PART_FILES[part][1] for part in settings.parts},
        "data": {"folder": str(images.root), "images": len(images), "fingerprint": images.fingerprint,
                 "val_images": settings.val_images},
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()},
    }
    atomic_write_text(json.dumps(manifest, indent=2) + "\n", out_dir / "bundle.json")
    cards = {}
    for part in settings.parts:
        card_path = (out_dir / PART_FILES[part][1]).with_suffix(".json")
        c = json.loads(card_path.read_text())
        cards[part] = {**c, "file": PART_FILES[part][1], "final": c["training"].get("final")}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), undefined=jinja2.Undefined,
                             keep_trailing_newline=True)
    text = env.get_template("own_card.md.j2").render(m=manifest, cards=cards, fmt=fmt)
    atomic_write_text(text, out_dir / "MODEL_CARD.md")
    return manifest
