"""StyleGAN (v1, AdaIN) generator with the state-dict layout of the official idinvert checkpoints.

The official PyTorch release of In-Domain GAN Inversion (genforce/idinvert_pytorch) ships StyleGAN
generators as plain state dicts (e.g. `styleganinv_ffhq256_generator.pth`). This module re-implements
that network so those files load with `strict=True`: every parameter and buffer has the official name
and shape, and the forward pass computes the same function (equalised-learning-rate weight scaling,
[1, 2, 1] blur after upsampling, transposed-convolution upsampling from 128 px up when
`fused_scale="auto"`, per-layer noise buffers, truncation towards a tracked `w_avg`).

Key layout (resolution R, L = 2 * (log2(R) - 1) synthesis layers):

    mapping.dense{i}.fc.weight, mapping.dense{i}.wscale.bias        i < num_mapping_layers
    truncation.w_avg [D], truncation.truncation [1, L, 1]
    synthesis.lod []
    synthesis.layer0.const [1, C, 4, 4]
    synthesis.layer{k}.conv.weight (or .weight, [3, 3, Cin, Cout] when fused), .blur.kernel
    synthesis.layer{k}.epilogue.{apply_noise.noise, apply_noise.weight, bias, style_mod.dense.*}
    synthesis.output{b}.conv.weight, synthesis.output{b}.bias

The official idinvert FFHQ-256 generator is `StyleGANGenerator(256, repeat_w=False, final_tanh=True)`:
its mapping network emits the whole W+ code (L * D values) rather than one w that is broadcast.
The embedded models use `repeat_w=True` (ordinary StyleGAN W space) and small channel counts.

Training support that the official inference-only code lacks: `noise_mode` ("const" uses the stored
noise buffers, as the official code does by default; "random" draws fresh noise, as StyleGAN does while
training) and initialisation suited to equalised learning rate (raw weights ~ N(0, 1 / lr_mul^2)).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from idinvert.nets.loading import run_chain

__all__ = ["StyleGANGenerator", "official_idinvert_ffhq256_config"]

_INIT_RES = 4
_RESOLUTIONS = (8, 16, 32, 64, 128, 256, 512, 1024)
# With fused_scale="auto", the official network switches to transposed-convolution upsampling here.
_AUTO_FUSED_SCALE_MIN_RES = 128


def official_idinvert_ffhq256_config() -> dict:
    """Constructor kwargs reproducing `styleganinv_ffhq256_generator.pth` (official model settings)."""
    return dict(resolution=256, z_space_dim=512, w_space_dim=512, num_mapping_layers=8,
                repeat_w=False, final_tanh=True, fused_scale="auto", truncation_psi=0.7,
                truncation_layers=8, fmaps_base=16 << 10, fmaps_max=512)


# --------------------------------------------------------------------------------------------------
# Building blocks. Attribute names are dictated by the official checkpoint layout.
# --------------------------------------------------------------------------------------------------

class PixelNorm(nn.Module):
    """Normalises each feature vector to unit root-mean-square (dim 1)."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


