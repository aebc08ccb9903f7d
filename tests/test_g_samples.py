"""The "G samples" reference row (issue 12): fresh generator samples, measured like a method's
reconstructions, shown in the realism and interpolation tables and, as the negative control (issue 22),
in the AP table; never marked best."""

import pytest
import torch

import bench.tables as T
import methods.registry as registry
from bench.store import MetricRow, Store
from idinvert.zoo import tiny_random_bundle
from tests.report_fixtures import _begin, _fill_run, _spec, build_fixture_store


def _method(seed=0):
    m = registry.build("g-samples", {"seed": str(seed)})
    m.prepare(tiny_random_bundle(seed=0))
    return m


def test_g_samples_are_generator_codes_fixed_per_image_and_batch_independent():
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    m = _method()
    codes = m.invert(images).codes
    assert codes.shape == (4, m.bundle.num_layers, m.bundle.w_dim)
    one_by_one = torch.cat([m.invert(images[i:i + 1]).codes for i in range(4)])
    assert torch.equal(codes, one_by_one)
    assert not torch.allclose(codes[0], codes[1])                        # a sample per image
    assert not torch.allclose(codes, _method(seed=1).invert(images).codes)  # the seed matters
    # they are the generator's own codes in its own layout (this tiny G broadcasts one w to every layer)
    assert m.bundle.generator.repeat_w and torch.equal(codes[:, 0], codes[:, -1])


def test_reference_row_appears_in_realism_interpolation_and_ap_as_negative_control_and_is_never_best(tmp_path):
    build_fixture_store(tmp_path)
    with Store(tmp_path) as store:
        run_id = _begin(store, _spec("g-samples", {"seed": 0}, "synthetic-faces/test", 16, "v-test"))
        # better than every method in fid_domain: still not marked best
        q = (0.5, 5.0, 0.9, 1.0, 10.0, 0.0, 12.0, 0.5, 0.5)
        _fill_run(store, tmp_path, run_id, "g-samples", q, [f"img{i}" for i in range(16)],
                  imagenet=False, hostile=False, salt=99)
        t1 = T.table1(store)
        ref = [r for r in t1.rows if r.method == "g-samples"]
        assert len(ref) == 1 and ref[0].label == "G samples (reference)"
        assert ref[0].cells["fid_domain"].value == pytest.approx(1.0) and not ref[0].cells["fid_domain"].best
        assert ref[0].cells["mse"].status == "absent" and ref[0].cells["seconds_per_image"].status == "absent"
        assert any(r.cells["fid_domain"].best for r in t1.rows if r.method != "g-samples")
        assert any("G samples (reference)" in n for n in t1.notes)
        data = [T.RunMetrics(store, r) for r in store.runs() if r["status"] == "complete"]
        ap = T.build_table("AP", data, ["ap_mean"], {})
        neg = [r for r in ap.rows if r.method == "g-samples"]
        assert len(neg) == 1 and neg[0].label == "G samples (negative control: unrelated codes)"
        assert not neg[0].cells["ap_mean"].best and any("chance" in n for n in ap.notes)
        edits = T.build_table("edits", data, ["edit_success_mean"], {})
        assert "g-samples" not in {r.method for r in edits.rows}
        interp = T.build_table("Table 2", data, ["interp_fid_domain"], {})
        assert "g-samples" in {r.method for r in interp.rows}
