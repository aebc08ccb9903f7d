import pytest
import torch

from bench.metrics import dpips


def two_layer_features(x):
    return [x, torch.nn.functional.avg_pool2d(x, 2)]


def test_identical_sets_have_zero_dpips():
    x = torch.randn(4, 3, 16, 16)
    assert torch.allclose(dpips(x, x, two_layer_features), torch.zeros(4))


def test_dpips_of_orthogonal_unit_features_is_two_per_layer():
    a = torch.zeros(1, 3, 2, 2)
    b = torch.zeros(1, 3, 2, 2)
    a[:, 0] = 5.0
    b[:, 1] = 0.1  # orthogonal directions at every position: |u - v|^2 = 2
    assert torch.allclose(dpips(a, b, lambda x: [x]), torch.tensor([2.0]))
    assert torch.allclose(dpips(a, b, lambda x: [x, x]), torch.tensor([4.0]))  # layers are summed


def test_dpips_ignores_feature_scale_and_accepts_vectors_and_single_tensors():
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(dpips(x, 3.0 * x, lambda t: t), torch.zeros(2), atol=1e-6)
    v = dpips(x, torch.randn(2, 3, 8, 8), lambda t: [t.flatten(1)])
    assert v.shape == (2,) and (v > 0).all()


def test_dpips_is_per_image_and_positive_for_different_images():
    x, y = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    d = dpips(x, y, two_layer_features)
    assert d.shape == (3,) and (d > 0).all()
    assert torch.allclose(d[1:2], dpips(x[1:2], y[1:2], two_layer_features))


def test_dpips_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        dpips(torch.zeros(1, 3, 8, 8), torch.zeros(2, 3, 8, 8), lambda t: t)
