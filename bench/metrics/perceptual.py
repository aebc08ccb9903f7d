"""Perceptual distances: LPIPS (ImageNet AlexNet, only with its real weights) and the domain ``dpips``.

``lpips`` needs two files: the linear calibration layers, which ship inside the ``lpips`` pip package
(``lpips/weights/v0.1/alex.pth``), and torchvision's ImageNet AlexNet, which torchvision downloads into
``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``. No machine here can download, so the trunk is
loaded by us from that file (strictly, ``weights_only``) and never constructed "pretrained" by the
packages, which would try the network. Without the file the metric raises :class:`MetricUnavailable`.

``dpips`` is always computable given any feature-list callable (the domain classifier's ``features``);
it is its own metric and is never reported as LPIPS.
"""
from __future__ import annotations

import importlib.util
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from .errors import MetricUnavailable

# Basename of torchvision's AlexNet_Weights.IMAGENET1K_V1 url (a test pins it against torchvision).
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
LPIPS_VERSION = "0.1"


def hub_checkpoints_dir() -> Path:
    """Where torch.hub / torchvision / pytorch-fid look for downloaded weights (read at call time)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def alexnet_weights_path() -> Path:
    """``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`` (or torch.hub.set_dir's checkpoints)."""
    return hub_checkpoints_dir() / ALEXNET_FILE


def lpips_linear_weights_path() -> Path | None:
    """The linear-layer weights bundled in the installed ``lpips`` package; None if not installed."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / f"v{LPIPS_VERSION}" / "alex.pth"


def lpips_unavailable_reason(weights_path: str | os.PathLike | None = None) -> str | None:
    """None when LPIPS can be built from local files; otherwise why not, naming the file and place."""
    linear = lpips_linear_weights_path()
    if linear is None:
        return "the 'lpips' package is not installed (pip install lpips)"
    if not linear.is_file():
        return f"the lpips package's linear layers are missing: {linear}"
    trunk = Path(weights_path) if weights_path is not None else alexnet_weights_path()
    if not trunk.is_file():
        return (f"torchvision's ImageNet AlexNet weights are missing: put {ALEXNET_FILE} "
                f"(from {ALEXNET_URL}) at {trunk} (set TORCH_HOME to use another directory)")
    return None


def _load_state_dict(path: Path) -> dict[str, Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


class LPIPSMetric:
    """LPIPS v0.1 with the AlexNet trunk, per image: ``metric(images, recons) -> [B]``.

    images, recons: [B, 3, H, W] in [-1, 1] (the lpips package's own convention).
    Raises :class:`MetricUnavailable` when a weight file is missing. ``allow_download=True`` is the
    explicit opt-in for a machine online: torch.hub then fetches the AlexNet file into its cache first.
    """

    name = "lpips"

    def __init__(self, device: str | torch.device = "cpu",
                 weights_path: str | os.PathLike | None = None, allow_download: bool = False):
        trunk_path = Path(weights_path) if weights_path is not None else alexnet_weights_path()
        if allow_download and not trunk_path.is_file() and weights_path is None:
            torch.hub.load_state_dict_from_url(ALEXNET_URL, check_hash=True, weights_only=True)
        reason = lpips_unavailable_reason(trunk_path)
        if reason is not None:
            raise MetricUnavailable(self.name, reason)
        self.weights_path = trunk_path
        self.device = torch.device(device)
        self.model = self._build(trunk_path).to(self.device)

    @staticmethod
    def _build(trunk_path: Path) -> torch.nn.Module:
        import lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated" notice
            # pnet_rand / pretrained=False: build both parts randomly, touching neither file nor network
            model = lpips.LPIPS(net="alex", version=LPIPS_VERSION, pretrained=False, pnet_rand=True,
                                verbose=False)
        linear = _load_state_dict(lpips_linear_weights_path())
        # lin0..lin4 are also registered as `lins.<i>`, the same parameters; the file names only lin<i>
        lin_keys = {k for k in model.state_dict() if re.match(r"lin\d+\.", k)}
        missing = sorted(lin_keys - set(linear))
        unexpected = sorted(set(linear) - lin_keys)
        if missing or unexpected:
            raise ValueError(f"lpips linear weights do not match: missing {missing}, unexpected {unexpected}")
        model.load_state_dict(linear, strict=False)

        # lpips keeps torchvision's AlexNet `features` modules in slices, with their original indices:
        # net.slice2.3.weight is torchvision's features.3.weight.
        trunk = _load_state_dict(trunk_path)
        wanted = {}
        for name, tensor in model.net.state_dict().items():
            _, index, param = name.split(".", 2)
            wanted[f"features.{index}.{param}"] = (name, tensor.shape)
        missing = sorted(k for k in wanted if k not in trunk)
        unexpected = sorted(k for k in trunk if k not in wanted and not k.startswith("classifier."))
        if missing or unexpected:
            raise ValueError(f"{trunk_path} is not torchvision's AlexNet state dict: missing {missing}, "
                             f"unexpected {unexpected}")
        remapped = {}
        for key, (name, shape) in wanted.items():
            if tuple(trunk[key].shape) != tuple(shape):
                raise ValueError(f"{trunk_path}: {key} has shape {tuple(trunk[key].shape)}, "
                                 f"expected {tuple(shape)}")
            remapped[name] = trunk[key]
        model.net.load_state_dict(remapped, strict=True)
        model.eval().requires_grad_(False)
        return model

    @torch.no_grad()
    def __call__(self, images: Tensor, recons: Tensor) -> Tensor:
        if images.shape != recons.shape:
            raise ValueError(f"shape mismatch {tuple(images.shape)} vs {tuple(recons.shape)}")
        out = self.model(images.to(self.device, torch.float32), recons.to(self.device, torch.float32))
        return out.flatten().cpu()


FeatureFn = Callable[[Tensor], "Tensor | Sequence[Tensor]"]


def _unit_channels(feature: Tensor, eps: float) -> Tensor:
    # the lpips package's normalize_tensor: divide by the L2 norm over channels at each position
    return feature / (feature.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def dpips(images: Tensor, recons: Tensor, features: FeatureFn, eps: float = 1e-10) -> Tensor:
    """Domain perceptual distance per image: the LPIPS "baseline" formula on ``features(x)``.

    images, recons: [B, 3, H, W] in [-1, 1]; ``features``: a callable returning a list of feature maps
    [B, C, h, w] (or [B, C] vectors, or one tensor), e.g. ``classifier.features``  ->  [B].
    For each layer: unit-normalise along channels, squared difference, sum over channels, mean over
    positions; then the layers are summed with equal weights (as lpips with ``lpips=False`` does), so each
    layer contributes a value in [0, 4]. Gradients flow; wrap in ``torch.no_grad()`` for evaluation.
    """
    if images.shape != recons.shape:
        raise ValueError(f"shape mismatch {tuple(images.shape)} vs {tuple(recons.shape)}")
    feats_a, feats_b = features(images), features(recons)
    if isinstance(feats_a, Tensor):
        feats_a, feats_b = [feats_a], [feats_b]
    if len(feats_a) == 0 or len(feats_a) != len(feats_b):
        raise ValueError("features() must return the same non-empty list of maps for both inputs")
    total = images.new_zeros(images.shape[0], dtype=torch.float32)
    for a, b in zip(feats_a, feats_b):
        if a.dim() == 2:
            a, b = a[:, :, None, None], b[:, :, None, None]
        diff = (_unit_channels(a.float(), eps) - _unit_channels(b.float(), eps)).pow(2)
        total = total + diff.sum(dim=1).mean(dim=(1, 2))
    return total
