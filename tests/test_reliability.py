"""Results a user can trust (issue 15): one test per numbered finding.

1 tables never mix runs of different n or seed; 2 a results folder inside --data is not read as input;
3 a folder's identity is its resolved path and content; 4 out-of-domain data is flagged; 5 a damaged
store is reported with how to recover; 6 unknown run / bundle, --results on a file are usage errors;
7 a full disk leaves no temp file and gives one line; 8 non-finite, huge or empty parameters are refused;
9 a read-only store can be read; 10 report.html is 0644 under umask 022; 11 identical runs share work.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench import tables as T
from bench.cli import main
from bench.runner import RunOptions, run_benchmark
from bench.store import ImageRow, MetricRow, RunSpec, Store

ROOT = Path(__file__).resolve().parents[1]
TINY = "tiny-random"


def _spec(method="encoder", n=64, seed=0, dataset="synthetic-faces:test", params=None):
    return RunSpec(method=method, params=params or {}, bundle="synthetic-faces", bundle_fingerprint="b",
                   dataset=dataset, dataset_fingerprint="d", n_images=n, seed=seed, code_version="v")


def _complete(store, spec, mse, psnr):
    run_id, _ = store.begin_run(spec, torch_version="x", device="cpu", num_threads=1)
    store.add_images(run_id, [ImageRow(f"img-{i}", i, metrics={"mse": mse, "psnr": psnr})
                              for i in range(spec.n_images)])
    store.complete_run(run_id, [MetricRow("mse", mse), MetricRow("psnr", psnr)])
    time.sleep(0.01)  # distinct finish times
    return run_id


def _cli(*args, cwd=ROOT, env_extra=None, timeout=300, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kw)


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("bench: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _save_images(folder: Path, images: torch.Tensor) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        arr = ((im.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i:03d}.png")


def _in_domain(folder: Path, resolution: int, n: int) -> Path:
    from idinvert.domains.synthetic_faces import SyntheticFaces

    _save_images(folder, SyntheticFaces(resolution=resolution).split("test", n).load(list(range(n))))
    return folder


def _colour_fields(folder: Path, resolution: int, n: int) -> Path:
    """Smooth colour gradients: image-like, and nothing like a face."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:resolution, 0:resolution] / resolution
    for i in range(n):
        c = rng.random((3, 3))
        p = np.stack([c[k, 0] * xx + c[k, 1] * yy + c[k, 2] * np.sin(6 * xx * rng.random() + 3 * yy)
                      for k in range(3)], -1)
        Image.fromarray((255 * (p - p.min()) / (np.ptp(p) + 1e-9)).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def _tiny_opts(results, methods=("encoder",), **kw):
    base = dict(methods=list(methods), bundle=TINY, limit=4, batch_size=4, results_dir=results, report=False,
                quiet=True, semantic=False)
    base.update(kw)
    return RunOptions(**base)


# -- 1 ----------------------------------------------------------------------------------------------------
def test_1_runs_of_different_n_or_seed_are_separate_rows_and_never_share_a_best(tmp_path):
    with Store(tmp_path) as store:
        full = _complete(store, _spec("image2stylegan", n=64), 0.05, 20.0)
        other = _complete(store, _spec("encoder", n=64), 0.09, 17.0)
        quick = _complete(store, _spec("image2stylegan", n=8), 0.01, 30.0)    # --limit 8, later
        seed1 = _complete(store, _spec("encoder", n=64, seed=1), 0.08, 18.0)  # --seed 1 after --seed 0
        sel = T.select_runs(store)
        assert sel.superseded == []  # the 8-image run does not supersede the 64-image one
        t = T.table1(store)
    rows = {r.run_id: r for r in t.rows}
    assert set(rows) == {full, other, quick, seed1}
    assert rows[quick].label == "image2stylegan (n=8)" and rows[full].label == "image2stylegan (n=64)"
    assert "seed=1" in rows[seed1].label
    # the 8-image run's better numbers are not "best" of a comparison with 64-image runs
    assert not rows[quick].cells["mse"].best
    # among the like runs (n=64, seed 0) image2stylegan is best
    assert rows[full].cells["mse"].best and not rows[other].cells["mse"].best
    assert any("different numbers of images" in n for n in t.notes)
    md = T.format_table(t, "md")
    assert "| n | seed |" in md and "| 8 | 0 |" in md and "| 64 | 1 |" in md
    assert r"$n$ & seed" in T.format_table(t, "latex")


# -- 2 ----------------------------------------------------------------------------------------------------
def test_2_a_results_folder_inside_data_is_never_read_as_input(tmp_path):
    data = _in_domain(tmp_path / "D", 16, 4)
    opts = _tiny_opts(data / "res", data=data, limit=None, report=True)
    first = run_benchmark(opts)
    assert list((data / "res").rglob("*.png"))  # the run wrote PNGs inside --data
    second = run_benchmark(opts)
    assert second == first
    with Store(data / "res") as store:
        runs = store.runs()
    assert len(runs) == 1 and runs[0]["n_images"] == 4
    # any results folder (one holding bench.sqlite) is left out, even one not passed as --results
    from idinvert.domains.folder import ImageFolder

    shutil.copytree(data / "res", data / "old-results")
    folder = ImageFolder(data, 16)
    assert len(folder) == 4 and set(folder.excluded) >= {"old-results", "res"}


# -- 3 ----------------------------------------------------------------------------------------------------
def test_3_one_folder_under_several_spellings_is_one_dataset(tmp_path, monkeypatch):
    from idinvert.domains.folder import ImageFolder

    data = _in_domain(tmp_path / "D" / "data", 16, 4)
    (tmp_path / "link").symlink_to(tmp_path / "D")
    monkeypatch.chdir(tmp_path / "D")
    spellings = ["data", "./data", str(data), str(tmp_path / "D" / "data" / ".." / "data"),
                 str(tmp_path / "link" / "data")]
    sets = [ImageFolder(s, 16) for s in spellings]
    assert len({s.name for s in sets}) == 1 and len({s.fingerprint for s in sets}) == 1
    assert sets[0].name == f"folder:{data.resolve()}"
    results = tmp_path / "res"
    first = run_benchmark(_tiny_opts(results, data=Path("data")))
    again = run_benchmark(_tiny_opts(results, data=tmp_path / "link" / "data"))
    assert again == first
    with Store(results) as store:
        assert len(store.runs()) == 1


# -- 4 ----------------------------------------------------------------------------------------------------
def test_4_data_out_of_the_bundles_domain_is_flagged(tmp_path):
    from bench.domain_check import check_domain
    from bench.evaluation import Evaluator
    from idinvert.domains.folder import ImageFolder
    from idinvert.zoo import load_bundle

    bundle = load_bundle("synthetic-faces")
    ev = Evaluator(bundle, RunOptions(methods=[], batch_size=8), torch.device("cpu"), tmp_path / "ev")
    embed = ev.resources.eval_network().embed.embed  # the full embedding, as the runner uses it
    inside = ImageFolder(_in_domain(tmp_path / "in", 32, 16), 32)
    outside = ImageFolder(_colour_fields(tmp_path / "out", 32, 16), 32)
    verdict_in = check_domain(inside, len(inside), bundle, embed)
    verdict_out = check_domain(outside, len(outside), bundle, embed)
    assert verdict_in.status == "in" and verdict_in.ratio < 1.2
    assert verdict_out.status == "out" and verdict_out.ratio > verdict_out.limit

    # end to end: a warning, the verdict stored with the run, and a banner on the report
    results = tmp_path / "res"
    proc = _cli("run", "--methods", "encoder", "--bundle", "synthetic-faces", "--data", str(tmp_path / "out"),
                "--limit", "8", "--no-semantic", "--results", str(results), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" in proc.stderr and "out of the domain" in proc.stderr
    with Store(results) as store:
        check = store.runs()[0]["env"]["domain_check"]
    assert check["status"] == "out" and check["ratio"] > check["limit"]
    html = (results / "report.html").read_text()
    assert "Out of the bundle&#39;s domain" in html or "Out of the bundle's domain" in html


# -- 5 ----------------------------------------------------------------------------------------------------
def _damaged_store(root: Path) -> Path:
    with Store(root) as store:
        for m in range(3):
            run_id, _ = store.begin_run(_spec(f"m{m}"), torch_version="x", device="cpu", num_threads=1)
            store.add_images(run_id, [ImageRow(f"img-{i:04d}-" + "x" * 200, i, metrics={"mse": 0.1})
                                      for i in range(300)])
            store.complete_run(run_id, [MetricRow("mse", 0.1)])
    db = sqlite3.connect(root / "bench.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    path = root / "bench.sqlite"
    data = bytearray(path.read_bytes())
    page = 4096
    middle = (len(data) // page // 2) * page
    data[middle:middle + 2 * page] = os.urandom(2 * page)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("command", [["table"], ["table", "--format", "csv"], ["report"],
                                     ["run", "--methods", "encoder", "--bundle", TINY, "--limit", "2",
                                      "--no-semantic"]])
def test_5_a_damaged_store_is_reported_with_its_path_and_how_to_recover(tmp_path, capsys, command):
    path = _damaged_store(tmp_path)
    code = main([*command, "--results", str(tmp_path)])
    line = _error_line(capsys.readouterr().err)
    assert code == 1
    assert str(path) in line and "damaged" in line and "mv " in line and "runs" in line


# -- 6 ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, fragment", [
    (["table", "--run", "nosuch"], "--run 'nosuch': no such run"),
    (["run", "--bundle", "nosuch", "--methods", "encoder"], "--bundle: unknown bundle 'nosuch'"),
    (["run", "--methods", "encoder", "--results", "{file}"], "is a file, not a folder"),
    (["run", "--methods", "encoder", "--results", "{file}/sub"], "which is a file"),
    (["table", "--results", "{file}"], "is a file, not a folder"),
])
def test_6_unknown_names_and_a_file_as_results_are_usage_errors(tmp_path, capsys, argv, fragment):
    Store(tmp_path / "res").close()
    (tmp_path / "f.txt").write_text("x")
    argv = [a.replace("{file}", str(tmp_path / "f.txt")) for a in argv]
    if "--results" not in argv:
        argv += ["--results", str(tmp_path / "res")]
    assert main(argv) == 2
    assert fragment in _error_line(capsys.readouterr().err)


# -- 7 ----------------------------------------------------------------------------------------------------
def test_7_a_full_disk_leaves_no_temp_file_and_one_line(tmp_path, capsys, monkeypatch):
    real_save = torch.save

    def disk_full_save(obj, f, *args, **kw):
        # the first bytes land, then the device is full (as torch.save on a full disk)
        target = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f
        target.write(b"PK\x03\x04partial")
        if target is not f:
            target.close()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full_save)
    code = main(["run", "--methods", "encoder", "--bundle", TINY, "--limit", "4", "--no-semantic",
                 "--no-report", "--results", str(tmp_path)])
    monkeypatch.setattr(torch, "save", real_save)
    line = _error_line(capsys.readouterr().err)
    assert code == 1 and "No space left on device" in line and "codes" in line
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and "tmp" in p.name]
    assert leftovers == []


