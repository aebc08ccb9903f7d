import math

import torch

from bench.metrics import mse, psnr, psnr_from_mse


def test_identical_images_have_zero_mse_and_infinite_psnr():
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    assert torch.equal(mse(x, x), torch.zeros(3))
    assert torch.isinf(psnr(x, x)).all()


def test_mse_is_per_image_on_the_minus_one_to_one_scale():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.zeros(2, 3, 4, 4)
    b[0] = 1.0  # black vs mid-grey in [-1, 1]
    b[1, 0] = 0.5  # one channel off by 0.5
    assert torch.allclose(mse(a, b), torch.tensor([1.0, 0.25 / 3]))


def test_psnr_of_a_known_mse():
    a = torch.zeros(1, 3, 4, 4)
    b = torch.full((1, 3, 4, 4), 0.2)  # mse 0.04, peak-to-peak 2 -> 10 log10(4 / 0.04) = 20 dB
    assert math.isclose(psnr(a, b).item(), 20.0, rel_tol=1e-5)
    assert math.isclose(psnr_from_mse(torch.tensor([0.01])).item(), 26.0206, rel_tol=1e-4)


def test_psnr_matches_the_zero_one_convention():
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    on_unit = 10 * torch.log10(1.0 / ((a - b) ** 2).mean(dim=(1, 2, 3)))
    assert torch.allclose(psnr(a * 2 - 1, b * 2 - 1), on_unit, atol=1e-4)
