"""StyleGAN2 generator in plain PyTorch, with the state-dict layout of rosinality's `Generator`.

Checkpoints in rosinality's `.pt` format (stylegan2-pytorch; also what its `convert_weight.py` makes
out of NVIDIA's pickles) are a dict with `g_ema` (the generator's state dict) and `latent_avg` (the
mean w). This module computes the same function as that generator without its CUDA extensions:
the up-sampling FIR filter ("upfirdn2d") and the fused bias + leaky ReLU are ordinary torch ops, so it
runs on a CPU, nothing is compiled, and nothing heavy happens at import.

Key layout (size R = 2**k, n_mlp mapping layers, C(r) channels at resolution r):

    style.{1..n_mlp}.weight [D, D], .bias [D]          (style.0 is the parameter-free pixel norm)
    input.input [1, C(4), 4, 4]
    conv1.conv.weight [1, C, C, 3, 3], conv1.conv.modulation.{weight [C, D], bias [C]},
    conv1.noise.weight [1], conv1.activate.bias [C]
    to_rgb1.conv.weight [1, 3, C, 1, 1], to_rgb1.conv.modulation.*, to_rgb1.bias [1, 3, 1, 1]
    convs.{2i}   (up-sampling)  ... as conv1, plus convs.{2i}.conv.blur.kernel [4, 4]
    convs.{2i+1}                ... as conv1
    to_rgbs.{i}.conv.*, to_rgbs.{i}.bias, to_rgbs.{i}.upsample.kernel [4, 4]
    noises.noise_{j} [1, 1, r, r]                       j < 2 * (k - 2) + 1

W+ has `num_layers = 2 * k - 2` rows (rosinality's `n_latent`): row 0 styles `conv1`, row 1 `to_rgb1`;
block i (resolution 2**(i+3)) uses rows 2i+1 and 2i+2 for its two convolutions and row 2i+3 for its
toRGB. Synthesis uses the stored noise buffers (rosinality's `randomize_noise=False`), so a code
always gives the same image; `set_noise_mode("random")` draws fresh noise instead.

The image is the raw toRGB sum, as in StyleGAN2 (approximately, not strictly, within [-1, 1]); it is
not clamped, so that inversion losses keep their gradients. Clamp before saving or measuring.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from idinvert.nets.stylegan_generator import LatentSampling

__all__ = [
    "StyleGAN2Generator",
    "StyleGAN2Truncation",
    "upfirdn2d",
    "infer_rosinality_config",
    "load_rosinality_checkpoint",
]

_SQRT2 = math.sqrt(2.0)


def _channels(res: int, channel_multiplier: int) -> int:
    """Feature maps at a resolution, as in rosinality's `Generator.channels`."""
    if res <= 32:
        return 512
    return {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}[res] * channel_multiplier


