"""encoder4editing (e4e, Tov et al. 2021): a base code w_0 plus per-layer offsets, and the latent
discriminator that keeps the codes in the distribution of the generator's mapping.

    W+ code:  w_i = avg_i + w_0 + Delta_i * [i <= num_unlocked],   Delta_0 = 0,   i = 0 .. L-1

`avg` [L, D] is the generator's average code (e4e's `start_from_latent_avg`; per layer, so a
generator with per-layer W works unchanged). Progressive training starts with `num_unlocked = 0`
(every layer gets avg + w_0, one code per image) and unlocks one more offset at a fixed interval;
the setting is a buffer, so a saved encoder records how many offsets it uses.

Architecture: the trunk is `EncoderBackbone`, the same convolutional blocks (and widths) as the
harness's other encoders, so e4e differs from them in its heads and training only. Two dense heads
with equalised learning rate (official e4e's EqualLinear) read the flattened 4 x 4 map: one gives
w_0 [D], the other the L - 1 offsets [L-1, D]. (Official e4e reads coarse / medium / fine offsets
from an IR-SE50 feature pyramid; at 32 px one 4 x 4 map is the deepest level of that pyramid and the
harness's encoders all use it.) The w_0 head's initial weights are scaled by `head_gain` (0.1) so
that an untrained encoder starts near the average code, the state e4e's `start_from_latent_avg`
aims for; the offset head starts at zero, so unlocking a layer frees its offset without changing
the output at that moment (a first 32 px smoke run, with plain dense heads initialised at random,
saw the pixel loss triple when the last layer was unlocked: the untrained rows gave offsets of norm
~60 where ||w - w_avg|| of a mapped code is ~8). Both are choices for short CPU training, not
official.

`LatentDiscriminator`: the official `LatentCodesDiscriminator` shape, an MLP of 4 linear layers
(D -> D -> D -> D -> 1) with LeakyReLU(0.2) between them, applied to single w vectors [N, D].
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from idinvert.nets.stylegan_encoder import EncoderBackbone


@torch.no_grad()
def copy_start_code(buffer: torch.Tensor, avg: torch.Tensor) -> None:
    """Copy the generator's average code avg ([D], broadcast to every layer, or [L, D]) into an
    encoder's start-code buffer [L, D]."""
    avg = avg.detach().to(buffer)
    if avg.ndim == 1:
        avg = avg.unsqueeze(0).expand(buffer.shape[0], -1)
    if tuple(avg.shape) != tuple(buffer.shape):
        raise ValueError(f"latent_avg must be [{buffer.shape[1]}] or {list(buffer.shape)}, "
                         f"got {list(avg.shape)}")
    buffer.copy_(avg)

__all__ = ["E4EEncoder", "LatentDiscriminator", "EqualLinear", "TrunkEncoder"]


class EqualLinear(nn.Module):
    """Dense layer with equalised learning rate, as the official e4e / pSp heads (StyleGAN's
    EqualLinear, lr_mul 1): weights stored ~ N(0, gain^2) and scaled by 1 / sqrt(fan_in) at run
    time, so Adam's per-weight steps move the output by O(lr) whatever the fan-in (a plain Linear
    on the 2048 trunk features moved each code coordinate by ~lr * 2048 per step).
    x [N, in] -> [N, out]."""

    def __init__(self, in_features: int, out_features: int, gain: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * gain)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1.0 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class TrunkEncoder(nn.Module):
    """What e4e and ReStyle share: an `EncoderBackbone` trunk reading `stacked_images` RGB images stacked
    on channels (ReStyle: the image and its reconstruction), dense heads on its flattened 4 x 4 map
    (`build_heads`, per encoder), and the start-code buffer `latent_avg` [L, D].

    Attributes: `resolution`, `image_channels`, `w_space_dim`, `num_layers` (L = 2 (log2 R - 1)),
    `config` (the constructor's keywords, to rebuild the encoder from a saved file).
    """
    stacked_images = 1

    def __init__(self, resolution: int, w_space_dim: int = 512, image_channels: int = 3,
                 encoder_channels_base: int = 64, encoder_channels_max: int = 1024,
                 use_wscale: bool = False, use_bn: bool = True, head_gain: float = 0.1):
        super().__init__()
        self.config = dict(resolution=resolution, w_space_dim=w_space_dim,
                           image_channels=image_channels,
                           encoder_channels_base=encoder_channels_base,
                           encoder_channels_max=encoder_channels_max, use_wscale=use_wscale,
                           use_bn=use_bn, head_gain=head_gain)
        self.backbone = EncoderBackbone(resolution, self.stacked_images * image_channels,
                                        encoder_channels_base, encoder_channels_max, use_wscale, use_bn)
        self.resolution = resolution
        self.image_channels = image_channels
        self.w_space_dim = w_space_dim
        self.num_layers = 2 * (int(math.log2(resolution)) - 1)
        self.build_heads(self.backbone.out_channels * 16, head_gain)
        self.register_buffer("latent_avg", torch.zeros(self.num_layers, w_space_dim))

    def build_heads(self, features: int, head_gain: float) -> None:
        """Create the dense heads reading the trunk's ``features`` flattened values."""
        raise NotImplementedError

    @torch.no_grad()
    def set_latent_avg(self, avg: torch.Tensor) -> None:
        """avg: [D] or [L, D], the generator's average code (see idinvert.codes.mean_code); the start
        code the encoder is trained from, saved with it."""
        copy_start_code(self.latent_avg, avg)


