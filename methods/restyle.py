"""``restyle``: the ReStyle iterative residual encoder (Alaluf et al. 2021).

From the average code and its image, each step feeds [x, current reconstruction] (6 channels) to the
bundle's ``restyle_encoder`` and adds the predicted residual: w_{t+1} = w_t + E([x, G(w_t)]).
Training and its sources: ``idinvert/training/restyle.py``; the network and the loop:
``idinvert/nets/restyle_encoder.py``. A bundle without the part skips the method with a message
(``python -m bench zoo train --target restyle-encoder`` builds it). With the ``restyle-psp-ffhq`` /
``restyle-e4e-ffhq`` release bundles the part is the official release's encoder
(``idinvert/nets/psp_encoders.py``), started from the release's ``latent_avg`` and its average image.

Each refinement step is a milestone of quality against time: ``invert`` keeps the code after every
step with the seconds since its start (anytime curves: step k = k refinement steps, not Adam steps);
``invert_steps(images)`` returns those codes alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from idinvert.nets.restyle_encoder import DEFAULT_INFERENCE_STEPS, TRAINING_STEPS, restyle_invert
from idinvert.inversion import Milestone
from idinvert.utils import device_of
from methods.base import InversionMethod, InversionResult
from methods.optimisation import check
from methods.registry import register


@register
@dataclass
class ReStyle(InversionMethod):
    """w_0 = avg; w_{t+1} = w_t + E_restyle([x, G(w_t)]) for ``steps`` steps.

    Defaults, and why:
    - steps = 5: the number of refinement steps the encoder was trained with (official
      n_iters_per_batch = 5); official inference uses at most that many, and the ReStyle paper reports
      most of the gain within the first few. 1 .. 10 are accepted (``bench ablate steps --methods
      restyle``); beyond 5 the encoder sees reconstructions further along than it was trained on.
    """

    name = "restyle"
    summary = "ReStyle: iterative residual encoder on [image, current reconstruction]"
    needs = ("generator", "restyle_encoder")

    steps: int = DEFAULT_INFERENCE_STEPS

    def __post_init__(self) -> None:
        check(isinstance(self.steps, int) and 1 <= self.steps <= 2 * TRAINING_STEPS,
              f"restyle.steps must be an integer in 1 .. {2 * TRAINING_STEPS} (trained with "
              f"{TRAINING_STEPS}), got {self.steps!r}")

    def prepare(self, bundle: Any) -> None:
        super().prepare(bundle)
        self.device = device_of(bundle.restyle_encoder)

    @torch.no_grad()
    def invert_steps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The codes [B, L, D] after each refinement step 1 .. steps."""
        return restyle_invert(self.bundle.restyle_encoder, images.to(self.device), self.bundle.generator,
                              steps=self.steps)

    @torch.no_grad()
    def invert(self, images: torch.Tensor) -> InversionResult:
        origin = time.perf_counter()
        milestones: list[Milestone] = []

        def keep(step: int, w: torch.Tensor) -> None:
            if w.device.type == "cuda":
                torch.cuda.synchronize(w.device)
            milestones.append(Milestone(step=step, seconds=time.perf_counter() - origin, codes=w.detach().clone(),
                                        failed=_non_finite(w)))

        codes = restyle_invert(self.bundle.restyle_encoder, images.to(self.device), self.bundle.generator,
                               steps=self.steps, on_step=keep)[-1]
        bad = _non_finite(codes)
        reasons = ["encoder produced a non-finite code" if f else None for f in bad.tolist()]
        return InversionResult(codes=codes, failed=bad, reasons=reasons, milestones=milestones)


def _non_finite(codes: torch.Tensor) -> torch.Tensor:
    return (~torch.isfinite(codes).flatten(1).all(1)).cpu()
