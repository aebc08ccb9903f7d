"""Perceptual feature extractors F for the inversion and encoder losses: `F(images) -> [B, C, h, w]`.

- `VGG16Perceptual`: the network behind the official `vgg16.pth` (genforce/idinvert_pytorch
  `models/perceptual_model.py`): the 13 convolutions of VGG16 stored as `layer{i}.weight/bias` at the
  indices of the usual conv/relu/pool sequence (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28).
  The weights are Keras/Caffe-style, so the input is preprocessed exactly as the official model does:
  [-1, 1] -> [0, 255], RGB -> BGR, minus the per-channel BGR mean (103.939, 116.779, 123.68), no
  division by a standard deviation. The output is the ReLU of conv4_3 (the official
  `output_layer_idx=23` runs layers 0..22): 512 channels at 1/8 of the input resolution. The file
  also holds block 5, which is never run but must load.
- `DomainPerceptual`: for the embedded synthetic-faces domain no ImageNet network is available, so
  F is an intermediate feature map of the domain's attribute classifier (see the class docstring).

The loss that uses F (official code, pixel and feature terms both *means*):
    mean((x - y)^2) + lambda_vgg * mean((F(x) - F(y))^2)
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from idinvert.nets.loading import run_chain

__all__ = ["VGG16Perceptual", "DomainPerceptual", "PAPER_LAMBDA_VGG", "VGG16_BGR_MEAN"]

# lambda_vgg of the paper and of both official codes, for VGG16 conv4_3 features with the
# preprocessing below; a different F needs its own weight (see idinvert.training.encoders).
PAPER_LAMBDA_VGG = 5e-5
VGG16_BGR_MEAN = (103.939, 116.779, 123.68)

# 'M' is a 2x2 max-pool; numbers are 3x3 conv widths, each followed by a ReLU.
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                 512, 512, 512, "M", 512, 512, 512, "M")
_CONV4_3_RELU_END = 23   # run layer0 .. layer22


class VGG16Perceptual(nn.Module):
    """VGG16 conv4_3 features with the official idinvert preprocessing.

    forward(images [B, 3, H, W] RGB in [min_val, max_val]) -> relu(conv4_3) [B, 512, H/8, W/8].
    `output_layer_idx` (default 23, as the official model) is how many of the layers to run.
    """

    def __init__(self, output_layer_idx: int = _CONV4_3_RELU_END, min_val: float = -1.0,
                 max_val: float = 1.0):
        super().__init__()
        self.output_layer_idx = output_layer_idx
        self.min_val = min_val
        self.max_val = max_val
        self.name = "vgg16-conv4_3"
        # Not part of the state dict: the official model keeps the mean as a plain attribute.
        self.register_buffer("mean", torch.tensor(VGG16_BGR_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        idx, in_ch = 0, 3
        for item in _VGG16_LAYOUT:
            if item == "M":
                self.add_module(f"layer{idx}", nn.MaxPool2d(kernel_size=2, stride=2))
                idx += 1
            else:
                self.add_module(f"layer{idx}", nn.Conv2d(in_ch, item, 3, 1, 1))
                self.add_module(f"layer{idx + 1}", nn.ReLU())
                idx, in_ch = idx + 2, item
        self.num_layers = idx

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """RGB [min_val, max_val] -> Caffe input: BGR, [0, 255] minus the BGR mean."""
        x = (images - self.min_val) * (255.0 / (self.max_val - self.min_val))
        x = x.flip(1)   # RGB -> BGR
        return x - self.mean

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"VGG16Perceptual expects RGB images [B, 3, H, W], got {tuple(images.shape)}")
        return run_chain(self, "layer", self.output_layer_idx, self.preprocess(images))


class DomainPerceptual(nn.Module):
    """F for the embedded domain: one intermediate feature map of the (frozen) attribute classifier.

    forward(images [B, 3, R, R] in [-1, 1]) -> classifier.features(images)[layer]  [B, C, h, w].

    Why the classifier: it is the only network here trained on the domain with a semantic objective
    (the five attributes), which is the role ImageNet-VGG plays for real photos. Which map: conv4_3
    is deep (10 of 13 convs) yet still a fine spatial grid (32 x 32 positions at 256 px), so the loss
    compares semantic features *per location*. At 32 px the map at the same relative resolution
    (1/8) is 4 x 4, the classifier's last map, which is nearly a global descriptor; the deepest map
    with at least 8 x 8 positions (`default_layer`; for AttributeClassifier `features[2]`,
    4 x width channels at 8 x 8 after 6 of its 7 convs) keeps both properties. Pass `layer` to override.

    The classifier's parameters are not trained through F (they are frozen by whoever owns the
    bundle); gradients flow to the input images.
    """

    def __init__(self, classifier: nn.Module, layer: int | None = None):
        super().__init__()
        self.classifier = classifier
        self.layer = default_layer(classifier) if layer is None else int(layer)
        self.name = f"domain-classifier-features[{self.layer}]"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.classifier.features(images)
        return feats[self.layer]


def _feature_shapes(classifier: nn.Module) -> tuple[int, Sequence[torch.Size]]:
    res = int(getattr(classifier, "resolution", 32))
    param = next(classifier.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = classifier.training
    classifier.eval()
    with torch.no_grad():
        feats = classifier.features(torch.zeros(1, 3, res, res, device=device))
    classifier.train(was_training)
    return res, [f.shape for f in feats]


def default_layer(classifier: nn.Module, min_side: int = 8) -> int:
    """Index of the deepest feature map of `classifier.features` with side >= min_side."""
    res, shapes = _feature_shapes(classifier)
    target = min(min_side, res)
    candidates = [i for i, s in enumerate(shapes) if len(s) == 4 and s[-1] >= target]
    if not candidates:
        raise ValueError(f"classifier has no spatial feature map of side >= {target}: "
                         f"{[tuple(s) for s in shapes]}")
    return candidates[-1]