def _instance_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample, per-channel spatial standardisation (eps inside the sqrt, as StyleGAN v1)."""
    x = x - x.mean(dim=(2, 3), keepdim=True)
    return x * torch.rsqrt(x.pow(2).mean(dim=(2, 3), keepdim=True) + eps)


class WScale(nn.Module):
    """Equalised-lr scale for the preceding bias-free layer, plus the (lr-multiplied) bias."""

    def __init__(self, fan_in: int, out_channels: int, gain: float, lr_mul: float):
        super().__init__()
        self.scale = gain / math.sqrt(fan_in) * lr_mul
        self.lr_mul = lr_mul
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.scale + (self.bias * self.lr_mul).view(shape)


class DenseBlock(nn.Module):
    """Fully connected layer with equalised lr: `act(fc(x) * scale + bias * lr_mul)`."""

    def __init__(self, in_dim: int, out_dim: int, gain: float = math.sqrt(2.0),
                 lr_mul: float = 0.01, activation: str = "lrelu"):
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim, bias=False)
        self.wscale = WScale(in_dim, out_dim, gain, lr_mul)
        self.activation = activation
        nn.init.normal_(self.fc.weight, 0.0, 1.0 / lr_mul)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.wscale(self.fc(x.flatten(1)))
        return F.leaky_relu(x, 0.2) if self.activation == "lrelu" else x


class MappingModule(nn.Module):
    """z [B, Z] -> pixel norm -> num_layers dense layers (lr multiplier 0.01) -> [B, out_dim]."""

    def __init__(self, z_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        self.z_dim = z_dim
        self.num_layers = num_layers
        self.norm = PixelNorm()
        for i in range(num_layers):
            self.add_module(f"dense{i}", DenseBlock(z_dim if i == 0 else hidden_dim,
                                                    out_dim if i == num_layers - 1 else hidden_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"mapping expects z of shape [B, {self.z_dim}], got {tuple(z.shape)}")
        return run_chain(self, "dense", self.num_layers, self.norm(z))


class TruncationModule(nn.Module):
    """Turns w [B, D] (or the flat [B, L*D] when repeat_w=False) into W+ [B, L, D], optionally
    pulled towards `w_avg` on the first `truncation_layers` layers by `truncation_psi`."""

    def __init__(self, num_layers: int, w_dim: int, repeat_w: bool,
                 truncation_psi: Optional[float], truncation_layers: Optional[int]):
        super().__init__()
        self.num_layers = num_layers
        self.w_dim = w_dim
        self.repeat_w = repeat_w
        self.use_truncation = truncation_psi is not None and truncation_layers is not None
        psi = float(truncation_psi) if self.use_truncation else 1.0
        n_trunc = int(truncation_layers) if self.use_truncation else 0
        self.register_buffer("w_avg", torch.zeros(w_dim))
        coefs = torch.ones(1, num_layers, 1)
        coefs[:, :n_trunc] = psi
        self.register_buffer("truncation", coefs)

    def to_wp(self, w: torch.Tensor) -> torch.Tensor:
        """Broadcast (repeat_w) or reshape a mapping output to [B, L, D] without truncation."""
        if w.ndim == 3:
            wp = w
        elif self.repeat_w:
            if w.shape[1] != self.w_dim:
                raise ValueError(f"expected w of shape [B, {self.w_dim}], got {tuple(w.shape)}")
            wp = w.unsqueeze(1).expand(-1, self.num_layers, -1)
        else:
            if w.shape[1] != self.w_dim * self.num_layers:
                raise ValueError(f"expected w of shape [B, {self.w_dim * self.num_layers}], "
                                 f"got {tuple(w.shape)}")
            wp = w.reshape(-1, self.num_layers, self.w_dim)
        if wp.shape[1:] != (self.num_layers, self.w_dim):
            raise ValueError(f"expected W+ of shape [B, {self.num_layers}, {self.w_dim}], "
                             f"got {tuple(wp.shape)}")
        return wp

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        wp = self.to_wp(w)
        if self.use_truncation:
            avg = self.w_avg.view(1, 1, -1)
            wp = avg + (wp - avg) * self.truncation
        return wp


class BlurLayer(nn.Module):
    """Depthwise 3x3 blur with the normalised [1, 2, 1] x [1, 2, 1] kernel (stored as a buffer)."""

    def __init__(self, channels: int):
        super().__init__()
        k1 = torch.tensor([1.0, 2.0, 1.0])
        k2 = torch.outer(k1, k1)
        k2 = k2 / k2.sum()
        self.register_buffer("kernel", k2.view(1, 1, 3, 3).repeat(channels, 1, 1, 1))
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, padding=1, groups=self.channels)


class NoiseApplyingLayer(nn.Module):
    """Adds per-channel-weighted single-channel noise: stored buffer ("const") or fresh ("random")."""

    def __init__(self, resolution: int, channels: int, randomize_noise: bool = False):
        super().__init__()
        self.res = resolution
        self.randomize_noise = randomize_noise
        self.register_buffer("noise", torch.randn(1, 1, resolution, resolution))
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.randomize_noise:
            noise = torch.randn(x.shape[0], 1, self.res, self.res, device=x.device, dtype=x.dtype)
        else:
            noise = self.noise
        return x + noise * self.weight.view(1, -1, 1, 1)


class StyleModulationLayer(nn.Module):
    """AdaIN affine part: x * (1 + scale(w)) + shift(w), style from a linear equalised-lr dense."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.channels = channels
        self.w_dim = w_dim
        self.dense = DenseBlock(w_dim, channels * 2, gain=1.0, lr_mul=1.0, activation="linear")

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if w.ndim != 2 or w.shape[1] != self.w_dim:
            raise ValueError(f"style expects w of shape [B, {self.w_dim}], got {tuple(w.shape)}")
        style = self.dense(w).view(-1, 2, self.channels, 1, 1)
        return x * (style[:, 0] + 1) + style[:, 1]


