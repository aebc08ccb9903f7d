"""How in-domain are the codes? Metrics on inverted W+ codes themselves, as pure functions over tensors.

- ``domain_regularizer_term``: the domain regulariser's own term ``mean_{L,D} (w − E(G(w)))²`` per
  image, with E the domain-guided encoder (the same reduction as the λ_dom term of
  ``idinvert.inversion.optimize_codes``, so ``λ_dom ·`` this value is that loss term). Lower = the code
  is where E, trained on G's domain, expects codes of G(w) to be.
- ``code_frechet``: Fréchet distance, layer by layer, between the inverted codes and codes sampled
  from G's mapping, averaged over layers, with its floor: the same distance for sampled codes of the
  same count, disjoint from the reference (what a method whose codes *are* samples of G's W would get
  at this n). Lower = closer to G's distribution of codes.
- ``layer_spread``: RMS deviation of a W+ code's layers from the code's own layer mean, in units of
  the per-dimension std of G's sampled codes. A W code broadcast to all layers has spread 0; a
  mapping that emits one w per image (``repeat_w``) never produces spread > 0.
- ``latent_editing_consistency`` (LEC, e4e, Tov et al. 2021): edit w by α along a direction, decode,
  re-encode with E, undo the edit, and take the distance to w (Frobenius norm over layers and
  dimensions, as e4e's ``metrics/LEC.py``; e4e averages per batch and trims 1 %/99 % outliers, here
  every image has its value and aggregation is the caller's). Lower = edits stay where E expects.
  Note that for a method other than E itself, LEC at α = 0 is already ``‖w − E(G(w))‖``: LEC
  contains the domain term (as a sum, rooted); compare both.

Shapes: codes [N, L, D]; ``synthesis``: codes [B, L, D] -> images [B, 3, H, W]; ``encoder``: images
-> codes [B, L, D] (or anything reshapeable to it). Networks are called in chunks, without gradients,
in eval mode (``idinvert.inversion.frozen``: the encoder's batch norm must not couple the images of a
chunk), and restored afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from idinvert.quality import gaussian_frechet  # the one Fréchet routine (tables, claims, codes)

__all__ = ["domain_regularizer_term", "CodeFrechet", "code_frechet", "w_scale",
           "layer_spread", "edit_step", "latent_editing_consistency"]

Synthesis = Callable[[Tensor], Tensor]
Encoder = Callable[[Tensor], Tensor]


def _check_codes(codes: Tensor, what: str = "codes") -> None:
    if not isinstance(codes, Tensor) or codes.ndim != 3:
        shape = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
        raise ValueError(f"{what} must be W+ codes [N, L, D], got {shape}")


def _module_device(fn: Any, fallback: torch.device) -> torch.device:
    params = getattr(fn, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return fallback


def _reencode(codes: Tensor, synthesis: Synthesis, encoder: Encoder) -> Tensor:
    """E(G(codes)) reshaped like codes, on codes' device and dtype."""
    from idinvert.inversion import frozen

    device = _module_device(synthesis, codes.device)
    with frozen(synthesis, encoder):
        out = encoder(synthesis(codes.to(device)))
    return out.reshape(codes.shape).to(device=codes.device, dtype=codes.dtype)