def _make_kernel(k: Sequence[float]) -> torch.Tensor:
    """Separable FIR kernel (outer product of `k` with itself), normalised to sum 1."""
    k = torch.tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Up-sample by zero insertion, pad, FIR-filter, down-sample; the same on both axes.

    x: [B, C, H, W]; kernel: [kh, kw] (true convolution, i.e. flipped for `conv2d`); pad: (before,
    after) applied to both spatial axes after up-sampling (negative values crop).
    Output: [B, C, (H*up + pad0 + pad1 - kh) // down + 1, ...].
    """
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    if up > 1:
        # Put each input pixel at the top-left of an up x up cell of zeros.
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0): x.shape[2] - max(-p1, 0), max(-p0, 0): x.shape[3] - max(-p1, 0)]
    weight = torch.flip(kernel, (0, 1)).to(x.dtype).view(1, 1, kh, kw).repeat(c, 1, 1, 1)
    x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def _bias_leaky_relu(x: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2's fused op: add per-channel bias, leaky ReLU (0.2), multiply by sqrt(2)."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, 0.2) * _SQRT2


# --------------------------------------------------------------------------------------------------
# Building blocks. Attribute names are dictated by rosinality's checkpoint layout.
# --------------------------------------------------------------------------------------------------

class PixelNorm(nn.Module):
    """Scales each vector (dim 1) to unit root-mean-square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; optionally followed by bias + leaky ReLU * sqrt 2."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return _bias_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class Blur(nn.Module):
    """FIR filter with padding (the low-pass after a transposed convolution)."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", _make_kernel(kernel) * upsample_factor ** 2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR up-sampling of the skip (RGB) branch."""

    def __init__(self, kernel: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", _make_kernel(kernel) * factor ** 2)
        p = len(kernel) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Weight-modulated (and optionally demodulated) convolution, optionally 2x up-sampling.

    Computed as "modulate the input, convolve with the shared weight, scale the output by the
    demodulation coefficients", which equals convolving each sample with its own modulated weight
    and needs no per-sample weight tensors.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1),
                             upsample_factor=factor)
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x: [B, Cin, H, W]; w: [B, D] -> [B, Cout, H', W'] (H' = 2H when up-sampling)."""
        batch = x.shape[0]
        weight = self.weight[0] * self.scale                                 # [Cout, Cin, k, k]
        style = self.modulation(w)                                           # [B, Cin]
        x = x * style.view(batch, -1, 1, 1)
        if self.upsample:
            x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            x = self.blur(x)
        else:
            x = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # ||W * s||^2 per (sample, output channel) = sum_i s_i^2 * sum_{k} W[o, i, k]^2
            demod = torch.rsqrt(style.pow(2) @ weight.pow(2).sum(dim=(2, 3)).t() + 1e-8)  # [B, Cout]
            x = x * demod.view(batch, -1, 1, 1)
        return x


class NoiseInjection(nn.Module):
    """Adds `weight * noise` (one scalar weight; noise [1 or B, 1, H, W])."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    """Bias + leaky ReLU * sqrt 2 (rosinality's `FusedLeakyReLU`, here unfused)."""

    def __init__(self, channel: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _bias_leaky_relu(x, self.bias)


class StyledConv(nn.Module):
    """Modulated 3x3 conv -> noise -> bias + leaky ReLU."""

    def __init__(self, in_channel: int, out_channel: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, 3, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation) + bias, plus the up-sampled previous RGB."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor,
                skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    """The learned 4x4 input tensor."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyleGAN2Truncation(nn.Module):
    """Holds the mean w (`w_avg`, from the checkpoint's `latent_avg`) and applies the truncation
    trick to W+ codes: rows < `truncation_layers` move towards `w_avg` by `truncation_psi`.

    `w_avg` is a non-persistent buffer, so the generator's state dict stays exactly rosinality's
    `g_ema` layout (rosinality keeps the mean w outside the module, as `latent_avg`).
    """

    def __init__(self, num_layers: int, w_dim: int, truncation_psi: Optional[float] = None,
                 truncation_layers: Optional[int] = None):
        super().__init__()
        self.num_layers = num_layers
        self.w_dim = w_dim
        self.truncation_psi = truncation_psi
        self.truncation_layers = num_layers if truncation_layers is None else truncation_layers
        self.register_buffer("w_avg", torch.zeros(w_dim), persistent=False)
        # Where `w_avg` came from ("checkpoint latent_avg", "estimated ...", "unset").
        self.w_avg_source = "unset"

    def to_wp(self, w: torch.Tensor) -> torch.Tensor:
        """w [B, D] -> W+ [B, L, D] by repetition; W+ input is checked and passed through."""
        if w.ndim == 2 and w.shape[1] == self.w_dim:
            return w.unsqueeze(1).expand(-1, self.num_layers, -1)
        if w.ndim == 3 and w.shape[1:] == (self.num_layers, self.w_dim):
            return w
        raise ValueError(f"expected w [B, {self.w_dim}] or W+ [B, {self.num_layers}, {self.w_dim}], "
                         f"got {tuple(w.shape)}")

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        wp = self.to_wp(w)
        if self.truncation_psi is None or self.truncation_psi == 1.0:
            return wp
        n = self.truncation_layers
        avg = self.w_avg.view(1, 1, -1).to(wp.dtype)
        # Rows from n on are passed through untouched (exactly, not via a factor of 1).
        return torch.cat([avg + (wp[:, :n] - avg) * self.truncation_psi, wp[:, n:]], dim=1)


# --------------------------------------------------------------------------------------------------

class StyleGAN2Generator(LatentSampling, nn.Module):
    """StyleGAN2 generator (config-f architecture), state dict = rosinality's `Generator`.

    Attributes: `resolution`, `z_space_dim`, `w_space_dim`, `num_layers` (W+ rows, 2 log2(R) - 2),
    `channel_multiplier`, `n_mlp`; `truncation.w_avg` [D]. `mapping(z [B, D]) -> w [B, D]`;
    `synthesis(wp [B, L, D]) -> images [B, 3, R, R]` (raw, roughly in [-1, 1]); `forward(z)`.
    Truncation is off by default (`truncation_psi=None`), as in rosinality's sampling code.
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), lr_mlp: float = 0.01,
                 truncation_psi: Optional[float] = None, truncation_layers: Optional[int] = None):
        super().__init__()
        log_size = int(math.log2(size)) if size > 0 else 0
        if size < 4 or 2 ** log_size != size or size > 1024:
            raise ValueError(f"StyleGAN2 size must be a power of two in [4, 1024], got {size}")
        self.config = dict(size=size, style_dim=style_dim, n_mlp=n_mlp,
                           channel_multiplier=channel_multiplier, blur_kernel=tuple(blur_kernel),
                           lr_mlp=lr_mlp, truncation_psi=truncation_psi,
                           truncation_layers=truncation_layers)
        self.resolution = size
        self.z_space_dim = style_dim
        self.w_space_dim = style_dim
        self.channel_multiplier = channel_multiplier
        self.n_mlp = n_mlp
        self.log_size = log_size
        self.num_layers = 2 * log_size - 2            # W+ rows (rosinality's n_latent)
        self.num_noises = 2 * (log_size - 2) + 1      # rosinality's num_layers
        self.randomize_noise = False

        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)])

        c4 = _channels(4, channel_multiplier)
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(c4, style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channel = c4
        for i in range(3, log_size + 1):
            out_channel = _channels(2 ** i, channel_multiplier)
            self.convs.append(StyledConv(in_channel, out_channel, style_dim, upsample=True,
                                         blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_channel, out_channel, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, blur_kernel=blur_kernel))
            in_channel = out_channel
        self.noises = nn.Module()
        for j in range(self.num_noises):
            res = 2 ** ((j + 5) // 2)
            self.noises.register_buffer(f"noise_{j}", torch.randn(1, 1, res, res))
        self.truncation = StyleGAN2Truncation(self.num_layers, style_dim, truncation_psi,
                                              truncation_layers)

    # -- interface shared with StyleGANGenerator ----------------------------------------------------

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, D] -> w [B, D] (pixel norm, n_mlp equalised-lr layers)."""
        if z.ndim != 2 or z.shape[1] != self.z_space_dim:
            raise ValueError(f"mapping expects z of shape [B, {self.z_space_dim}], got {tuple(z.shape)}")
        return self.style(z)

    def noise_tensors(self, batch: int) -> list[torch.Tensor]:
        """The per-layer noise: the stored buffers, or fresh draws in "random" noise mode."""
        stored = [getattr(self.noises, f"noise_{j}") for j in range(self.num_noises)]
        if not self.randomize_noise:
            return stored
        return [torch.randn(batch, 1, *n.shape[2:], device=n.device, dtype=n.dtype) for n in stored]

    def synthesis(self, wp: torch.Tensor, noise: Optional[Sequence[torch.Tensor]] = None
                  ) -> torch.Tensor:
        """W+ codes [B, L, D] -> images [B, 3, R, R]; `noise` overrides the per-layer noise."""
        if wp.ndim != 3 or wp.shape[1:] != (self.num_layers, self.w_space_dim):
            raise ValueError(f"synthesis expects W+ of shape [B, {self.num_layers}, "
                             f"{self.w_space_dim}], got {tuple(wp.shape)}")
        noise = list(noise) if noise is not None else self.noise_tensors(wp.shape[0])
        if len(noise) != self.num_noises:
            raise ValueError(f"expected {self.num_noises} noise tensors, got {len(noise)}")
        x = self.input(wp.shape[0])
        x = self.conv1(x, wp[:, 0], noise[0])
        skip = self.to_rgb1(x, wp[:, 1])
        for b, to_rgb in enumerate(self.to_rgbs):
            i = 2 * b + 1
            x = self.convs[2 * b](x, wp[:, i], noise[i])
            x = self.convs[2 * b + 1](x, wp[:, i + 1], noise[i + 1])
            skip = to_rgb(x, wp[:, i + 2], skip)
        return skip

    def set_noise_mode(self, mode: str) -> None:
        """'const': the stored noise buffers (default); 'random': fresh noise on every call."""
        if mode not in ("const", "random"):
            raise ValueError(f"noise mode must be 'const' or 'random', got {mode!r}")
        self.randomize_noise = mode == "random"

    @torch.no_grad()
    def estimate_w_avg(self, n: int = 4096, seed: int = 0) -> torch.Tensor:
        """Mean of `mapping(z)` over n draws (seeded); used when a checkpoint has no latent_avg."""
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([self.mapping(zb) for zb in self.sample_z(n, gen).split(1024)]).mean(0)

    def set_w_avg(self, w_avg: torch.Tensor, source: str) -> None:
        """Fill `truncation.w_avg` [D] (accepts [1, D]) and record where it came from."""
        w_avg = torch.as_tensor(w_avg).reshape(-1)
        if w_avg.numel() != self.w_space_dim:
            raise ValueError(f"w_avg from {source} has {w_avg.numel()} values, "
                             f"the generator's w has {self.w_space_dim}")
        self.truncation.w_avg.copy_(w_avg.to(self.truncation.w_avg))
        self.truncation.w_avg_source = source


# --------------------------------------------------------------------------------------------------
# Loading rosinality checkpoints
# --------------------------------------------------------------------------------------------------

def infer_rosinality_config(state_dict: dict, source_name: str = "state dict") -> dict:
    """Constructor kwargs (size, style_dim, n_mlp, channel_multiplier) from a `g_ema` state dict.

    size: from the number of toRGB blocks; style_dim: from the first mapping layer; n_mlp: the
    number of `style.{i}.weight` entries; channel_multiplier: from the channels at 64 px and above
    (below 64 px every layer has 512 channels and the multiplier is irrelevant, so 2 is used).
    """
    def need(key):
        if key not in state_dict:
            raise ValueError(f"{source_name} is not a rosinality StyleGAN2 generator: "
                             f"no '{key}' entry")
        return state_dict[key]

    need("input.input")
    style_dim = need("style.1.weight").shape[1]
    n_mlp = sum(1 for k in state_dict if k.startswith("style.") and k.endswith(".weight"))
    num_blocks = sum(1 for k in state_dict
                     if k.startswith("to_rgbs.") and k.endswith(".conv.weight"))
    size = 2 ** (num_blocks + 2)
    channel_multiplier = 2
    if size >= 64:
        c_last = need(f"to_rgbs.{num_blocks - 1}.conv.weight").shape[2]
        base = _channels(size, 1)
        if c_last % base:
            raise ValueError(f"{source_name}: {c_last} channels at {size} px is not a multiple of "
                             f"{base}; not a rosinality StyleGAN2 generator of a known layout")
        channel_multiplier = c_last // base
    return dict(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=channel_multiplier)


def load_rosinality_checkpoint(path, device="cpu", estimate_missing_w_avg: bool = True
                               ) -> StyleGAN2Generator:
    """A StyleGAN2Generator from a rosinality `.pt` checkpoint (`g_ema`, `latent_avg`).

    Loads with `torch.load(weights_only=True)` (NVIDIA `.pkl` files are refused, see
    `idinvert.checkpoints`), infers the architecture from the tensor shapes and loads strictly:
    any missing, unexpected or wrongly shaped key is an error naming it. `truncation.w_avg` is the
    file's `latent_avg`; training checkpoints (`g`, `d`, `g_ema`, ..., no `latent_avg`) get a mean w
    estimated from 4096 seeded samples, recorded in `truncation.w_avg_source`.
    """
    from idinvert.checkpoints import CheckpointError, safe_torch_load
    from idinvert.nets.loading import load_state_dict_strict

    path = Path(path)
    ckpt = safe_torch_load(path, what="StyleGAN2 checkpoint (rosinality .pt)")
    if not isinstance(ckpt, dict) or "g_ema" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: expected a rosinality StyleGAN2 checkpoint, a dict with "
                              f"'g_ema' (and 'latent_avg'); found {keys}")
    sd = ckpt["g_ema"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: 'g_ema' is a {type(sd).__name__}, not a state dict")
    cfg = infer_rosinality_config(sd, f"{path} ['g_ema']")
    gen = StyleGAN2Generator(**cfg)
    load_state_dict_strict(gen, sd, f"{path} ['g_ema']")
    if ckpt.get("latent_avg") is not None:
        gen.set_w_avg(torch.as_tensor(ckpt["latent_avg"]), f"{path} latent_avg")
    elif estimate_missing_w_avg:
        gen.set_w_avg(gen.estimate_w_avg(4096, seed=0),
                      "estimated: mean of mapping(z) over 4096 samples, seed 0 "
                      "(the checkpoint has no latent_avg)")
    else:
        raise CheckpointError(f"{path}: no 'latent_avg' entry (mean w)")
    return gen.eval().to(device)
