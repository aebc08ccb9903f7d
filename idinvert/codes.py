"""Facts about a generator's latent codes that encoders and tuning methods share.

Everything here works on W+ codes [B, L, D] and makes no assumption that the L layers share one w:
the embedded generator of zoo v2 broadcasts one w (`repeat_w=True`), the official idinvert FFHQ
generator and zoo v3 emit one w per layer (`repeat_w=False`), and both are handled the same way.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["mean_code", "expand_code", "mapping_codes"]


@torch.no_grad()
def mean_code(generator: nn.Module, n: int = 4096, seed: int = 0) -> torch.Tensor:
    """The average W+ code [L, D] of `generator` (no truncation), on its device.

    A generator that broadcasts one w (`repeat_w=True`) and tracks `truncation.w_avg` [D] gives that
    tracked average on every layer (exactly what mean-w initialisation uses elsewhere in the
    harness). Otherwise the mean of `n` mapped codes of z drawn from `seed` is returned, layer by
    layer (a generator with per-layer W has a different average on each layer).
    """
    trunc = generator.truncation
    if getattr(generator, "repeat_w", False) and trunc.w_avg.ndim == 1:
        return trunc.w_avg.detach().clone().unsqueeze(0).expand(generator.num_layers, -1).clone()
    codes = mapping_codes(generator, n, torch.Generator().manual_seed(seed))
    return codes.mean(0)


def mapping_codes(generator: nn.Module, n: int, rng: torch.Generator) -> torch.Tensor:
    """n W+ codes [n, L, D] of z ~ N(0, I) drawn from the CPU generator `rng`, through G's own
    mapping (no truncation), in G's device and dtype: the distribution a latent discriminator
    calls real."""
    ref = generator.truncation.w_avg
    z = torch.randn(n, generator.z_space_dim, generator=rng).to(ref)
    with torch.no_grad():
        return generator.z_to_wp(z, truncate=False)


def expand_code(code: torch.Tensor, batch: int, num_layers: int, w_dim: int) -> torch.Tensor:
    """A code given as [D], [L, D], [1, L, D] or [B, L, D] as a [batch, L, D] tensor (a view)."""
    if code.ndim == 1:
        code = code.view(1, 1, -1)
    elif code.ndim == 2:
        code = code.unsqueeze(0)
    if code.ndim != 3 or code.shape[-1] != w_dim or code.shape[1] not in (1, num_layers) \
            or code.shape[0] not in (1, batch):
        raise ValueError(f"expected a code [D={w_dim}], [L={num_layers}, D] or [B={batch}, L, D], "
                         f"got {tuple(code.shape)}")
    return code.expand(batch, num_layers, w_dim)
