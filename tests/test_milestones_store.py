"""Anytime milestones through method -> runner -> store, on the tiny random bundle: one run stores every
milestone, a milestone equals a run of that many steps, and a killed run resumes with every milestone
once and the values of an uninterrupted run."""

import signal
import sqlite3
import time

import pytest

from bench.runner import run_benchmark
from bench.store import Store
from tests.test_runner import TINY, _cli, _opts


def _by_step(rows):
    out = {}
    for r in rows:
        out.setdefault(r["step"], {})[r["image_id"]] = r
    return out


def test_one_run_stores_every_milestone_and_encoders_are_one_point(tmp_path):
    opts = _opts(tmp_path, ["encoder", "idinvert"], overrides={"idinvert": {"iters": "30"}})
    enc_id, idi_id = run_benchmark(opts)
    with Store(tmp_path) as store:
        idi = _by_step(store.milestones(idi_id))
        assert sorted(idi) == [0, 10, 16, 25, 30]
        images = {r["image_id"]: r for r in store.images(idi_id)}
        for image_id, row in images.items():
            # the last milestone is the run's own result; seconds grow along the run
            assert idi[30][image_id]["metrics"]["mse"] == pytest.approx(row["metrics"]["mse"], rel=1e-9)
            secs = [idi[s][image_id]["seconds"] for s in (0, 10, 30)]
            assert 0 < secs[0] < secs[1] < secs[2]
            # the encoder start is measured, and optimisation lowers the error
            assert idi[30][image_id]["metrics"]["mse"] < idi[0][image_id]["metrics"]["mse"]
            assert set(idi[10][image_id]["metrics"]) >= {"mse", "psnr", "dpips"}
        enc = _by_step(store.milestones(enc_id))
        assert sorted(enc) == [0] and len(enc[0]) == 6
        run_metrics = {m["name"]: m for m in store.metrics(idi_id)}
        sets = {(m["step"], m["name"]): m for m in store.milestone_metrics(idi_id)}
        for step in (0, 10, 30):
            assert sets[(step, "fid_domain")]["status"] == "ok"
            assert (step, "ap_mean") in sets
        assert sets[(30, "fid_domain")]["value"] == pytest.approx(run_metrics["fid_domain"]["value"])
        assert sets[(0, "fid_domain")]["value"] != sets[(30, "fid_domain")]["value"]
        assert {m["step"] for m in store.milestone_metrics(enc_id)} == {0}


def test_a_milestone_equals_a_run_of_that_many_steps(tmp_path):
    (long_id,) = run_benchmark(_opts(tmp_path / "a", ["mse-optim"], semantic=False,
                                     overrides={"mse-optim": {"iters": "30"}}))
    (short_id,) = run_benchmark(_opts(tmp_path / "b", ["mse-optim"], semantic=False,
                                      overrides={"mse-optim": {"iters": "10"}}))
    with Store(tmp_path / "a") as a, Store(tmp_path / "b") as b:
        at10 = _by_step(a.milestones(long_id))[10]
        for row in b.images(short_id):
            assert at10[row["image_id"]]["metrics"]["mse"] == pytest.approx(row["metrics"]["mse"], rel=1e-5)


def _milestone_rows(results):
    db = sqlite3.connect(results / "bench.sqlite")
    rows = db.execute("SELECT image_id, step, metrics FROM milestones").fetchall()
    db.close()
    return rows


def test_resume_after_kill_keeps_every_milestone_once(tmp_path):
    args = ["run", "--methods", "mse-optim", "--bundle", TINY, "--limit", "12", "--batch-size", "2",
            "--set", "mse-optim.iters=60", "--no-report", "--no-semantic"]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = _cli(*args, "--results", str(killed))
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if (killed / "bench.sqlite").exists() and len(_milestone_rows(killed)) >= 2 * 6:
                break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    before = _milestone_rows(killed)
    assert 12 <= len(before) < 72 and len(before) % 6 == 0, "kill the run part-way, between batches"
    for run in (_cli(*args, "--results", str(killed)), _cli(*args, "--results", str(whole))):
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    after = _milestone_rows(killed)
    assert len(after) == 12 * 6 and len({(r[0], r[1]) for r in after}) == 72  # each (image, step) once
    assert {r[1] for r in after} == {0, 10, 16, 25, 40, 60}
    assert set(before) <= set(after)  # nothing stored before the kill was lost or recomputed
    import json
    ref = {(r[0], r[1]): json.loads(r[2]) for r in _milestone_rows(whole)}
    for image_id, step, metrics in after:
        for k, v in json.loads(metrics).items():
            assert v == pytest.approx(ref[(image_id, step)][k], rel=1e-5, abs=1e-9)