class EpilogueBlock(nn.Module):
    """noise -> bias -> leaky ReLU -> instance norm -> style modulation (StyleGAN v1 order)."""

    def __init__(self, resolution: int, channels: int, w_dim: int, randomize_noise: bool):
        super().__init__()
        self.apply_noise = NoiseApplyingLayer(resolution, channels, randomize_noise)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.style_mod = StyleModulationLayer(channels, w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self.apply_noise(x)
        x = F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2)
        return self.style_mod(_instance_norm(x), w)


class FirstConvBlock(nn.Module):
    """Learned constant input (initialised to ones) followed by an epilogue."""

    def __init__(self, resolution: int, channels: int, w_dim: int, randomize_noise: bool):
        super().__init__()
        self.const = nn.Parameter(torch.ones(1, channels, resolution, resolution))
        self.epilogue = EpilogueBlock(resolution, channels, w_dim, randomize_noise)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.epilogue(self.const.expand(w.shape[0], -1, -1, -1), w)


class UpConvBlock(nn.Module):
    """2x upsampling 3x3 conv, blur, epilogue. Unfused: nearest upsample then conv (`conv.weight`
    [Cout, Cin, 3, 3]). Fused: one stride-2 transposed conv whose 4x4 kernel is the 3x3 kernel
    box-filtered over 2x2 (`weight` [3, 3, Cin, Cout], the TensorFlow layout the checkpoints use)."""

    def __init__(self, resolution: int, in_channels: int, out_channels: int, w_dim: int,
                 randomize_noise: bool, fused_scale: bool):
        super().__init__()
        self.fused_scale = fused_scale
        if fused_scale:
            self.weight = nn.Parameter(torch.randn(3, 3, in_channels, out_channels))
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
            nn.init.normal_(self.conv.weight)
        self.scale = math.sqrt(2.0) / math.sqrt(in_channels * 9)
        self.blur = BlurLayer(out_channels)
        self.epilogue = EpilogueBlock(resolution, out_channels, w_dim, randomize_noise)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.fused_scale:
            k = F.pad(self.weight * self.scale, (0, 0, 0, 0, 1, 1, 1, 1))
            k = k[1:, 1:] + k[:-1, 1:] + k[1:, :-1] + k[:-1, :-1]     # [4, 4, Cin, Cout]
            x = F.conv_transpose2d(x, k.permute(2, 3, 0, 1), stride=2, padding=1)
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self.conv(x) * self.scale
        return self.epilogue(self.blur(x), w)