@torch.no_grad()
def domain_regularizer_term(codes: Tensor, synthesis: Synthesis, encoder: Encoder,
                            batch_size: int = 64) -> Tensor:
    """codes [N, L, D] -> [N]: ``mean_{L,D} (w − E(G(w)))²`` per image (float32, CPU)."""
    _check_codes(codes)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = [(chunk - _reencode(chunk, synthesis, encoder)).pow(2).flatten(1).mean(1).float().cpu()
           for chunk in codes.split(batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def _stats(x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.double()
    return x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1])


@dataclass(frozen=True)
class CodeFrechet:
    """Layer-wise Fréchet distance of codes to G's sampled codes, and its floor at the same n."""

    value: float            # mean over layers of FD(codes_l, reference_l)
    floor: float            # mean over layers of FD(samples_l, reference_l), samples disjoint, same n
    per_layer: tuple[float, ...]
    floor_per_layer: tuple[float, ...]
    n: int                  # codes compared (also the size of the floor's sample)
    n_reference: int
    seed: int


def code_frechet(codes: Tensor, samples: Tensor, seed: int = 0) -> CodeFrechet:
    """codes [N, L, D] (inverted), samples [M, L, D] (from G's mapping, ``idinvert.boundaries.
    sample_codes``) with M >= N + 2: a random (``seed``) N of the samples form the floor's sample,
    the other M − N are the reference both are compared to, so value and floor share every size.
    Non-finite codes (failed inversions) are an error: drop them first."""
    _check_codes(codes)
    _check_codes(samples, "samples")
    if codes.shape[1:] != samples.shape[1:]:
        raise ValueError(f"codes {tuple(codes.shape)} and samples {tuple(samples.shape)} differ in [L, D]")
    n, m = codes.shape[0], samples.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 codes for a covariance, got {n}")
    if m < n + 2:
        raise ValueError(f"need at least N + 2 = {n + 2} sampled codes (N for the floor, the rest as "
                         f"reference), got {m}")
    if not torch.isfinite(codes).all():
        raise ValueError("codes contain non-finite values (failed inversions?): drop them first")
    order = torch.randperm(m, generator=torch.Generator().manual_seed(int(seed)))
    null, reference = samples[order[:n]], samples[order[n:]]
    per_layer, floor_per_layer = [], []
    for layer in range(codes.shape[1]):
        ref = _stats(reference[:, layer])
        per_layer.append(gaussian_frechet(*_stats(codes[:, layer]), *ref))
        floor_per_layer.append(gaussian_frechet(*_stats(null[:, layer]), *ref))
    return CodeFrechet(value=sum(per_layer) / len(per_layer),
                       floor=sum(floor_per_layer) / len(floor_per_layer),
                       per_layer=tuple(per_layer), floor_per_layer=tuple(floor_per_layer),
                       n=n, n_reference=m - n, seed=int(seed))


def w_scale(samples: Tensor) -> Tensor:
    """samples [M, L, D] from G's mapping -> [L, D]: the std of each layer's dimension over samples."""
    _check_codes(samples, "samples")
    if samples.shape[0] < 2:
        raise ValueError(f"need at least 2 samples for a std, got {samples.shape[0]}")
    return samples.double().std(dim=0).to(samples.dtype)


def layer_spread(codes: Tensor, scale: Tensor) -> Tensor:
    """codes [N, L, D], scale [D] or [L, D] (``w_scale``) -> [N]:
    ``sqrt(mean_{l,d} ((w_ld − mean_l' w_l'd) / scale_ld)²)``. 0 for a broadcast (W-space) code."""
    _check_codes(codes)
    scale = torch.as_tensor(scale, dtype=codes.dtype, device=codes.device)
    if scale.shape not in (codes.shape[2:], codes.shape[1:]):
        raise ValueError(f"scale must be [D={codes.shape[2]}] or [L, D]={tuple(codes.shape[1:])}, "
                         f"got {tuple(scale.shape)}")
    if not (scale > 0).all():
        raise ValueError("scale has non-positive entries (a dimension with no spread in G's samples)")
    dev = (codes - codes.mean(dim=1, keepdim=True)) / scale
    return dev.pow(2).flatten(1).mean(1).sqrt()


def code_recovery(codes: Tensor, truth: Tensor, scale: Tensor) -> Tensor:
    """codes, truth [N, L, D], scale [L, D] (``w_scale``) -> [N, L]: ``||codes_l - truth_l|| /
    sqrt(sum_d scale_ld^2)``, the distance to the true code in units of G's spread on that layer (an
    independent sample of G lies about sqrt(2) away)."""
    _check_codes(codes)
    if truth.shape != codes.shape or scale.shape != codes.shape[1:]:
        raise ValueError(f"codes {tuple(codes.shape)}, truth {tuple(truth.shape)} and scale "
                         f"{tuple(scale.shape)} must be [N, L, D], [N, L, D] and [L, D]")
    return (codes - truth).norm(dim=2) / scale.pow(2).sum(1).sqrt()


def edit_step(boundary: Any, num_layers: int, w_dim: int) -> Tensor:
    """The displacement [L, D] of an edit of strength 1 along ``boundary`` (its unit normal on its
    layers, 0 elsewhere), as ``idinvert.editing.edit_codes`` applies it."""
    from idinvert.editing import edit_codes

    zero = torch.zeros(1, num_layers, w_dim)
    return edit_codes(zero, boundary, [1.0])[0, 0]


@torch.no_grad()
def latent_editing_consistency(codes: Tensor, synthesis: Synthesis, encoder: Encoder, step: Tensor,
                               alpha: float = 3.0, batch_size: int = 64) -> Tensor:
    """LEC per image: codes [N, L, D], step [L, D] or [D] (``edit_step``) -> [N] (float32, CPU):
    ``‖w − (E(G(w + α·step)) − α·step)‖_F``. e4e's own example uses α = 3 on an InterFaceGAN
    direction."""
    _check_codes(codes)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    step = torch.as_tensor(step, dtype=codes.dtype, device=codes.device)
    if step.shape not in (codes.shape[2:], codes.shape[1:]):
        raise ValueError(f"step must be [D] or [L, D]={tuple(codes.shape[1:])}, got {tuple(step.shape)}")
    move = alpha * step
    out = []
    for chunk in codes.split(batch_size):
        back = _reencode(chunk + move, synthesis, encoder) - move
        out.append((chunk - back).flatten(1).norm(dim=1).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)