class E4EEncoder(TrunkEncoder):
    """images [B, 3, R, R] in [-1, 1] -> W+ codes [B, L, D] = avg + w_0 + masked offsets.

    Attributes: `resolution`, `w_space_dim`, `num_layers` (L = 2 (log2 R - 1)), `config`
    (constructor kwargs), buffers `latent_avg` [L, D] (set with `set_latent_avg`) and
    `num_unlocked` (0 .. L-1, set with `set_progressive_stage`). Batch norm in the trunk: use
    `.eval()` for inversion.
    """

    def build_heads(self, features: int, head_gain: float) -> None:
        self.w0_head = EqualLinear(features, self.w_space_dim, head_gain)
        self.delta_head = EqualLinear(features, (self.num_layers - 1) * self.w_space_dim, 0.0)
        self.register_buffer("num_unlocked", torch.tensor(self.num_layers - 1, dtype=torch.long))

    def set_progressive_stage(self, num_unlocked: int) -> None:
        """Use the offsets of layers 1 .. num_unlocked (0: one code for all layers)."""
        if not 0 <= int(num_unlocked) <= self.num_layers - 1:
            raise ValueError(f"num_unlocked must be in [0, {self.num_layers - 1}], got {num_unlocked}")
        self.num_unlocked.fill_(int(num_unlocked))

    def layer_mask(self) -> torch.Tensor:
        """[L] float: 1 where layer i's offset is used (i = 1 .. num_unlocked), else 0."""
        i = torch.arange(self.num_layers, device=self.latent_avg.device)
        return ((i >= 1) & (i <= self.num_unlocked)).to(self.latent_avg.dtype)

    # ---- forward -------------------------------------------------------------------------------
    def forward_parts(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images -> (w_0 [B, D], offsets [B, L, D] with row 0 and locked layers exactly zero)."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (
                self.image_channels, self.resolution, self.resolution):
            raise ValueError(f"e4e encoder expects images [B, {self.image_channels}, "
                             f"{self.resolution}, {self.resolution}], got {tuple(images.shape)}")
        h = self.backbone(images).flatten(1)
        w0 = self.w0_head(h)
        deltas = self.delta_head(h).view(-1, self.num_layers - 1, self.w_space_dim)
        deltas = torch.cat([deltas.new_zeros(deltas.shape[0], 1, self.w_space_dim), deltas], 1)
        return w0, deltas * self.layer_mask().view(1, -1, 1)

    def codes_from_parts(self, w0: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """(w_0 [B, D], offsets [B, L, D]) -> W+ [B, L, D] = avg + w_0 + offsets."""
        return self.latent_avg.unsqueeze(0) + w0.unsqueeze(1) + deltas

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, R, R] in [-1, 1] -> W+ [B, L, D]."""
        return self.codes_from_parts(*self.forward_parts(images))


class LatentDiscriminator(nn.Module):
    """w [N, D] -> logit [N]: 4 linear layers, LeakyReLU(0.2) after the first three (official e4e)."""

    def __init__(self, w_space_dim: int = 512, num_layers: int = 4, hidden_dim: int | None = None):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        hidden = hidden_dim or w_space_dim
        self.config = dict(w_space_dim=w_space_dim, num_layers=num_layers, hidden_dim=hidden_dim)
        self.w_space_dim = w_space_dim
        dims = [w_space_dim] + [hidden] * (num_layers - 1) + [1]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.LeakyReLU(0.2))
        self.net = nn.Sequential(*layers)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if w.ndim != 2 or w.shape[1] != self.w_space_dim:
            raise ValueError(f"latent discriminator expects w [N, {self.w_space_dim}], "
                             f"got {tuple(w.shape)}")
        return self.net(w).squeeze(1)
