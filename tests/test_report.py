"""report.html from a fixture store: every section, every method, values equal to `bench table`, escaping,
self-containedness, and a clear page (not a traceback) when there is nothing to report."""
from __future__ import annotations

import re
import time
from html.parser import HTMLParser

import pytest

from bench import tables as T
from bench.report import build_report
from bench.report import figures as F
from bench.store import ImageRow, RunSpec, Store
from report_fixtures import (ATTRIBUTES, HOSTILE_ID, HOSTILE_PARAM, HOSTILE_REASON, METHODS, PARAMS,
                             SWEEP_VALUES, build_fixture_store)


class _Tables(HTMLParser):
    """Text of every table cell, by table id: {id: [[cell, ...], ...]}."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._stack: list[str] = []
        self._cell: list[str] | None = None
        self.imgs: list[dict[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._stack.append(a.get("id") or f"anon{len(self.tables)}")
            self.tables[self._stack[-1]] = []
        elif tag == "tr" and self._stack:
            self.tables[self._stack[-1]].append([])
        elif tag in ("td", "th") and self._stack:
            self._cell = []
        elif tag == "img":
            self.imgs.append(a)

    def handle_endtag(self, tag):
        if tag == "table" and self._stack:
            self._stack.pop()
        elif tag in ("td", "th") and self._cell is not None and self._stack:
            self.tables[self._stack[-1]][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(html: str) -> _Tables:
    p = _Tables()
    p.feed(html)
    return p


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("report-results")
    fx = build_fixture_store(root)
    seen: dict[str, dict] = {}

    def spy(name):
        real = getattr(F, name)

        def record(*args):
            seen[name] = args
            return real(*args)
        return record

    with pytest.MonkeyPatch.context() as mp:  # what the figures are drawn from
        for name in ("pr_curves", "sweep_tradeoff"):
            mp.setattr(F, name, spy(name))
        t0 = time.perf_counter()
        path = build_report(root)
        seconds = time.perf_counter() - t0
    print(f"\nreport of the fixture: {path.stat().st_size / 1024:.0f} KiB in {seconds:.2f} s")
    fx.figure_inputs = seen
    return fx, path, path.read_text(encoding="utf-8")


def test_report_is_written_to_the_results_dir_and_to_out(built, tmp_path):
    fx, path, _ = built
    assert path == fx.results_dir / "report.html"
    other = build_report(fx.results_dir, out=tmp_path / "sub" / "r.html")
    assert other == tmp_path / "sub" / "r.html" and other.stat().st_size > 10_000


@pytest.mark.parametrize("section", ["header", "imagenet", "table1", "runtime", "grid", "pr", "interp", "edits",
                                     "sweeps", "failures"])
def test_report_has_every_section(built, section):
    _, _, html = built
    assert f'id="g1-{section}"' in html


def test_report_notes_incomplete_and_superseded_runs(built):
    fx, _, html = built
    assert 'id="incomplete"' in html
    assert fx.incomplete_run_id in html and "2 of 6 images done" in html
    assert "1 older complete run" in html
    assert fx.superseded_run_id not in html


def test_table1_on_the_page_equals_bench_table(built):
    fx, _, html = built
    page = _parse(html).tables["g1-t1"]
    with Store(fx.results_dir) as store:
        t = T.table1(store)
        md = T.format_table(t, "md")
    assert [r[0] for r in page[1:]] == list(METHODS)
    for row, page_row in zip(t.rows, page[1:]):
        assert page_row[1:] == [row.cells[c.metric].text for c in t.columns]
        for c in t.columns:
            assert row.cells[c.metric].value_text in md
    header = page[0]
    assert header[1:] == [f"{c.label} {c.arrow}" for c in t.columns]


def test_best_cells_are_marked_on_the_page(built):
    _, _, html = built
    t1 = html[html.index('id="g1-t1"'):html.index("</table>", html.index('id="g1-t1"'))]
    rows = {m: t1[t1.index(f">{m}</th>"):] for m in METHODS}
    rows = {m: r[:r.index("</tr>")] for m, r in rows.items()}
    assert rows["image2stylegan"].count('class="num best"') == 2   # MSE and PSNR
    assert rows["idinvert"].count('class="num best"') == 3         # dpips, FID (domain), SWD
    assert rows["encoder"].count('class="num best"') == 1          # seconds per image


def test_means_show_spread_and_fid_shows_its_floor(built):
    _, _, html = built
    page = _parse(html).tables["g1-t1"]
    idinvert = next(r for r in page if r[0] == "idinvert")
    assert idinvert[1] == "0.03600 ± 0.0045"
    assert idinvert[4] == "12.10 (floor 3.200)"


def test_imagenet_banner_names_the_missing_files(built):
    _, _, html = built
    banner = html[html.index('id="g1-imagenet"'):]
    banner = banner[:banner.index("</div>")]
    assert "alexnet-owt-7be5be79.pth" in banner and "pt_inception-2015-12-05-6726825d.pth" in banner
    assert "dpips (domain)" in banner and "FID (domain)" in banner


def test_no_banner_when_imagenet_metrics_exist(tmp_path):
    build_fixture_store(tmp_path, imagenet=True)
    html = build_report(tmp_path).read_text()
    assert 'id="g1-imagenet"' not in html
    header = _parse(html).tables["g1-t1"][0]
    assert "LPIPS ↓" in header and "FID ↓" in header


def test_image_grid_shows_input_and_each_method_for_the_same_images(built):
    fx, _, html = built
    p = _parse(html)
    grid = next(rows for rows in p.tables.values() if rows and rows[0][1:] == fx.image_ids)
    assert [r[0] for r in grid[1:]] == ["input", *METHODS]
    assert "failed: non-finite loss (NaN) at iteration 37" in grid[3]  # image2stylegan, image 2


def test_pr_section_draws_one_panel_per_attribute_and_a_line_per_method(built):
    fx, _, _ = built
    panels, _ = fx.figure_inputs["pr_curves"]
    assert [attr for attr, _ in panels] == list(ATTRIBUTES)
    for _, curves in panels:
        assert [c.label for c in curves] == list(METHODS)
        assert all(c.ap is not None for c in curves)


def test_sweep_section_has_one_point_per_value_and_a_table(built):
    fx, _, html = built
    param, xs, ys, (series,), _ = fx.figure_inputs["sweep_tradeoff"]
    assert param == "lambda_dom"
    assert [x for x, _ in xs] == ["mse", "dpips"]
    assert [y for y, _ in ys] == ["ap_mean", "edit_success_mean"]  # registry order (Metric.sweep "y")
    assert list(series.values) == ["0", "0.5", "2", "8"]
    assert all(len(p) == len(SWEEP_VALUES) for p in series.points.values())
    sweep = _parse(html).tables["g1-sweep1"]
    assert [r[0] for r in sweep[1:]] == ["lambda_dom=0", "lambda_dom=0.5", "lambda_dom=2", "lambda_dom=8"]


def test_tables_2_and_edits_list_every_method(built):
    _, _, html = built
    tables = _parse(html).tables
    for tid in ("g1-t2", "g1-edit", "g1-ap"):
        assert [r[0] for r in tables[tid][1:]] == list(METHODS)
    assert "success: pose ↑" in tables["g1-edit"][0]


def test_failures_are_listed_with_reasons(built):
    _, _, html = built
    failures = next(rows for rows in _parse(html).tables.values() if rows and rows[0] == ["method", "image", "index",
                                                                                           "reason"])
    assert ["image2stylegan", "test-00002", "2", "non-finite loss (NaN) at iteration 37"] in failures


def test_report_is_self_contained(built):
    _, _, html = built
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs
    assert all(r.startswith(("data:image/", "#")) for r in refs), [r for r in refs if not r.startswith("data:")]
    assert not re.search(r"<(script|link|iframe)\b", html, re.I)


def test_every_string_from_data_is_escaped(tmp_path):
    build_fixture_store(tmp_path, hostile=True)
    html = build_report(tmp_path).read_text()
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in html
    assert HOSTILE_REASON not in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert HOSTILE_PARAM not in html
    assert "folder:/data/&lt;faces&gt;&amp;co" in html
    p = _parse(html)
    assert any(HOSTILE_ID in cell for rows in p.tables.values() for row in rows for cell in row)
    assert len(p.imgs) > 20 and all(i["src"].startswith("data:image/") for i in p.imgs)


def test_missing_or_corrupt_image_file_becomes_a_note_not_a_broken_image(tmp_path):
    fx = build_fixture_store(tmp_path)
    with Store(tmp_path) as s:
        recons = s.artifacts(fx.run_ids["idinvert"], "recon")
    (tmp_path / recons[0]["path"]).unlink()
    (tmp_path / recons[1]["path"]).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    html = build_report(tmp_path).read_text()
    assert "missing file: " + recons[0]["path"] in html
    assert "unreadable image: " + recons[1]["path"] in html
    assert all(i["src"] and i["src"].startswith("data:image/") for i in _parse(html).imgs)


def test_empty_store_gives_a_clear_page(tmp_path):
    Store(tmp_path).close()
    html = build_report(tmp_path).read_text()
    assert 'id="empty"' in html and "No complete runs" in html and "bench run --methods all" in html
    assert 'id="g1-table1"' not in html


def test_store_with_only_a_running_run_lists_it(tmp_path):
    with Store(tmp_path) as s:
        spec = RunSpec("idinvert", {}, "synthetic-faces", "fp", "d", "fp", 4, 0, "v")
        run_id, _ = s.begin_run(spec, torch_version="t", device="cpu", num_threads=1)
        s.add_images(run_id, [ImageRow("a", 0, metrics={"mse": 0.1})])
    html = build_report(tmp_path).read_text()
    assert "No complete runs" in html and run_id in html and "1 of 4 images done" in html


def test_missing_results_dir_gives_a_clear_page(tmp_path):
    out = build_report(tmp_path / "never-ran")
    assert "No results store" in out.read_text()


def test_runs_of_two_datasets_are_compared_separately(tmp_path, monkeypatch):
    # The second dataset's `bench ablate` re-uses the first one's sweep id, so its main idinvert run is
    # told apart by the method's defaults (from the methods registry, here stood in for).
    monkeypatch.setattr(T, "method_defaults", lambda m: PARAMS.get(m))
    build_fixture_store(tmp_path)
    build_fixture_store(tmp_path, hostile=True)  # same methods, another dataset
    html = build_report(tmp_path).read_text()
    tables = _parse(html).tables
    assert 'id="g2-table1"' in html
    assert [r[0] for r in tables["g1-t1"][1:]] == [r[0] for r in tables["g2-t1"][1:]] == list(METHODS)
    with Store(tmp_path) as s:
        t = T.table1(s)
    assert sum(r.cells["mse"].best for r in t.rows) == 2  # one best per dataset


def test_pareto_front_keeps_only_undominated_points():
    pts = [F.Point("fast-bad", 0.001, 40), F.Point("slow-good", 2.0, 10), F.Point("slow-bad", 3.0, 30),
           F.Point("mid", 0.5, 20)]
    assert [p.label for p in F.pareto_front(pts)] == ["fast-bad", "mid", "slow-good"]


def test_figure_text_with_dollar_signs_is_not_mathtext():
    png = F.runtime_quality([("FID", [F.Point("$x_1$ cost $", 1.0, 2.0), F.Point("b", 0.1, 3.0)])], {})
    assert png.startswith(b"\x89PNG")