class ConvBlock(nn.Module):
    """3x3 conv (equalised lr) followed by an epilogue."""

    def __init__(self, resolution: int, in_channels: int, out_channels: int, w_dim: int,
                 randomize_noise: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        nn.init.normal_(self.conv.weight)
        self.scale = math.sqrt(2.0) / math.sqrt(in_channels * 9)
        self.epilogue = EpilogueBlock(resolution, out_channels, w_dim, randomize_noise)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.epilogue(self.conv(x) * self.scale, w)


class LastConvBlock(nn.Module):
    """toRGB: 1x1 conv with gain 1 equalised lr, plus bias."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        nn.init.normal_(self.conv.weight)
        self.scale = 1.0 / math.sqrt(in_channels)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale + self.bias.view(1, -1, 1, 1)


class SynthesisModule(nn.Module):
    """W+ [B, L, D] -> image [B, C, R, R]; layer 2b and 2b+1 work at resolution 4 * 2**b."""

    def __init__(self, resolution: int, w_dim: int, image_channels: int, final_tanh: bool,
                 fused_scale, randomize_noise: bool, fmaps_base: int, fmaps_max: int):
        super().__init__()
        self.resolution = resolution
        self.w_dim = w_dim
        self.fmaps_base = fmaps_base
        self.fmaps_max = fmaps_max
        self.final_tanh = final_tanh
        self.num_blocks = int(math.log2(resolution)) - int(math.log2(_INIT_RES)) + 1
        self.num_layers = 2 * self.num_blocks
        # Level of detail from progressive training; kept because the official checkpoints store it.
        self.lod = nn.Parameter(torch.zeros(()), requires_grad=False)
        for b in range(self.num_blocks):
            res = _INIT_RES * 2 ** b
            if b == 0:
                first = FirstConvBlock(res, self.get_nf(res), w_dim, randomize_noise)
            else:
                fused = (res >= _AUTO_FUSED_SCALE_MIN_RES) if fused_scale == "auto" else bool(fused_scale)
                first = UpConvBlock(res, self.get_nf(res // 2), self.get_nf(res), w_dim,
                                    randomize_noise, fused)
            self.add_module(f"layer{2 * b}", first)
            self.add_module(f"layer{2 * b + 1}", ConvBlock(res, self.get_nf(res), self.get_nf(res),
                                                           w_dim, randomize_noise))
            self.add_module(f"output{b}", LastConvBlock(self.get_nf(res), image_channels))

    def get_nf(self, res: int) -> int:
        """Feature maps at a resolution: min(fmaps_base // res, fmaps_max)."""
        return min(self.fmaps_base // res, self.fmaps_max)

    def forward(self, wp: torch.Tensor) -> torch.Tensor:
        if wp.ndim != 3 or wp.shape[1:] != (self.num_layers, self.w_dim):
            raise ValueError(f"synthesis expects W+ of shape [B, {self.num_layers}, {self.w_dim}], "
                             f"got {tuple(wp.shape)}")
        # Blocks finer than the level of detail are skipped and the image is upsampled instead
        # (a non-integer lod behaves like its floor here, as in the official inference code).
        lod = float(self.lod.detach())
        active = [b for b in range(self.num_blocks) if b + lod <= self.num_blocks - 1] or [0]
        x = None
        for b in active:
            if b == 0:
                x = self.layer0(wp[:, 0])
            else:
                x = getattr(self, f"layer{2 * b}")(x, wp[:, 2 * b])
            x = getattr(self, f"layer{2 * b + 1}")(x, wp[:, 2 * b + 1])
        image = getattr(self, f"output{active[-1]}")(x)
        for _ in range(self.num_blocks - len(active)):
            image = F.interpolate(image, scale_factor=2, mode="nearest")
        return torch.tanh(image) if self.final_tanh else image


# --------------------------------------------------------------------------------------------------

class LatentSampling:
    """z -> W+ helpers shared by our generator classes (needs ``mapping``, ``truncation`` with ``w_avg``
    and ``to_wp``, ``synthesis`` and ``z_space_dim``)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, Z] -> images [B, C, R, R] (mapping, truncation if configured, synthesis)."""
        return self.synthesis(self.truncation(self.mapping(z)))

    def z_to_wp(self, z: torch.Tensor, truncate: bool = True) -> torch.Tensor:
        """z [B, Z] -> W+ codes [B, L, D], with or without the configured truncation."""
        w = self.mapping(z)
        return self.truncation(w) if truncate else self.truncation.to_wp(w)

    def sample_z(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n latent codes z ~ N(0, I) [n, Z] drawn from a CPU ``generator``, on the module's device."""
        dev = self.truncation.w_avg.device
        return torch.randn(n, self.z_space_dim, generator=generator, device="cpu").to(dev)

    @torch.no_grad()
    def sample_wp(self, n: int, generator: Optional[torch.Generator] = None,
                  truncate: bool = True, batch_size: int = 1024) -> torch.Tensor:
        """n W+ codes [n, L, D] of random z drawn from ``generator`` (CPU generator)."""
        z = self.sample_z(n, generator)
        return torch.cat([self.z_to_wp(zb, truncate) for zb in z.split(batch_size)])


class StyleGANGenerator(LatentSampling, nn.Module):
    """StyleGAN v1 generator: `mapping` z -> w, `truncation` w -> W+, `synthesis` W+ -> image.

    Attributes: `resolution`, `z_space_dim`, `w_space_dim`, `num_layers` (W+ layers, 2 per
    resolution from 4 px), `repeat_w`. Images are RGB in [-1, 1] (exactly so with final_tanh).
    """

    def __init__(self, resolution: int, z_space_dim: int = 512, w_space_dim: int = 512,
                 num_mapping_layers: int = 8, repeat_w: bool = True, image_channels: int = 3,
                 final_tanh: bool = False, fused_scale="auto", truncation_psi: Optional[float] = 0.7,
                 truncation_layers: Optional[int] = 8, randomize_noise: bool = False,
                 fmaps_base: int = 16 << 10, fmaps_max: int = 512):
        super().__init__()
        if resolution not in _RESOLUTIONS:
            raise ValueError(f"resolution {resolution} not in {_RESOLUTIONS}")
        if fused_scale not in (True, False, "auto"):
            raise ValueError(f"fused_scale must be True, False or 'auto', got {fused_scale!r}")
        self.config = dict(resolution=resolution, z_space_dim=z_space_dim, w_space_dim=w_space_dim,
                           num_mapping_layers=num_mapping_layers, repeat_w=repeat_w,
                           image_channels=image_channels, final_tanh=final_tanh,
                           fused_scale=fused_scale, truncation_psi=truncation_psi,
                           truncation_layers=truncation_layers, randomize_noise=randomize_noise,
                           fmaps_base=fmaps_base, fmaps_max=fmaps_max)
        self.resolution = resolution
        self.z_space_dim = z_space_dim
        self.w_space_dim = w_space_dim
        self.repeat_w = repeat_w
        self.image_channels = image_channels
        self.num_layers = 2 * (int(math.log2(resolution)) - 1)
        mapping_out = w_space_dim * (1 if repeat_w else self.num_layers)
        # The official network sizes the mapping MLP's hidden layers by fmaps_max.
        self.mapping = MappingModule(z_space_dim, fmaps_max, mapping_out, num_mapping_layers)
        self.truncation = TruncationModule(self.num_layers, w_space_dim, repeat_w,
                                           truncation_psi, truncation_layers)
        self.synthesis = SynthesisModule(resolution, w_space_dim, image_channels, final_tanh,
                                         fused_scale, randomize_noise, fmaps_base, fmaps_max)

    # Keys the official loader takes from the constructed network rather than from the file
    # (they encode the truncation setting, not learned state); a file may have them or not.
    SETTING_KEYS = ("truncation.truncation",)

    def set_noise_mode(self, mode: str) -> None:
        """'const': use the stored noise buffers (inference default); 'random': fresh noise."""
        if mode not in ("const", "random"):
            raise ValueError(f"noise mode must be 'const' or 'random', got {mode!r}")
        for m in self.modules():
            if isinstance(m, NoiseApplyingLayer):
                m.randomize_noise = mode == "random"

    def load_official_state_dict(self, state_dict: dict, source_name: str = "state dict") -> None:
        """Strictly load an official-layout state dict; `SETTING_KEYS` come from this module."""
        from idinvert.nets.loading import load_state_dict_strict
        sd = dict(state_dict)
        own = self.state_dict()
        for k in self.SETTING_KEYS:
            sd[k] = own[k]
        load_state_dict_strict(self, sd, source_name)
