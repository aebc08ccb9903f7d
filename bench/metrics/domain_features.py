"""The feature space of ``fid_domain``: the judge's embedding, reduced by a fixed PCA.

A Fréchet distance estimates a K x K covariance from N images; with the judge's 64-d embedding and
the default ~128 test images that estimate is poor (N/K = 2). So the embedding is projected onto its
top-K principal directions, fitted once on a fixed set of real training images (never on the images
being evaluated), which keeps most of the variance and lets N/K stay around 8. The projection is part
of the metric's definition and is recorded in every stored row (``dims``, ``features``).
"""

from __future__ import annotations

import hashlib
from typing import Callable

import torch
from torch import Tensor

DEFAULT_DIMS = 16
DEFAULT_FIT_IMAGES = 1024


class DomainFeatures:
    """``features(images [B, 3, H, W] in [-1, 1]) -> [B, dims]``: PCA-projected ``embed(images)``."""

    def __init__(self, embed: Callable[[Tensor], Tensor], fit_images: Tensor, dims: int = DEFAULT_DIMS,
                 batch_size: int = 256, label: str = "judge.embed"):
        self.embed = embed
        self.batch_size = batch_size
        feats = self._embed_all(fit_images)
        if dims >= feats.shape[1]:
            dims = feats.shape[1]
        self.mean = feats.mean(0)
        # principal directions of the fit set; sign fixed so the projection is deterministic
        _, s, vh = torch.linalg.svd(feats - self.mean, full_matrices=False)
        comps = vh[:dims]
        signs = torch.sign(comps[torch.arange(dims), comps.abs().argmax(1)])
        self.components = comps * signs[:, None]  # [dims, K]
        var = s.pow(2)
        self.explained_variance = float(var[:dims].sum() / var.sum())
        self.dims = dims
        self.description = (f"{label} projected on its top {dims} principal components "
                            f"({self.explained_variance:.1%} of the variance), fitted on "
                            f"{fit_images.shape[0]} real training images")
        digest = hashlib.sha256(self.components.numpy().tobytes() + self.mean.numpy().tobytes()).hexdigest()
        self.id = f"domain-pca{dims}-{digest[:12]}"

    @torch.no_grad()
    def _embed_all(self, images: Tensor) -> Tensor:
        return torch.cat([self.embed(images[i:i + self.batch_size]).float().cpu()
                          for i in range(0, images.shape[0], self.batch_size)])

    def __call__(self, images: Tensor) -> Tensor:
        return (self._embed_all(images) - self.mean) @ self.components.T
