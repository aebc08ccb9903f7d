"""The benchmark's judge: an evaluation-only network (the embedded domain's stand-in for Inception).

Two roles, one network, as Inception serves both IS and FID:
  * evaluation embedding `embed(x)` [B, embed_dim]: the feature space of `fid_domain`, `dpips`
    (`features`), precision/recall and the domain check;
  * attribute judge `forward(x)` -> logits [B, A]: edit success and preservation, and predicted labels
    wherever the harness needs them.

It is *not* the attribute classifier of the paper's pipeline (the InterFaceGAN predictor whose features
are also the methods' perceptual loss F). It differs in architecture (residual blocks with group norm and
SiLU, strided convolutions, global pooling) and seed, and it is trained on renders with augmentation
(small shifts, mild blur and noise) to predict the attributes *and* the renderer's continuous nuisance
parameters (skin, hair shade, background, shirt, head geometry, ...), so that its embedding describes the
whole image rather than five bits. No method's loss, no encoder's or GAN's training and no boundary
training may use it (tests/test_judge.py checks that).

    images [B, 3, R, R] in [-1, 1]
      stem  conv3x3(w)                          @ R
      s0    resblock(w)                         @ R      -> features[0]
      s1    conv3x3/2 (2w), resblock(2w)        @ R/2    -> features[1]
      s2    conv3x3/2 (4w), resblock(4w)        @ R/4    -> features[2]
      s3    conv3x3/2 (4w), resblock(4w)        @ R/8    -> features[3]
      [mean, max] pool -> dense -> embed [B, embed_dim] -> attribute logits [B, A], nuisances [B, P]
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from idinvert.nets.loading import pyramid_config

__all__ = ["JudgeNet"]


def _groups(channels: int) -> int:
    return 8 if channels % 8 == 0 else 1


class _ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class JudgeNet(nn.Module):
    """Evaluation embedding + attribute judge (see module docstring)."""

    def __init__(self, resolution: int = 32, num_attributes: int = 5, num_nuisances: int = 0,
                 width: int = 16, embed_dim: int = 64):
        super().__init__()
        self.config = pyramid_config(resolution, num_attributes=num_attributes,
                                     num_nuisances=num_nuisances, width=width, embed_dim=embed_dim)
        self.resolution = resolution
        self.num_attributes = num_attributes
        self.embed_dim = embed_dim
        w = width
        self.stem = nn.Conv2d(3, w, 3, padding=1)
        self.block0 = _ResBlock(w)
        self.down1, self.block1 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), _ResBlock(2 * w)
        self.down2, self.block2 = nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), _ResBlock(4 * w)
        self.down3, self.block3 = nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1), _ResBlock(4 * w)
        self.out_norm = nn.GroupNorm(_groups(4 * w), 4 * w)
        self.embed_fc = nn.Linear(8 * w, embed_dim)
        self.head = nn.Linear(embed_dim, num_attributes)
        # Nuisance regression exists only to shape the embedding during training.
        self.nuisance_head = nn.Linear(embed_dim, num_nuisances) if num_nuisances else None

    def _check(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] != self.resolution:
            raise ValueError(f"JudgeNet expects [B, 3, {self.resolution}, {self.resolution}], "
                             f"got {tuple(images.shape)}")

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images [B, 3, R, R] -> 4 maps [B, w, R, R], [B, 2w, R/2, R/2], [B, 4w, R/4, R/4],
        [B, 4w, R/8, R/8] (the `dpips` layers)."""
        self._check(images)
        x = self.block0(self.stem(images))
        feats = [x]
        for down, block in ((self.down1, self.block1), (self.down2, self.block2),
                            (self.down3, self.block3)):
            x = block(down(F.silu(x)))
            feats.append(x)
        return feats

    def _embed_from(self, last: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.out_norm(last))
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.embed_fc(pooled)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images -> [B, embed_dim]: the evaluation embedding."""
        return self._embed_from(self.features(images)[-1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, R, R] -> attribute logits [B, A] (> 0 means label 1)."""
        return self.head(F.silu(self.embed(images)))

    def embed_and_outputs(self, images: torch.Tensor):
        """-> (embed [B, E], attribute logits [B, A], nuisances [B, P] or None); one pass."""
        e = self.embed(images)
        h = F.silu(e)
        nuis = self.nuisance_head(h) if self.nuisance_head is not None else None
        return e, self.head(h), nuis
