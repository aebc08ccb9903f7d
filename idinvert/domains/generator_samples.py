"""The known-answer set: G's own samples with the codes that made them (issue 22).

``--data gsamples:N`` (or ``gsamples:N:S``) gives N images G(w) of untruncated codes w = mapping(z), z
drawn from a CPU generator seeded ``KNOWN_ANSWER_SEED + S`` (S = 0 by default), so the set is the same
for every run, device and method. Every inversion method inverts them like any image, and because the
true codes are known (``ImageSet.true_codes``) the harness can say how far each method's codes are
from them (``code_recovery``) and whether a method that recovered them would reach the boundaries' AP
ceiling. The images carry no renderer labels: their attributes are the judge's prediction on them,
as for any unlabelled folder.

The seed is disjoint from those of every other set of G's codes the harness samples (boundary training
codes: seed 0; code metrics' reference: 7,000; the boundaries' held-out ceiling codes: 1,000,003), so
no known-answer code was seen by a boundary in training.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from idinvert.domains.base import ImageSet, fingerprint_of
from idinvert.utils import device_of

PREFIX = "gsamples"
KNOWN_ANSWER_SEED = 2_000_003
_SPEC = re.compile(rf"^{PREFIX}:(\d+)(?::(\d+))?$")


def is_spec(text: object) -> bool:
    """Does a ``--data`` value name the known-answer set (``gsamples:...``) rather than a folder?"""
    return str(text).startswith(PREFIX + ":")


def parse_spec(text: object) -> tuple[int, int]:
    """``gsamples:N`` or ``gsamples:N:S`` -> (N, S); ValueError naming the expected form otherwise."""
    m = _SPEC.match(str(text))
    if m is None or int(m.group(1)) < 2:
        raise ValueError(f"{text!s} is not a known-answer spec: expected gsamples:N or gsamples:N:S with "
                         f"N >= 2 images and S >= 0 a seed, e.g. gsamples:128")
    return int(m.group(1)), int(m.group(2) or 0)


@torch.no_grad()
def known_answer_codes(generator, n: int, seed: int = 0) -> Tensor:
    """The set's true codes [n, L, D] (float32, CPU)."""
    from idinvert.boundaries import sample_codes

    return sample_codes(generator, n, KNOWN_ANSWER_SEED + int(seed))


def generator_samples(generator, n: int, seed: int, bundle_fingerprint: str,
                      attributes: tuple[str, ...]) -> ImageSet:
    """The known-answer ImageSet of ``generator``: N images rendered on demand from its true codes."""
    codes = known_answer_codes(generator, n, seed)
    device = device_of(generator)

    @torch.no_grad()
    def loader(idx: list[int]) -> Tensor:
        was = generator.training
        generator.eval()
        try:
            return generator.synthesis(codes[idx].to(device)).float().cpu()
        finally:
            generator.train(was)

    return ImageSet(name=f"{PREFIX}:{n}:{seed} (G's own samples, true codes known)",
                    ids=[f"gs{seed}-{i:06d}" for i in range(n)],
                    fingerprint=fingerprint_of(PREFIX, KNOWN_ANSWER_SEED, bundle_fingerprint, n, seed),
                    attributes=tuple(attributes), labels=None, label_source="none", loader=loader,
                    resolution=int(generator.resolution), true_codes=codes)
