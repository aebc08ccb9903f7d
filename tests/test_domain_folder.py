"""A user's image folder: every odd file is read correctly or skipped with a reason, never fatal."""

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from idinvert.domains.base import ImageSet
from idinvert.domains.folder import ImageFolder, decode_image

R = 16


def _png_bytes(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _solid(colour, size=(20, 20), mode="RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def _pixel(images: torch.Tensor, i: int) -> list[float]:
    """Mean colour of image i, in [0, 255]."""
    return ((images[i].mean(dim=(1, 2)) + 1) * 127.5).tolist()


def _build(tmp_path, files: dict[str, bytes]):
    for name, data in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _quiet_folder(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ImageFolder(*args, **kwargs)


def test_good_images_of_every_format_and_mode_load_as_rgb(tmp_path):
    grad = np.tile(np.linspace(0, 65535, 30, dtype=np.uint16), (20, 1))
    _build(tmp_path, {
        "a_rgb.png": _png_bytes(_solid((200, 30, 40))),
        "b_photo.jpg": _png_bytes(_solid((30, 200, 40)), "JPEG", quality=95),
        "c_web.webp": _png_bytes(_solid((30, 40, 200)), "WEBP", lossless=True),
        "d_grey.png": _png_bytes(_solid(90, mode="L")),
        "e_transparent.png": _png_bytes(_solid((0, 0, 0, 0), mode="RGBA")),
        "f_cmyk.jpg": _png_bytes(_solid((0, 255, 255, 0), mode="CMYK"), "JPEG", quality=95),
        "g_16bit.png": _png_bytes(Image.fromarray(np.full((20, 20), 32896, np.uint16))),
        "h_wide.png": _png_bytes(Image.fromarray(grad)),
        "i_palette.png": _png_bytes(_solid((10, 120, 250)).convert("P")),
        "no_extension": _png_bytes(_solid((250, 250, 0))),
    })
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing here deserves a warning
        folder = ImageFolder(tmp_path, R)
    assert isinstance(folder, ImageSet) and folder.skipped == []
    assert folder.ids == sorted(folder.ids) and len(folder) == 10
    images = folder.load(range(len(folder)))
    assert images.shape == (10, 3, R, R) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    expect = {"a_rgb.png": (200, 30, 40), "b_photo.jpg": (30, 200, 40), "c_web.webp": (30, 40, 200),
              "d_grey.png": (90, 90, 90), "e_transparent.png": (255, 255, 255),  # alpha on WHITE
              "f_cmyk.jpg": (255, 0, 0), "g_16bit.png": (128, 128, 128),     # scaled, not clipped
              "i_palette.png": (10, 120, 250), "no_extension": (250, 250, 0)}
    for name, colour in expect.items():
        got = _pixel(images, folder.ids.index(name))
        assert np.allclose(got, colour, atol=6), (name, got, colour)
    # 16-bit gradient, non-square: centre-cropped, still a left-to-right gradient, not saturated.
    wide = images[folder.ids.index("h_wide.png")]
    assert wide[0, :, 0].mean() < wide[0, :, -1].mean() and wide.max() < 0.9 and wide.min() > -0.9
    assert folder.labels is None and folder.label_source == "none" and folder.attributes == ()


def test_broken_files_are_skipped_with_a_warning_naming_each(tmp_path):
    good = _png_bytes(_solid((1, 2, 3)))
    jpeg = _png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)),
                      "JPEG")
    _build(tmp_path, {
        "good.png": good,
        "truncated.png": _png_bytes(_solid((9, 9, 9), size=(64, 64)))[:60],
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "text.png": b"this is not an image at all\n",
        "empty.png": b"",
        ".hidden.png": b"ignored, hidden",
    })
    with pytest.warns(UserWarning) as caught:
        folder = ImageFolder(tmp_path, R)
    assert folder.ids == ["good.png"]
    skipped = dict(folder.skipped)
    assert set(skipped) == {"truncated.png", "truncated.jpg", "text.png", "empty.png"}
    assert "empty" in skipped["empty.png"] and "not a recognised image" in skipped["text.png"]
    assert "truncated" in skipped["truncated.jpg"] or "corrupt" in skipped["truncated.jpg"]
    messages = " ".join(str(w.message) for w in caught)
    for name in skipped:
        assert name in messages
    assert folder.load([0]).shape == (1, 3, R, R)


def test_file_named_like_markup_loads_and_keeps_its_literal_id(tmp_path):
    # "/" cannot be in a file name, so this is a file "script>.png" in a folder "<script>alert(1)<".
    name = "<script>alert(1)</script>.png"
    _build(tmp_path, {name: _png_bytes(_solid((5, 6, 7)))})
    folder = ImageFolder(tmp_path, R)
    assert folder.ids == [name] and folder.skipped == []
    assert folder.load(0).shape == (1, 3, R, R)


