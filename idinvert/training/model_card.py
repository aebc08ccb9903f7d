"""The embedded bundle's model card (MODEL_CARD.md), rendered from a Jinja2 template beside this file.

    render_model_card(manifest, cards, tried=TRIED, looked_at=SAMPLES_LOOKED_AT, ...) -> markdown

`manifest` is bundle.json (quality, recipe, files, fingerprint), `cards` the parts' JSON cards. The
prose lives in model_card.md.j2; the few lines that need logic of their own (the GAN's settings and
warm start, where each plateau-trained encoder stopped and which checkpoint shipped) are built here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import jinja2

__all__ = ["render_model_card", "fmt", "gan_settings_lines", "encoder_stop_lines"]

_TEMPLATE = "model_card.md.j2"


def fmt(v, digits: int = 4) -> str:
    """A measured value for the card: floats to `digits` significant digits, absent ones as n/a."""
    if v is None or isinstance(v, jinja2.Undefined):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def gan_settings_lines(g_card: dict) -> list[str]:
    """The GAN's length and main settings, and where a warm-started run began."""
    t = g_card.get("training")
    if not t:
        return []
    keys = ("total_kimg", "batch_size", "lr", "r1_gamma", "r1_interval", "style_mixing_prob",
            "ema_kimg", "seed")
    shown = ", ".join(f"{k} {t[k]}" for k in keys if k in t)
    lines = [f"- GAN: trained {fmt(g_card.get('kimg'))} kimg ({shown})."]
    warm = g_card.get("warm_start")
    if warm:
        lines.append(f"- GAN warm start: the first {fmt(warm.get('kimg'))} kimg are the weights in "
                     f"{warm.get('from')} (generator sha256 {str(warm.get('generator_sha256'))[:16]}); "
                     f"{warm.get('note')}.")
    return lines


def encoder_stop_lines(cards: dict) -> list[str]:
    """Where each plateau-trained encoder stopped, why (plateau, step cap, or a sitting's time budget),
    and which of its checkpoints shipped."""
    out = []
    for part, label in (("conventional_encoder", "Conventional"), ("encoder", "Domain-guided")):
        t = (cards.get(part) or {}).get("training") or {}
        if "steps" in t:
            batch = t.get("config", {}).get("batch_size", 32)
            kimg = t.get("images_seen", t["steps"] * batch) / 1000
            out.append(f"- {label} encoder stopped after {t['steps']} steps ({kimg:.0f} kimg): "
                       f"{t.get('stopped', 'reason not recorded (trained before it was)')}; "
                       f"{_exported_text(t)}.")
    return out


def _exported_text(training: dict) -> str:
    exported = training.get("exported")
    if not exported:
        return "the shipped weights are its last step's (trained before the best checkpoint was kept)"
    if exported.get("kimg") is None:
        return f"the shipped weights are its {exported['rule']}"
    return (f"the shipped weights are its best-validation checkpoint, {exported['kimg']:g} kimg "
            f"(validation MSE {exported['val_mse']:.4g})")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent)),
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
                             autoescape=False)
    env.filters["fmt"] = fmt
    env.filters["tojson_plain"] = json.dumps   # as the JSON cards print it (no HTML escaping)
    return env


def render_model_card(manifest: dict, cards: dict, tried: dict, looked_at: dict,
                      extra_sections: Iterable[str] = ()) -> str:
    """MODEL_CARD.md's text. tried: {bar name: what was tried against it}; looked_at: {"fingerprint",
    "text"} of the person who last looked at samples.png; extra_sections: markdown blocks placed
    before the Samples section."""
    wall = manifest["wall_time_s"]
    total = sum(float(wall[p]) for p in manifest["files"] if p != "discriminator" and wall.get(p) is not None)
    text = _environment().get_template(_TEMPLATE).render(
        m=manifest, cards=cards, tried=tried, looked_at=looked_at, total_wall=total,
        gan_lines=gan_settings_lines(cards.get("generator", {})), stop_lines=encoder_stop_lines(cards),
        extra_sections=list(extra_sections))
    return text.rstrip("\n") + "\n"
