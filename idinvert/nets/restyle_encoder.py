"""ReStyle (Alaluf et al. 2021): an encoder that refines a code step by step from its own
reconstruction.

    w^0 = avg,  y^0 = G(avg)
    w^{t+1} = w^t + E([x, y^t]),   y^{t+1} = G(w^{t+1})         (E sees 6 channels: image, recon)

`ReStyleEncoder` predicts the residual Delta [B, L, D] in W+ (one code per layer; no assumption that
layers share one w). `restyle_invert` runs the refinement and returns the code after every step:
each step is a milestone for quality-against-time curves. The trunk is `EncoderBackbone` with 6
input channels (the same blocks and widths as the harness's other encoders), with one equalised-lr dense head
on the 4 x 4 map (as official e4e / pSp heads), initialised at `head_gain` (0.1) times the usual scale so that an untrained encoder
makes small steps (a choice for short CPU training, not official).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn

from idinvert.codes import expand_code
from idinvert.nets.e4e_encoder import EqualLinear, TrunkEncoder

__all__ = ["ReStyleEncoder", "restyle_invert", "DEFAULT_INFERENCE_STEPS", "TRAINING_STEPS"]

TRAINING_STEPS = 5             # official n_iters_per_batch
DEFAULT_INFERENCE_STEPS = 5    # official inference: a few steps (<= 5)


class ReStyleEncoder(TrunkEncoder):
    """([x, y] [B, 6, R, R] in [-1, 1]) -> residual Delta [B, L, D].

    Call as `encoder(images, reconstructions)` (both [B, 3, R, R]) or `encoder(pair)` with the
    6-channel concatenation. Attributes: `resolution`, `w_space_dim`, `num_layers`, `config`.
    """
    stacked_images = 2   # the image and its current reconstruction

    def build_heads(self, features: int, head_gain: float) -> None:
        self.head = EqualLinear(features, self.num_layers * self.w_space_dim, head_gain)

    def forward(self, images: torch.Tensor, reconstructions: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        x = images if reconstructions is None else torch.cat([images, reconstructions], 1)
        if x.ndim != 4 or tuple(x.shape[1:]) != (2 * self.image_channels, self.resolution,
                                                 self.resolution):
            raise ValueError(f"ReStyle encoder expects [image, reconstruction] "
                             f"[B, {2 * self.image_channels}, {self.resolution}, {self.resolution}] "
                             f"(or the two halves), got {tuple(x.shape)}")
        return self.head(self.backbone(x).flatten(1)).view(-1, self.num_layers, self.w_space_dim)


def restyle_invert(encoder: ReStyleEncoder, images: torch.Tensor, generator: nn.Module,
                   w_avg: Optional[torch.Tensor] = None, steps: int = DEFAULT_INFERENCE_STEPS,
                   return_images: bool = False, on_step: Optional[Callable[[int, torch.Tensor], None]] = None):
    """Refine codes for `images` [B, 3, R, R] for `steps` steps from the average code.

    w_avg: the start code, [D], [L, D] or [B, L, D]; None: the encoder's own `latent_avg`.
    Returns the list of `steps` codes [B, L, D] (after step 1, 2, ...); with `return_images`, also
    the list of their reconstructions (the last one is what a next step would see). Runs under the
    caller's grad mode and the modules' current train/eval modes (use `.eval()` and no_grad for
    inversion; training calls it with gradients). ``on_step(k, w)``: called after step k (1-based) with
    its code, e.g. to time each step (anytime evaluation).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    B = images.shape[0]
    L, D = encoder.num_layers, encoder.w_space_dim
    if w_avg is None:
        w_avg = encoder.latent_avg
    w = expand_code(w_avg.to(images), B, L, D)
    y = generator.synthesis(w[:1]).expand(B, -1, -1, -1) if w_avg.ndim < 3 else generator.synthesis(w)
    codes, recons = [], []
    for k in range(steps):
        w = w + encoder(images, y)
        if on_step is not None:
            on_step(k + 1, w)
        codes.append(w)
        if k + 1 < steps or return_images:  # the last reconstruction is only needed when returned
            y = generator.synthesis(w)
            recons.append(y)
    return (codes, recons) if return_images else codes
