"""The domain's attribute classifier; its features double as the domain perceptual/Fréchet space.

Plays the role of the paper's off-the-shelf face attribute predictor (used to label inverted codes and
to train InterFaceGAN boundaries) on the synthetic-faces domain, where exact labels exist.

    images [B, 3, 32, 32] in [-1, 1]
      stage0: 2 x conv3x3(width)          @ 32 px  -> features[0]
      stage1: pool, 2 x conv3x3(2 width)  @ 16 px  -> features[1]
      stage2: pool, 2 x conv3x3(4 width)  @  8 px  -> features[2]
      stage3: pool, conv3x3(embed_dim)    @  4 px  -> features[3]
      flatten -> dense -> lrelu -> embed [B, embed_dim] -> dense -> logits [B, A]

`features` returns the raw maps (after activation); a perceptual distance normalises them per channel
itself (LPIPS "baseline" style). `embed` is kept small (64) because Fréchet distances in it are
estimated from a few hundred images.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from idinvert.nets.loading import pyramid_config

__all__ = ["AttributeClassifier"]


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class AttributeClassifier(nn.Module):
    """Multi-label binary classifier: logits [B, num_attributes] (sigmoid > 0.5 means label 1)."""

    def __init__(self, resolution: int = 32, num_attributes: int = 5, width: int = 16,
                 embed_dim: int = 64):
        super().__init__()
        self.config = pyramid_config(resolution, num_attributes=num_attributes, width=width,
                                     embed_dim=embed_dim)
        self.resolution = resolution
        self.num_attributes = num_attributes
        self.embed_dim = embed_dim
        w = width
        self.stage0 = nn.ModuleList([_conv(3, w), _conv(w, w)])
        self.stage1 = nn.ModuleList([_conv(w, 2 * w), _conv(2 * w, 2 * w)])
        self.stage2 = nn.ModuleList([_conv(2 * w, 4 * w), _conv(4 * w, 4 * w)])
        self.stage3 = nn.ModuleList([_conv(4 * w, embed_dim)])
        self.final_res = resolution // 8
        self.embed_fc = nn.Linear(embed_dim * self.final_res ** 2, embed_dim)
        self.head = nn.Linear(embed_dim, num_attributes)

    def _check(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] != self.resolution:
            raise ValueError(f"AttributeClassifier expects [B, 3, {self.resolution}, "
                             f"{self.resolution}], got {tuple(images.shape)}")

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images [B, 3, R, R] -> 4 maps: [B, w, R, R], [B, 2w, R/2, R/2], [B, 4w, R/4, R/4],
        [B, embed_dim, R/8, R/8]."""
        self._check(images)
        feats = []
        x = images
        for i, stage in enumerate((self.stage0, self.stage1, self.stage2, self.stage3)):
            if i > 0:
                x = F.avg_pool2d(x, 2)
            for conv in stage:
                x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return feats

    def _embed_from(self, last: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.embed_fc(last.flatten(1)), 0.2)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images -> [B, embed_dim]: the penultimate vector (domain Fréchet-distance features)."""
        return self._embed_from(self.features(images)[-1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, R, R] -> logits [B, num_attributes]."""
        return self.head(self.embed(images))
