"""Safe loading: weight files never run code, and every failure says what is wrong and what to do."""

import argparse
import os
import pickle

import numpy as np
import pytest
import torch

from idinvert.checkpoints import (CheckpointError, CheckpointMissing, UnsafeCheckpointError,
                                  load_npy_restricted, restricted_pickle_loads, safe_torch_load)


class _RunsShell:
    """Unpickling this calls os.system: the classic malicious pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def _save_object_npy(path, obj):
    arr = np.empty((), dtype=object)
    arr[()] = obj
    np.save(path, arr, allow_pickle=True)


# ---- torch files ----------------------------------------------------------------------------------

def test_state_dict_round_trips(tmp_path):
    sd = {"a.weight": torch.randn(3, 4), "nested": {"b": torch.ones(2)}, "n": 3}
    torch.save(sd, tmp_path / "w.pt")
    out = safe_torch_load(tmp_path / "w.pt")
    assert torch.equal(out["a.weight"], sd["a.weight"]) and out["n"] == 3


def test_missing_file_names_file_and_where_it_goes(tmp_path):
    with pytest.raises(CheckpointMissing) as e:
        safe_torch_load(tmp_path / "gen.pth", what="generator weights",
                        expected_location="the weights dir (--weights-dir)")
    msg = str(e.value)
    assert "gen.pth" in msg and "generator weights" in msg and "--weights-dir" in msg
    assert isinstance(e.value, FileNotFoundError)


def test_not_a_checkpoint_says_so(tmp_path):
    (tmp_path / "junk.pth").write_text("this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a valid checkpoint"):
        safe_torch_load(tmp_path / "junk.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        safe_torch_load(tmp_path / "empty.pth")


def test_pkl_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "network.pkl", "wb") as f:
        pickle.dump(_RunsShell(marker), f)
    with pytest.raises(UnsafeCheckpointError) as e:
        safe_torch_load(tmp_path / "network.pkl")
    assert "pickle" in str(e.value) and "convert" in str(e.value).lower()
    assert not marker.exists()


def test_renamed_pickle_is_refused_too(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "network.pt", "wb") as f:
        pickle.dump(_RunsShell(marker), f)
    with pytest.raises(UnsafeCheckpointError, match="pickle"):
        safe_torch_load(tmp_path / "network.pt")
    assert not marker.exists()


def test_torch_file_with_code_is_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"w": torch.ones(1), "evil": _RunsShell(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match="refusing"):
        safe_torch_load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_training_checkpoint_args_namespace_is_admitted(tmp_path):
    # rosinality's train.py stores its argparse args next to the weights.
    torch.save({"g_ema": {"x": torch.zeros(1)}, "args": argparse.Namespace(size=256, lr=0.002)},
               tmp_path / "train.pt")
    out = safe_torch_load(tmp_path / "train.pt")
    assert out["args"].size == 256


# ---- restricted unpickler for NumPy object arrays --------------------------------------------------

def test_object_npy_with_arrays_and_plain_containers_loads(tmp_path):
    obj = {"boundary": np.arange(6, dtype=np.float32).reshape(1, 2, 3),
           "meta_data": {"manipulate_layers": [0, 1], "name": "age", "acc": 0.9, "flag": True,
                         "none": None, "pair": (1, 2.5), "scalar": np.float32(1.5)}}
    _save_object_npy(tmp_path / "b.npy", obj)
    out = load_npy_restricted(tmp_path / "b.npy")[()]
    assert np.array_equal(out["boundary"], obj["boundary"])
    assert out["boundary"].dtype == np.float32
    assert out["meta_data"]["manipulate_layers"] == [0, 1] and out["meta_data"]["pair"] == (1, 2.5)
    assert out["meta_data"]["scalar"] == np.float32(1.5)


def test_numeric_npy_loads_without_pickle(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((1, 8), dtype=np.float32))
    assert load_npy_restricted(tmp_path / "w.npy").shape == (1, 8)


def test_malicious_npy_is_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    _save_object_npy(tmp_path / "evil.npy", {"boundary": _RunsShell(marker)})
    with pytest.raises(pickle.UnpicklingError, match="refusing global"):
        load_npy_restricted(tmp_path / "evil.npy")
    assert not marker.exists()


def test_restricted_unpickler_refuses_builtins_and_classes():
    with pytest.raises(pickle.UnpicklingError, match="eval"):
        restricted_pickle_loads(pickle.dumps(_CallsEval()))
    with pytest.raises(pickle.UnpicklingError, match="Namespace"):
        restricted_pickle_loads(pickle.dumps(argparse.Namespace(a=1)))
    with pytest.raises(pickle.UnpicklingError, match="encoding"):
        # _codecs.encode is admitted only as NumPy uses it (latin1)
        restricted_pickle_loads(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00zlib\x86R.")
    assert restricted_pickle_loads(pickle.dumps({"a": [1, 2.0, "x", None, True, (3,)]})) == \
        {"a": [1, 2.0, "x", None, True, (3,)]}