def test_7_the_atomic_writer_removes_its_temp_file_when_the_disk_fills(tmp_path, monkeypatch):
    from bench import fileio
    from bench.errors import EnvironmentProblem

    real_fdopen = os.fdopen

    class FullDisk(io.RawIOBase):
        def __init__(self, fd):
            self._f = real_fdopen(fd, "wb")

        def write(self, data):
            self._f.write(bytes(data[:10]))
            self._f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self._f.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **kw: FullDisk(fd))
    target = tmp_path / "runs" / "r" / "codes" / "000000-4.pt"
    with pytest.raises(EnvironmentProblem, match="No space left on device") as exc:
        fileio.write_bytes_atomic(target, b"x" * 1000)
    assert str(target) in str(exc.value) and "disk is full" in str(exc.value)
    assert list(target.parent.iterdir()) == []


# -- 8 ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, fragment", [
    (["--methods", "idinvert", "--set", "idinvert.lambda_dom=inf"], "idinvert.lambda_dom: 'inf' is not a finite"),
    (["--methods", "idinvert", "--set", "idinvert.lambda_vgg=nan"], "idinvert.lambda_vgg: 'nan' is not a finite"),
    (["--methods", "encoder", "--seed", "99999999999999999999"], "--seed must be an integer in"),
    (["--methods", "encoder", "--device", "tpu"], "--device 'tpu'"),
    (["--methods", "idinvert", "--set", "idinvert.iters=0"], "idinvert.iters=0"),
])
def test_8_bad_parameter_values_exit_2_naming_them(tmp_path, capsys, extra, fragment):
    assert main(["run", *extra, "--bundle", TINY, "--no-report", "--results", str(tmp_path)]) == 2
    assert fragment in _error_line(capsys.readouterr().err)
    assert not (tmp_path / "bench.sqlite").exists()  # refused before any work


