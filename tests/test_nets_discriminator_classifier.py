"""Discriminator and attribute classifier: shapes and feature interfaces."""

import pytest
import torch

from idinvert.nets.classifier import AttributeClassifier
from idinvert.nets.discriminator import Discriminator, minibatch_stddev


def test_discriminator_gives_one_logit_per_image():
    D = Discriminator(resolution=32, fmaps_base=128, fmaps_max=16)
    assert D(torch.randn(8, 3, 32, 32)).shape == (8,)
    assert D(torch.randn(6, 3, 32, 32)).shape == (6,)   # batch not divisible by the group size


def test_discriminator_rejects_wrong_resolution():
    D = Discriminator(resolution=32, fmaps_base=128, fmaps_max=16)
    with pytest.raises(ValueError, match="32"):
        D(torch.randn(2, 3, 16, 16))


def test_minibatch_stddev_appends_group_statistic():
    x = torch.randn(8, 4, 2, 2)
    y = minibatch_stddev(x, group_size=4)
    assert y.shape == (8, 5, 2, 2)
    assert torch.equal(y[:, :4], x)
    same = minibatch_stddev(torch.ones(4, 3, 2, 2), group_size=4)
    assert torch.allclose(same[:, 3], torch.full((4, 2, 2), 1e-4), atol=1e-5)  # sqrt(eps)


def test_classifier_outputs_features_and_embedding():
    C = AttributeClassifier(resolution=32, num_attributes=5, width=4, embed_dim=64)
    x = torch.randn(3, 3, 32, 32)
    assert C(x).shape == (3, 5)
    feats = C.features(x)
    assert [tuple(f.shape) for f in feats] == [(3, 4, 32, 32), (3, 8, 16, 16), (3, 16, 8, 8),
                                               (3, 64, 4, 4)]
    e = C.embed(x)
    assert e.shape == (3, 64)
    assert torch.allclose(C.head(e), C(x))


def test_classifier_rejects_wrong_input():
    C = AttributeClassifier(resolution=32, width=4)
    with pytest.raises(ValueError):
        C(torch.randn(2, 1, 32, 32))
