"""The real ImageNet LPIPS / FID loading paths, exercised with random-initialised weights saved under the
exact file names torchvision and pytorch-fid look for, in a temporary TORCH_HOME. No network is touched:
torch.hub's downloader is replaced by one that fails the test."""
import math
from pathlib import Path

import pytest
import torch

from bench.metrics import (ALEXNET_FILE, FID_WEIGHTS_FILE, InceptionFeatures, LPIPSMetric,
                           MetricUnavailable, alexnet_weights_path, fid, inception_weights_path)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # so get_dir() follows TORCH_HOME

    def no_network(url, *args, **kwargs):
        raise AssertionError(f"attempted download of {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


def test_file_names_are_the_ones_the_packages_use():
    from pytorch_fid.inception import FID_WEIGHTS_URL
    from torchvision.models import AlexNet_Weights

    assert AlexNet_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1] == ALEXNET_FILE
    assert FID_WEIGHTS_URL.rsplit("/", 1)[-1] == FID_WEIGHTS_FILE


def test_weight_paths_follow_torch_home(torch_home):
    assert alexnet_weights_path() == torch_home / ALEXNET_FILE
    assert inception_weights_path() == torch_home / FID_WEIGHTS_FILE


def test_lpips_unavailable_names_the_missing_file_and_where_it_goes(torch_home):
    with pytest.raises(MetricUnavailable) as info:
        LPIPSMetric()
    assert ALEXNET_FILE in info.value.reason and str(torch_home) in info.value.reason
    assert info.value.metric == "lpips"


def test_fid_unavailable_names_the_missing_file_and_where_it_goes(torch_home):
    with pytest.raises(MetricUnavailable) as info:
        InceptionFeatures()
    assert FID_WEIGHTS_FILE in info.value.reason and str(torch_home) in info.value.reason
    with pytest.raises(MetricUnavailable):
        fid(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))


def test_lpips_loads_the_alexnet_file_and_gives_finite_distances(torch_home):
    from torchvision.models import alexnet

    state = alexnet(weights=None).state_dict()
    torch.save(state, torch_home / ALEXNET_FILE)
    metric = LPIPSMetric()
    # the trunk holds the file's weights, not a fresh random init
    assert torch.equal(metric.model.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(getattr(metric.model.net.slice5, "10").bias, state["features.10.bias"])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    y = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    d = metric(x, y)
    assert d.shape == (3,) and torch.isfinite(d).all() and (d > 0).all()
    assert torch.allclose(metric(x, x), torch.zeros(3), atol=1e-6)


def test_lpips_rejects_a_file_that_is_not_alexnet(torch_home):
    from torchvision.models import alexnet

    state = alexnet(weights=None).state_dict()
    del state["features.3.weight"]
    torch.save(state, torch_home / ALEXNET_FILE)
    with pytest.raises(ValueError, match="features.3.weight"):
        LPIPSMetric()


def test_fid_loads_the_inception_file_and_gives_finite_values(torch_home):
    from torchvision.models import inception_v3

    # the FID Inception has torchvision's parameter layout with 1008 classes and no aux head
    state = inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False).state_dict()
    torch.save(state, torch_home / FID_WEIGHTS_FILE)
    extractor = InceptionFeatures()
    assert torch.equal(extractor.model.blocks[0][0].conv.weight, state["Conv2d_1a_3x3.conv.weight"])
    assert extractor.id.startswith("pytorch-fid-") and "sha256-" in extractor.id
    g = torch.Generator().manual_seed(0)
    real = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    fake = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    feats = extractor(real)
    assert feats.shape == (4, 2048) and torch.isfinite(feats).all()
    # the same file through pytorch-fid's 64-d block keeps the 2048x2048 matrix square root (minutes on
    # a busy 2-core machine) out of the test; loading and the Fréchet path are the same code
    small = InceptionFeatures(dims=64)
    assert small.id != extractor.id
    value = fid(fake, real, extractor=small, batch_size=2)
    assert math.isfinite(value) and value >= 0
