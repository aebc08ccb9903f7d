import pytest
import torch
import torch.nn.functional as F

from bench.metrics import swd
from bench.metrics.swd import laplacian_pyramid, pyr_up, pyramid_resolutions


def smooth_images(n, seed, size=32):
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 3, size // 4, size // 4, generator=g)
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).tanh()


def test_levels_go_down_to_16_px():
    assert pyramid_resolutions(256) == [256, 128, 64, 32, 16]
    assert pyramid_resolutions(32) == [32, 16]
    with pytest.raises(ValueError):
        pyramid_resolutions(8)


def test_laplacian_pyramid_reconstructs_the_image():
    x = torch.randn(2, 3, 32, 32)
    levels = laplacian_pyramid(x, 3)
    assert [lv.shape[-1] for lv in levels] == [32, 16, 8]
    recon = levels[-1]
    for band in levels[-2::-1]:
        recon = pyr_up(recon, band.shape[-2:]) + band
    assert torch.allclose(recon, x, atol=1e-5)


def test_identical_sets_have_zero_swd():
    x = smooth_images(16, 0)
    result = swd(x, x)
    assert result.mean == 0.0 and set(result.levels) == {32, 16}


def test_small_levels_use_fewer_patches():
    result = swd(smooth_images(4, 0), smooth_images(4, 1))
    assert result.descriptors[32] == (4 * 128, 4 * 128)
    assert result.descriptors[16] == (4 * 100, 4 * 100)  # a 16 px level has only 10 x 10 positions


def test_swd_is_larger_for_a_different_distribution_than_for_a_new_sample_of_the_same():
    real = smooth_images(64, 0)
    same = smooth_images(64, 1)
    noisy = (smooth_images(64, 2) + 0.3 * torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(9)))
    d_same, d_other = swd(real, same), swd(real, noisy)
    assert 0 < d_same.mean < d_other.mean
    assert d_other.levels[32] > 2 * d_same.levels[32]  # the added noise lives in the finest band


def test_swd_ignores_a_global_affine_change_like_progan():
    x = smooth_images(8, 0)
    assert swd(x, 0.5 * x + 0.2).mean == pytest.approx(0.0, abs=1e-2)


def test_swd_is_deterministic_given_a_seed_and_handles_unequal_set_sizes():
    a, b = smooth_images(8, 0), smooth_images(12, 1)
    first = swd(a, b, seed=3)
    assert first == swd(a, b, seed=3) and first.mean > 0
