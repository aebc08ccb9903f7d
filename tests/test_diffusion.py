"""Semantic diffusion: masked inversion of a composite, the grid, the CLI."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from bench.tools import diffuse as cli
from idinvert.diffusion import box_mask, center_box, composite, diffuse, diffusion_grid, resize_mask
from idinvert.zoo import tiny_random_bundle


@pytest.fixture(scope="module")
def bundle():
    return tiny_random_bundle(0)


def images(bundle, n, seed):
    g = torch.Generator().manual_seed(seed)
    return bundle.generator.synthesis(bundle.generator.sample_wp(n, g, truncate=False)).detach()


def test_center_box_scales_the_official_crop():
    assert center_box(256) == (70, 90, 180, 200)  # 110 px centred at (125, 145)
    x0, y0, x1, y1 = center_box(32)
    assert x1 - x0 == y1 - y0 == 14 and 0 <= x0 and y1 <= 32
    m = box_mask(32, (x0, y0, x1, y1))
    assert m.shape == (1, 1, 32, 32) and m.sum() == 14 * 14


def test_resize_mask_is_binary_and_rejects_empty():
    big = torch.zeros(64, 64)
    big[16:48, 8:40] = 1
    m = resize_mask(big, 16)
    assert set(m.unique().tolist()) == {0.0, 1.0} and m.sum() == 8 * 8
    with pytest.raises(ValueError, match="no pixel"):
        resize_mask(torch.zeros(8, 8), 16)


def test_composite_takes_target_inside_context_outside():
    t, c = torch.ones(1, 3, 4, 4), -torch.ones(2, 3, 4, 4)
    m = box_mask(4, (1, 1, 3, 3))
    x = composite(t, c, m)
    assert x.shape == (2, 3, 4, 4)
    assert (x[:, :, 1:3, 1:3] == 1).all() and x.sum() == 2 * 3 * (4 - 12)


def test_outside_of_the_mask_does_not_matter(bundle):
    target, context = images(bundle, 1, 0), images(bundle, 2, 1)
    mask = box_mask(16, center_box(16))
    ref = diffuse(bundle, target, context, mask, steps=5, init="mean")
    # the target outside the mask never reaches the composite (even with the encoder start)
    other_target = torch.where(mask.bool(), target, -target)
    for init in ("mean", "encoder"):
        a = diffuse(bundle, target, context, mask, steps=5, init=init)
        b = diffuse(bundle, other_target, context, mask, steps=5, init=init)
        assert torch.allclose(a.result, b.result)
    # the context outside the mask is in no loss term: from a fixed start the result is unchanged
    other_context = torch.where(mask.bool(), context, context.flip(0))
    b = diffuse(bundle, target, other_context, mask, steps=5, init="mean")
    assert torch.allclose(ref.result, b.result, atol=1e-6)
    assert not torch.allclose(ref.composite, b.composite)
    # while the inside of the mask does matter
    c = diffuse(bundle, -target, context, mask, steps=5, init="mean")
    assert not torch.allclose(ref.result, c.result)


def test_diffusion_reduces_the_masked_error(bundle):
    target, context = images(bundle, 1, 2), images(bundle, 1, 3)
    mask = box_mask(16, center_box(16))
    start = diffuse(bundle, target, context, mask, steps=0, init="mean")
    done = diffuse(bundle, target, context, mask, steps=10, lr=0.05, init="mean")
    assert done.masked_mse.item() < start.masked_mse.item()
    assert done.loss_history.shape == (10, 1)


def test_grid_has_four_tiles_per_context(bundle):
    target, context = images(bundle, 1, 0), images(bundle, 2, 1)
    res = diffuse(bundle, target, context, None, steps=1, init="encoder")
    grid = diffusion_grid(target, context, res, min_tile=32, gap=2)
    assert grid.shape == (3, 2 * 32 + 2, 4 * 32 + 3 * 2)


def _save(img: torch.Tensor, path):
    arr = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(arr).save(path)


def test_cli_writes_the_grid(bundle, tmp_path, monkeypatch, capsys):
    import idinvert.zoo as zoo

    monkeypatch.setattr(zoo, "load_bundle", lambda name, weights_dir=None, device="cpu": bundle)
    target, context = images(bundle, 1, 0), images(bundle, 1, 1)
    _save(torch.nn.functional.interpolate(target, size=40)[0], tmp_path / "t.png")  # any size is resized
    _save(context[0], tmp_path / "c.png")
    out = tmp_path / "out" / "grid.png"
    rc = cli.main(["--target", str(tmp_path / "t.png"), "--context", str(tmp_path / "c.png"),
                   "--box", "0.25,0.25,0.75,0.75", "--iters", "2", "--out", str(out)])
    assert rc == 0
    with Image.open(out) as im:
        assert im.size[0] > 3 * im.size[1]  # one row of four tiles
    assert out.with_suffix(".pt").is_file()
    assert "wrote" in capsys.readouterr().out
    mask = torch.zeros(16, 16)
    mask[4:12, 2:10] = 1
    _save(mask.expand(3, -1, -1) * 2 - 1, tmp_path / "m.png")
    assert cli.main(["--target", str(tmp_path / "t.png"), "--context", str(tmp_path / "c.png"),
                     "--mask", str(tmp_path / "m.png"), "--iters", "1", "--init", "mean",
                     "--out", str(out)]) == 0


def test_cli_box_parsing():
    assert cli.parse_box("0.25,0.25,0.75,0.75", (100, 100), 32) == (8, 8, 24, 24)
    assert cli.parse_box("10,20,60,80", (100, 200), 32) == (3, 3, 19, 13)
    from bench.cli import UsageError

    for bad in ("1,2,3", "5,5,1,1", "a,b,c,d"):
        with pytest.raises(UsageError):
            cli.parse_box(bad, (100, 100), 32)


def test_cli_reports_unreadable_images(tmp_path):
    from bench.cli import UsageError

    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UsageError, match="cannot read image"):
        cli.load_image(tmp_path / "bad.png", 16)
    with pytest.raises(UsageError, match="not found"):
        cli.load_image(tmp_path / "missing.png", 16)
