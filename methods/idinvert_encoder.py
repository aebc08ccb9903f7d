"""``idinvert-encoder``: the domain-guided encoder alone (trained on real images through the frozen
generator, pixel + perceptual + adversarial loss), one forward pass per batch."""

from __future__ import annotations

from dataclasses import dataclass

from methods.encoder import ConventionalEncoder
from methods.registry import register


@register
@dataclass
class IDInvertEncoder(ConventionalEncoder):
    """E_domain(x) -> W+. No hyperparameters: a single forward pass (batch norm in eval mode)."""

    name = "idinvert-encoder"
    summary = "domain-guided encoder alone, no optimisation"
    needs = ("generator", "encoder")
    part = "encoder"