def test_missing_path_not_a_folder_and_empty_folders_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolder(tmp_path / "nowhere", R)
    a_file = tmp_path / "file.png"
    a_file.write_bytes(_png_bytes(_solid((1, 1, 1))))
    with pytest.raises(ValueError, match="not a folder"):
        ImageFolder(a_file, R)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no readable image.*empty"):
        ImageFolder(empty, R)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="1 file\\(s\\) skipped"):
        _quiet_folder(junk, R)


def test_fingerprint_follows_content_and_resolution(tmp_path):
    _build(tmp_path, {"a.png": _png_bytes(_solid((1, 2, 3))), "b.png": _png_bytes(_solid((4, 5, 6)))})
    first = ImageFolder(tmp_path, R).fingerprint
    assert ImageFolder(tmp_path, R).fingerprint == first
    assert ImageFolder(tmp_path, 2 * R).fingerprint != first
    (tmp_path / "b.png").write_bytes(_png_bytes(_solid((4, 5, 7))))
    assert ImageFolder(tmp_path, R).fingerprint != first


def test_uncached_folder_rereads_files_and_refuses_changed_ones(tmp_path):
    _build(tmp_path, {"a.png": _png_bytes(_solid((200, 0, 0))), "b.png": _png_bytes(_solid((0, 200, 0)))})
    cached = ImageFolder(tmp_path, R)
    uncached = ImageFolder(tmp_path, R, cache_bytes=0)
    assert torch.equal(cached.load([1, 0]), uncached.load([1, 0]))
    (tmp_path / "a.png").write_bytes(_png_bytes(_solid((0, 0, 200), size=(30, 30))))
    with pytest.raises(RuntimeError, match="a.png"):
        uncached.load([0])
    assert np.allclose(_pixel(cached.load([0]), 0), (200, 0, 0), atol=2)  # decoded when built


def _labelled_folder(tmp_path):
    _build(tmp_path / "imgs", {"a.png": _png_bytes(_solid((1, 2, 3))), "sub/b.png": _png_bytes(_solid((4, 5, 6)))})
    return tmp_path / "imgs"


def test_labels_csv_sets_labels_in_folder_order(tmp_path):
    root = _labelled_folder(tmp_path)
    csv = tmp_path / "labels.csv"
    csv.write_text("file,smile,glasses\nsub/b.png,1,0\n./a.png, 0 ,1\n")
    folder = ImageFolder(root, R, labels_csv=csv)
    assert folder.ids == ["a.png", "sub/b.png"]
    assert folder.attributes == ("smile", "glasses") and folder.label_source == "csv"
    assert folder.labels.dtype == torch.int64 and folder.labels.tolist() == [[0, 1], [1, 0]]


def test_labels_csv_inside_the_folder_is_not_read_as_an_image(tmp_path):
    root = _labelled_folder(tmp_path)
    (root / "labels.csv").write_text("file,smile\na.png,1\nsub/b.png,0\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folder = ImageFolder(root, R, labels_csv=root / "labels.csv")
    assert folder.labels.tolist() == [[1], [0]]


def test_labels_csv_errors_name_the_problem(tmp_path):
    root = _labelled_folder(tmp_path)
    csv = tmp_path / "labels.csv"
    csv.write_text("file,smile\na.png,1\nsub/b.png,1\nghost.png,0\n")
    with pytest.warns(UserWarning, match="ghost.png"):
        ImageFolder(root, R, labels_csv=csv)
    csv.write_text("file,smile\na.png,1\n")
    with pytest.raises(ValueError, match="sub/b.png"):
        ImageFolder(root, R, labels_csv=csv)
    csv.write_text("file,smile\na.png,1\nsub/b.png,yes\n")
    with pytest.raises(ValueError, match=r"row 3.*'smile'.*'yes'"):
        ImageFolder(root, R, labels_csv=csv)
    csv.write_text("file,smile\na.png,2\nsub/b.png,1\n")
    with pytest.raises(ValueError, match=r"row 2.*'2'"):
        ImageFolder(root, R, labels_csv=csv)
    csv.write_text("name,smile\na.png,1\nsub/b.png,1\n")
    with pytest.raises(ValueError, match="header"):
        ImageFolder(root, R, labels_csv=csv)
    csv.write_text("file,smile\na.png,1\na.png,0\nsub/b.png,1\n")
    with pytest.raises(ValueError, match="twice"):
        ImageFolder(root, R, labels_csv=csv)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        ImageFolder(root, R, labels_csv=tmp_path / "missing.csv")


def test_decode_is_deterministic_and_antialiased():
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255  # 1-px stripes: an aliasing resize would give black or white, not grey
    data = _png_bytes(Image.fromarray(stripes))
    a, b = decode_image(data, R), decode_image(data, R)
    assert np.array_equal(a, b) and a.shape == (R, R, 3) and a.dtype == np.uint8
    assert 100 < a.mean() < 155 and a.std() < 20
