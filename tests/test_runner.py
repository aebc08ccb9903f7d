"""The runner end to end on the tiny random bundle: stored rows, resume after kill, reuse, torchrun shards."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.runner import RunOptions, run_benchmark
from bench.store import Store

ROOT = Path(__file__).resolve().parents[1]
TINY = "tiny-random"
FAST = {"idinvert": {"iters": "3"}, "image2stylegan": {"iters": "3"}, "mse-optim": {"iters": "3"},
        "optim-w": {"iters": "3"}}


def _opts(tmp_path, methods, **kw):
    from bench.metrics.semantic import SemanticConfig

    small = SemanticConfig(boundary_samples=600, interp_pairs=3, interp_steps=4, edit_images=4,
                           spread_samples=200)
    base = dict(methods=methods, bundle=TINY, limit=6, batch_size=4, results_dir=tmp_path,
                overrides={m: FAST[m] for m in methods if m in FAST}, report=False, quiet=True,
                semantic_config=small)
    base.update(kw)
    return RunOptions(**base)


def _cli(*args, env_extra=None, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_run_stores_every_metric_for_every_method(tmp_path):
    run_ids = run_benchmark(_opts(tmp_path, ["encoder", "idinvert"]))
    assert len(run_ids) == 2
    with Store(tmp_path) as store:
        for run in store.runs():
            assert run["status"] == "complete" and run["n_images"] == 6 and run["device"] == "cpu"
            assert run["bundle"].startswith("tiny-random") and run["code_version"]
            images = store.images(run["run_id"])
            assert len(images) == 6 and all(set(i["metrics"]) >= {"mse", "psnr", "dpips"} for i in images)
            m = {r["name"]: r for r in store.metrics(run["run_id"])}
            for name in ("mse", "psnr", "dpips", "fid_domain", "swd", "seconds_per_image", "ap_mean",
                         "interp_fid_domain", "interp_swd", "edit_success_mean", "edit_preservation"):
                assert name in m, name
            assert m["mse"]["value"] >= 0 and m["mse"]["detail"]["n"] == 6
            assert m["fid_domain"]["detail"]["floor"] is not None
            assert m["seconds_per_image"]["value"] > 0
            # ImageNet metrics: present or honestly unavailable, never silently something else
            for name in ("lpips", "fid"):
                assert m[name]["status"] == "ok" or "reason" in m[name]["detail"]
            assert store.artifacts(run["run_id"], "recon")


def test_completed_run_is_reused_and_fresh_recomputes(tmp_path):
    (first,) = run_benchmark(_opts(tmp_path, ["encoder"], semantic=False))
    with Store(tmp_path) as store:
        finished = store.runs()[0]["finished"]
    (again,) = run_benchmark(_opts(tmp_path, ["encoder"], semantic=False))
    assert again == first
    with Store(tmp_path) as store:
        assert store.runs()[0]["finished"] == finished
    run_benchmark(_opts(tmp_path, ["encoder"], semantic=False, fresh=True))
    with Store(tmp_path) as store:
        assert store.runs()[0]["finished"] > finished and len(store.images(first)) == 6


def _stored_rows(results):
    db = sqlite3.connect(results / "bench.sqlite")
    rows = db.execute("SELECT image_id, seconds, metrics FROM images").fetchall()
    db.close()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_resume_after_kill_loses_nothing(tmp_path):
    args = ["run", "--methods", "mse-optim", "--bundle", TINY, "--limit", "12", "--batch-size", "2",
            "--set", "mse-optim.iters=60", "--results", str(tmp_path), "--no-report", "--no-semantic"]
    proc = _cli(*args)
    deadline = time.time() + 120
    before = {}
    while time.time() < deadline:
        if (tmp_path / "bench.sqlite").exists():
            try:
                before = _stored_rows(tmp_path)
            except sqlite3.OperationalError:
                before = {}
            if len(before) >= 4:
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    before = _stored_rows(tmp_path)
    assert 4 <= len(before) < 12, "kill the run part-way"
    done = _cli(*args)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert "resuming" in out
    after = _stored_rows(tmp_path)
    assert len(after) == 12
    for image_id, row in before.items():  # nothing already stored was lost or recomputed
        assert after[image_id] == row
    with Store(tmp_path) as store:
        assert store.runs()[0]["status"] == "complete"


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun (from torch) is not on PATH")
def test_torchrun_two_processes_match_one_process(tmp_path):
    common = ["--methods", "idinvert,encoder", "--bundle", TINY, "--limit", "7", "--batch-size", "2",
              "--set", "idinvert.iters=5", "--no-report", "--no-semantic"]
    one = _cli("run", *common, "--results", str(tmp_path / "one"))
    out, err = one.communicate(timeout=300)
    assert one.returncode == 0, err
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "bench", "run", *common,
                          "--results", str(tmp_path / "two")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    with Store(tmp_path / "one") as a, Store(tmp_path / "two") as b:
        runs_a = {r["method"]: r for r in a.runs()}
        runs_b = {r["method"]: r for r in b.runs()}
        assert set(runs_a) == set(runs_b) == {"idinvert", "encoder"}
        for method in runs_a:
            assert runs_b[method]["world_size"] == 2 and runs_b[method]["status"] == "complete"
            rows_a = {r["image_id"]: r for r in a.images(runs_a[method]["run_id"])}
            rows_b = {r["image_id"]: r for r in b.images(runs_b[method]["run_id"])}
            assert set(rows_a) == set(rows_b) and len(rows_a) == 7
            for image_id, ra in rows_a.items():
                rb = rows_b[image_id]
                assert ra["status"] == rb["status"]
                for k, v in ra["metrics"].items():
                    assert rb["metrics"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), (method, image_id, k)


def test_sweep_over_two_values_makes_two_grouped_runs(tmp_path):
    from bench.runner import run_sweep

    opts = _opts(tmp_path, ["idinvert"], semantic=False)
    run_ids = run_sweep(opts, "lambda_dom", ["0", "5"])
    assert len(set(run_ids)) == 2
    with Store(tmp_path) as store:
        (sweep,) = store.sweeps()
        assert sweep["param"] == "lambda_dom" and sweep["values"] == [0.0, 5.0]
        runs = store.runs(sweep_id=sweep["sweep_id"])
        assert sorted(r["params"]["lambda_dom"] for r in runs) == [0.0, 5.0]
        assert all(r["status"] == "complete" and r["method"] == "idinvert" for r in runs)
        mse = {r["params"]["lambda_dom"]: next(m["value"] for m in store.metrics(r["run_id"]) if m["name"] == "mse")
               for r in runs}
        assert mse[0.0] != mse[5.0]  # the swept value really reached the method


def test_sweep_over_seeds_runs_every_value_once_per_seed_in_one_sweep(tmp_path):
    from bench.runner import run_sweep

    opts = _opts(tmp_path, ["idinvert"], semantic=False, limit=2, overrides={"idinvert": {"iters": "2"}})
    run_ids = run_sweep(opts, "lambda_dom", ["0", "5"], seeds=[0, 1])
    assert len(set(run_ids)) == 4
    with Store(tmp_path) as store:
        (sweep,) = store.sweeps()
        runs = store.runs(sweep_id=sweep["sweep_id"])
        assert sorted((r["seed"], r["params"]["lambda_dom"]) for r in runs) == [
            (0, 0.0), (0, 5.0), (1, 0.0), (1, 5.0)]


def test_an_optimisation_shows_its_steps_inside_a_batch(tmp_path, capsys, monkeypatch):
    opts = _opts(tmp_path, ["image2stylegan", "encoder"], quiet=False, limit=2,
                 overrides={"image2stylegan": {"iters": "200"}})
    from methods import optimisation

    seen = []
    original = optimisation.OptimisationMethod.optimise

    def spy(self, images, steps, milestones=None, on_step=None):
        seen.append((type(self).__name__, steps, on_step is not None))
        return original(self, images, steps, milestones, on_step)

    monkeypatch.setattr(optimisation.OptimisationMethod, "optimise", spy)
    run_benchmark(opts)
    err = capsys.readouterr().err
    assert "batch: step 200/200" in err and "batch: step 2/200" in err
    assert ("Image2StyleGAN", 200, True) in seen          # the timed batch reports its steps ...
    assert not any(steps < 200 and reporting for _, steps, reporting in seen)   # ... the warm-up does not