def test_8_ablate_refuses_a_non_finite_value(tmp_path, capsys):
    assert main(["ablate", "lambda_dom", "--values", "1,inf", "--bundle", TINY, "--results", str(tmp_path)]) == 2
    assert "'inf' is not a finite number" in _error_line(capsys.readouterr().err)


def test_8_a_binary_labels_file_is_named(tmp_path, capsys):
    data = _in_domain(tmp_path / "data", 16, 2)
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x01" * 20)
    assert main(["run", "--methods", "encoder", "--bundle", TINY, "--data", str(data), "--labels", str(labels),
                 "--no-report", "--results", str(tmp_path / "res")]) == 2
    line = _error_line(capsys.readouterr().err)
    assert str(labels) in line and "--labels" in line


# -- 9 ----------------------------------------------------------------------------------------------------
def _without_root_override() -> list[str]:
    """A command prefix under which file modes bind: root ignores them unless it drops the capabilities."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file modes cannot make the store read-only")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]


def _cli_as(prefix, *args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([*prefix, sys.executable, "-m", "bench", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_9_a_read_only_store_can_be_read(tmp_path):
    from tests.report_fixtures import build_fixture_store

    shared = tmp_path
    try:
        results = shared / "results"
        build_fixture_store(results)
        with Store(results) as store:  # a writer that closed cleanly: no WAL left to replay
            expected = len(T.table1(store).rows)
        for p in [results, *results.rglob("*")]:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        out = shared / "out"
        out.mkdir()
        os.chmod(out, 0o777)
        env = {"HOME": str(out), "MPLCONFIGDIR": str(out)}
        prefix = _without_root_override()
        proc = _cli_as(prefix, "table", "--results", str(results), env_extra=env)
        assert proc.returncode == 0, proc.stderr
        assert len([ln for ln in proc.stdout.splitlines() if ln.startswith("| ")]) == expected + 1
        proc = _cli_as(prefix, "report", "--results", str(results), "--out", str(out / "r.html"), env_extra=env)
        assert proc.returncode == 0, proc.stderr
        assert "Table 1" in (out / "r.html").read_text()
        # writing into the read-only folder is an environment error, in one line
        proc = _cli_as(prefix, "report", "--results", str(results), env_extra=env)
        assert proc.returncode == 1 and "report.html" in _error_line(proc.stderr)
    finally:
        for p in [shared, *shared.rglob("*")]:
            if p.is_dir():
                os.chmod(p, 0o755)


# -- 10 ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_10_report_html_gets_the_usual_permissions(tmp_path, umask, mode):
    from bench.report import build_report
    from tests.report_fixtures import build_fixture_store

    build_fixture_store(tmp_path)
    old = os.umask(umask)
    try:
        path = build_report(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


# -- 11 ---------------------------------------------------------------------------------------------------
def test_11_identical_commands_started_together_share_the_work(tmp_path):
    args = ["run", "--methods", "idinvert", "--bundle", TINY, "--limit", "16", "--batch-size", "2",
            "--set", "idinvert.iters=40", "--no-semantic", "--no-report", "--threads", "1",
            "--results", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    counts = []
    for out, _ in outs:
        lines = [ln for ln in out.splitlines() if "pending images in this process" in ln]
        counts.append(int(lines[0].split("inverted ")[1].split(" of")[0]) if lines else 0)
    assert sum(counts) == 16, outs  # every image inverted once, by one of the two
    with Store(tmp_path) as store:
        (run,) = store.runs()
        assert run["status"] == "complete" and len(store.images(run["run_id"])) == 16
        assert store.leases(run["run_id"]) == []
