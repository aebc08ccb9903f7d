import subprocess
import sys
from pathlib import Path

import pytest

from bench import metrics
from bench.metrics.registry import Metric, UnknownMetric

REPO = Path(__file__).resolve().parents[1]


def test_every_builtin_metric_declares_direction_level_needs_and_description():
    names = [m.name for m in metrics.all_metrics()]
    for expected in ("mse", "psnr", "lpips", "dpips", "fid", "fid_domain", "fid_floor", "swd",
                     "seconds_per_image", "ap_mean", "interp_fid_domain", "interp_swd", "edit_preservation"):
        assert expected in names
    for m in metrics.all_metrics():
        assert m.direction in ("lower", "higher")
        assert m.level in ("per_image", "set", "semantic")
        assert (m.fn is None) == (m.computed_by is not None)  # computed by its own function or a family's
        assert isinstance(m.needs, tuple) and m.needs
        assert m.description


def test_directions_of_the_core_metrics():
    assert metrics.get("mse").direction == "lower"
    assert metrics.get("psnr").direction == "higher"
    assert metrics.get("fid").better(1.0, 2.0)
    assert metrics.get("psnr").better(30.0, 20.0)


def test_attribute_metrics_resolve_through_templates():
    assert metrics.get("ap_eyeglasses").name == "ap_<attr>"
    assert metrics.get("edit_success_age").name == "edit_success_<attr>"
    assert metrics.get("ap_mean").name == "ap_mean"  # an exact entry wins over the template


def test_unknown_name_suggests_close_ones():
    with pytest.raises(UnknownMetric, match="did you mean.*fid"):
        metrics.get("fdi")


def test_registering_a_different_metric_under_a_taken_name_fails():
    with pytest.raises(ValueError, match="already registered"):
        metrics.register(Metric("mse", "higher", "set", ("images",), "not mse"))


def test_bad_fields_are_rejected():
    with pytest.raises(ValueError):
        Metric("x", "down", "set", ("images",), "d")
    with pytest.raises(ValueError):
        Metric("x", "lower", "batch", ("images",), "d")
    with pytest.raises(ValueError):
        Metric("x", "lower", "set", ("telepathy",), "d")
    with pytest.raises(ValueError):
        Metric("Bad-Name", "lower", "set", ("images",), "d")


def test_lazy_functions_load():
    from bench.metrics import reconstruction, semantic

    assert metrics.get("mse").load() is reconstruction.mse_metric
    assert metrics.get("swd").load() is reconstruction.swd_metric
    assert metrics.get("ap_mean").load() is semantic.attribute_ap
    with pytest.raises(LookupError, match="computed with 'fid'"):
        metrics.get("fid_floor").load()


def test_importing_metrics_builds_nothing_heavy():
    code = ("import sys, bench.metrics; heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('lpips', 'pytorch_fid', 'torchvision', 'sklearn', 'scipy')]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_registry_module_loads_without_torch():
    code = ("import sys; import bench.metrics.registry as m; "
            "print(m.get('edit_success_mean').direction, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["higher", "False"]
