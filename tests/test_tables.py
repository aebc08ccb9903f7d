"""Tables from the store: run selection, Table 1, best-value marking by direction, md/csv/json/latex exports."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import tables as T
from bench.store import MetricRow, RunSpec, Store
from report_fixtures import METHODS, build_fixture_store


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory):
    return build_fixture_store(tmp_path_factory.mktemp("tables-results"))


@pytest.fixture()
def store(fixture):
    with Store(fixture.results_dir) as s:
        yield s


def test_fmt_number_keeps_four_significant_digits_without_exponents():
    assert T.fmt_number(0.0123) == "0.01230"
    assert T.fmt_number(24.53) == "24.53"
    assert T.fmt_number(1234.5) == "1234"  # round-half-even of the 4th digit
    assert T.fmt_number(0) == "0"
    assert T.fmt_number(None) == "n/a"
    assert T.fmt_number(float("nan")) == "n/a"
    assert T.fmt_number(3e-7) == "3.000e-07"


def test_metric_direction_knows_every_family():
    higher = ["psnr", "ap_age", "ap_mean", "edit_success_pose", "edit_success_mean", "edit_preservation"]
    lower = ["mse", "dpips", "lpips", "fid", "fid_domain", "swd", "seconds_per_image", "interp_fid_domain",
             "interp_swd", "edit_dpips", "fid_domain_floor"]
    assert {n: T.metric_direction(n) for n in higher} == dict.fromkeys(higher, "higher")
    assert {n: T.metric_direction(n) for n in lower} == dict.fromkeys(lower, "lower")


def test_metric_direction_and_label_come_from_the_registry():
    assert T.metric_direction("psnr") == "higher"
    assert T.metric_direction("ap_gender") == "higher"
    assert T.metric_direction("edit_success_mean") == "higher"
    assert T.metric_direction("swd") == "lower"
    assert T.metric_label("ap_gender") == "AP: gender" and T.metric_label("psnr") == "PSNR (dB)"
    assert T.metric_direction("not_a_metric_any_more") == "lower"  # an old store's name still renders


def test_tables_import_no_torch():
    code = "import sys, bench.tables, bench.report; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"


def test_table1_has_every_method_once_with_domain_stand_ins(store):
    t = T.table1(store)
    assert [r.label for r in t.rows] == list(METHODS)
    assert [c.metric for c in t.columns] == ["mse", "psnr", "dpips", "fid_domain", "swd", "seconds_per_image"]


def test_table1_shows_imagenet_metrics_beside_domain_ones_when_present(tmp_path):
    build_fixture_store(tmp_path, imagenet=True)
    with Store(tmp_path) as s:
        cols = [c.metric for c in T.table1(s).columns]
    assert cols == ["mse", "psnr", "lpips", "dpips", "fid", "fid_domain", "swd", "seconds_per_image"]


def test_latest_complete_run_of_a_configuration_wins(store, fixture):
    t = T.table1(store)
    row = next(r for r in t.rows if r.method == "idinvert-encoder")
    assert row.run_id == fixture.run_ids["idinvert-encoder"]
    assert row.cells["mse"].value == pytest.approx(fixture.values["idinvert-encoder"]["mse"])
    frame = T.results_frame(store)
    assert fixture.superseded_run_id not in set(frame.run_id)
    assert fixture.incomplete_run_id not in set(frame.run_id)


def test_sweep_runs_stay_out_of_table1_but_the_reused_main_run_stays_in(store, fixture):
    t = T.table1(store)
    assert [r.run_id for r in t.rows if r.method == "idinvert"] == [fixture.run_ids["idinvert"]]
    assert fixture.sweep_run_ids[2.0] == fixture.run_ids["idinvert"]  # the fixture re-used it


def test_method_with_only_sweep_runs_shows_its_default_configuration(monkeypatch):
    runs = [{"run_id": f"r{v}", "method": "idinvert", "params": {"lambda_dom": v}, "sweep_id": "s",
             "started": 10.0 + v} for v in (0.0, 2.0, 8.0)]
    sweeps = [{"sweep_id": "s", "created": 5.0}]
    monkeypatch.setattr(T, "method_defaults", lambda m: {"lambda_dom": 2.0, "lr": 0.01})
    assert [r["run_id"] for r in T.main_runs(runs, sweeps)] == ["r2.0"]
    # a run of `bench run` that the sweep re-used started before the sweep existed
    assert [r["run_id"] for r in T.main_runs(runs, [{"sweep_id": "s", "created": 11.0}])] == ["r0.0"]
    monkeypatch.setattr(T, "method_defaults", lambda m: None)  # no registry: show them all, labelled
    picked = T.main_runs(runs, sweeps)
    assert len(picked) == 3
    assert set(T.run_labels(picked).values()) == {"idinvert (lambda_dom=0)", "idinvert (lambda_dom=2)",
                                                  "idinvert (lambda_dom=8)"}


def test_best_value_is_marked_by_direction(store):
    t = T.table1(store)
    best = {c.metric: [r.label for r in t.rows if r.cells[c.metric].best] for c in t.columns}
    assert best["mse"] == ["image2stylegan"]         # lower is better
    assert best["psnr"] == ["image2stylegan"]        # higher is better: 20.9 dB, not the encoder's 16.2
    assert best["fid_domain"] == ["idinvert"]
    assert best["seconds_per_image"] == ["encoder"]


def test_equal_values_mark_nothing_and_unavailable_cells_say_why(store):
    data = [T.RunMetrics(store, r) for r in T.main_runs(T.select_runs(store).reported, store.sweeps())]
    t = T.build_table("t", data, ["lpips", "edit_preservation", "no_such_metric"], T.run_labels([d.run for d in data]))
    for row in t.rows:
        lp = row.cells["lpips"]
        assert (lp.status, lp.text, lp.best) == ("unavailable", "n/a", False)
        assert "alexnet-owt-7be5be79.pth" in lp.reason
        assert row.cells["no_such_metric"].status == "absent"
    assert "n/a" in T.format_table(t, "md")


def _md_cells(md: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split(" | ") for line in md.splitlines() if line.startswith("| ")]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows[1:]}


def test_markdown_and_latex_show_the_table_cells_and_mark_the_best(store):
    t = T.table1(store)
    md = _md_cells(T.format_table(t, "md"))
    latex = T.format_table(t, "latex")
    for row in t.rows:
        assert md[row.label][:2] == [str(row.n_images), str(row.seed)]  # n and seed: part of a row's identity
        for k, col in enumerate(t.columns):
            cell = row.cells[col.metric]
            text = md[row.label][k + 2]
            assert text.replace("**", "") == cell.text
            assert text.startswith("**") == cell.best
            if cell.best:
                assert rf"\textbf{{{cell.value_text}}}" in latex
    assert r"idinvert-encoder" in latex and r"\toprule" in latex


def test_csv_holds_the_stored_values(store, fixture):
    t = T.table1(store)
    rows = list(csv.DictReader(io.StringIO(T.format_table(t, "csv"))))
    assert [r["method"] for r in rows] == list(METHODS)
    for r in rows:
        for metric in ("mse", "psnr", "dpips", "fid_domain", "swd", "seconds_per_image"):
            assert float(r[metric]) == pytest.approx(fixture.values[r["method"]][metric], rel=1e-12)


def test_json_is_the_long_list_with_the_required_keys(store, fixture):
    records = json.loads(T.render_table(store, "json"))
    required = {"run_id", "method", "params", "bundle", "metric", "value", "n_images"}
    assert records and all(required <= set(r) for r in records)
    assert all(isinstance(r["params"], dict) for r in records)
    by_key = {(r["method"], r["metric"]): r for r in records if r["run_id"] in fixture.run_ids.values()}
    for method in METHODS:
        assert by_key[(method, "mse")]["value"] == pytest.approx(fixture.values[method]["mse"])
        assert by_key[(method, "lpips")]["value"] is None
        assert by_key[(method, "lpips")]["status"] == "unavailable"
    assert by_key[("idinvert", "mse")]["n_images"] == 6


def test_json_of_one_run_and_table1_of_one_run(store, fixture):
    run_id = fixture.run_ids["encoder"]
    records = json.loads(T.render_table(store, "json", run_id=run_id))
    assert {r["run_id"] for r in records} == {run_id}
    assert [r.run_id for r in T.table1(store, run_id).rows] == [run_id]
    with pytest.raises(KeyError):
        T.table1(store, "no-such-run")


def test_every_format_renders_the_long_frame(store):
    frame = T.results_frame(store)
    assert list(frame.columns) == T.FRAME_COLUMNS
    for fmt in T.FORMATS:
        out = T.format_table(frame, fmt)
        assert "idinvert-encoder" in out
    with pytest.raises(ValueError, match="unknown table format"):
        T.format_table(frame, "xlsx")


def test_empty_store_prints_a_message_not_a_traceback(tmp_path):
    with Store(tmp_path) as s:
        assert "no complete runs" in T.render_table(s, "md")
        assert json.loads(T.render_table(s, "json")) == []
        assert T.results_frame(s).empty


def test_latex_and_markdown_escape_data_strings(tmp_path):
    with Store(tmp_path) as s:
        spec = RunSpec("odd_method", {"a": "x|y&z%"}, "b", "fp", "d", "fp", 1, 0, "v")
        run_id, _ = s.begin_run(spec, torch_version="t", device="cpu", num_threads=1)
        s.complete_run(run_id, [MetricRow("mse", 0.5)])
        t = T.table1(s)
        assert r"odd\_method" in T.format_table(t, "latex")
        assert "odd_method" in T.format_table(t, "md")
        long_md = T.format_table(T.results_frame(s), "md")
        assert r"x\|y&z%" in long_md
