"""Identity similarity of faces: the cosine of ArcFace IR-SE50 embeddings of an image and its
reconstruction, as pSp, e4e and ReStyle compute their identity loss (`IDLoss.extract_feats`: the aligned
face at 256 px, rows 35:223 and columns 32:220, average-pooled to 112 px; embeddings L2-normalised).

The network is `idinvert.nets.irse.IRSE50` with `model_ir_se50.pth` from the weights folder
(`idinvert.bundles.identity`); without the file the metric is unavailable with the reason (where the file
goes), never computed with anything else. Meaningful only for aligned face images (FFHQ / CelebA-HQ
alignment); on other images it is still a number, of nothing in particular. Note: ReStyle's paper
tables report identity with CurricularFace on MTCNN-aligned crops (its `calc_id_loss_parallel.py`), a
different network, so its numbers are not this metric's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from .errors import MetricUnavailable

__all__ = ["build_identity", "identity_similarity", "id_similarity_metric"]


def build_identity(weights_dir: Optional[Path], device: torch.device) -> Any:
    """The IR-SE50 network on `device`; MetricUnavailable naming the missing or wrong file."""
    from idinvert.bundles.identity import identity_problem, identity_weights_path, load_identity_network

    path = identity_weights_path(weights_dir)
    problem = identity_problem(path)
    if problem:
        raise MetricUnavailable("id_similarity", problem)
    return load_identity_network(path).to(device)


@torch.no_grad()
def identity_similarity(network: Any, images: Tensor, recons: Tensor, batch_size: int = 32) -> Tensor:
    """[B]: cosine of network.embed(images[i]) and network.embed(recons[i]) (both [B, 3, R, R] in [-1, 1])."""
    if images.shape != recons.shape:
        raise ValueError(f"images {tuple(images.shape)} and recons {tuple(recons.shape)} differ in shape")
    device = next(network.parameters()).device
    out = []
    for x, y in zip(images.split(batch_size), recons.split(batch_size)):
        a, b = network.embed(x.to(device).float()), network.embed(y.to(device).float())
        out.append((a * b).sum(1).cpu())
    return torch.cat(out) if out else images.new_zeros(0)


def id_similarity_metric(ctx) -> Tensor:
    return identity_similarity(ctx.resources.identity(), ctx.images, ctx.recons)
