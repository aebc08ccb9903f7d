"""Official idinvert / InterFaceGAN boundary files: the real format, shape checks, and safety."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from idinvert.official_boundaries import (Boundary, BoundaryFileError, load_boundary_dir,
                                          load_boundary_file)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "idinvert-boundaries-ffhq256"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"official boundary files not present at {SHARED} "
                                "(../shared/data from the project root)")

OFFICIAL_LAYERS = {"age": [0, 1, 2, 3, 4, 5], "expression": [2, 3, 4, 5], "eyeglasses": [0, 1, 2],
                   "gender": [2, 3, 4], "pose": [0, 1, 2]}


def _save_object_npy(path, obj):
    arr = np.empty((), dtype=object)
    arr[()] = obj
    np.save(path, arr, allow_pickle=True)


@needs_shared
def test_official_ffhq256_boundaries_load():
    bounds = load_boundary_dir(SHARED, num_layers=14, w_dim=512)
    assert sorted(bounds) == sorted(OFFICIAL_LAYERS)
    for name, b in bounds.items():
        assert isinstance(b, Boundary) and b.attribute == name
        assert b.normal.shape == (14, 512) and b.normal.dtype == torch.float32
        assert b.layers == OFFICIAL_LAYERS[name]
        assert torch.allclose(b.normal.norm(dim=1), torch.ones(14), atol=1e-5)
        assert b.source.endswith(f"{name}.npy") and b.offset == 0.0
        assert b.meta["manipulate_layers"] == OFFICIAL_LAYERS[name]


@needs_shared
def test_official_boundaries_against_another_generator_fail_naming_shapes():
    with pytest.raises(BoundaryFileError, match=r"\(1, 14, 512\).*\[18, 512\]"):
        load_boundary_dir(SHARED, num_layers=18, w_dim=512)
    with pytest.raises(BoundaryFileError, match=r"age\.npy"):
        load_boundary_dir(SHARED, num_layers=14, w_dim=256)


def test_w_boundary_is_repeated_on_all_layers(tmp_path):
    n = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    np.save(tmp_path / "smile.npy", n)
    b = load_boundary_file(tmp_path / "smile.npy", num_layers=6, w_dim=16)
    assert b.normal.shape == (6, 16) and b.layers == list(range(6))
    unit = torch.from_numpy(n[0] / np.linalg.norm(n[0]))
    assert torch.allclose(b.normal, unit.expand(6, 16), atol=1e-6)
    with pytest.raises(BoundaryFileError, match="num_layers"):
        load_boundary_file(tmp_path / "smile.npy")


def test_wplus_object_file_and_defaults(tmp_path):
    rng = np.random.default_rng(1)
    _save_object_npy(tmp_path / "a.npy", {"boundary": rng.standard_normal((1, 4, 8)).astype(np.float32),
                                          "meta_data": {"manipulate_layers": [3, 1]}})
    _save_object_npy(tmp_path / "b.npy", {"boundary": rng.standard_normal((4, 8)).astype(np.float32)})
    bounds = load_boundary_dir(tmp_path, num_layers=4, w_dim=8)
    assert bounds["a"].layers == [1, 3] and bounds["b"].layers == [0, 1, 2, 3]
    assert torch.allclose(bounds["a"].normal[[1, 3]].norm(dim=1), torch.ones(2), atol=1e-6)


def test_bad_layers_and_bad_content_are_errors(tmp_path):
    _save_object_npy(tmp_path / "x.npy", {"boundary": np.ones((1, 4, 8), np.float32),
                                          "meta_data": {"manipulate_layers": [0, 9]}})
    with pytest.raises(BoundaryFileError, match=r"\[9\]"):
        load_boundary_file(tmp_path / "x.npy", 4, 8)
    _save_object_npy(tmp_path / "y.npy", {"normal": np.ones(8)})
    with pytest.raises(BoundaryFileError, match="'boundary'"):
        load_boundary_file(tmp_path / "y.npy", 4, 8)
    with pytest.raises(BoundaryFileError, match="zero"):
        Boundary("z", torch.zeros(4, 8), [0], "test")
    with pytest.raises(BoundaryFileError, match="not found"):
        load_boundary_dir(tmp_path / "nope", 4, 8)


class _RunsShell:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_boundary_file_is_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    _save_object_npy(tmp_path / "age.npy", {"boundary": _RunsShell(marker), "meta_data": {}})
    with pytest.raises(BoundaryFileError, match="refusing global"):
        load_boundary_dir(tmp_path, num_layers=14, w_dim=512)
    assert not marker.exists()
