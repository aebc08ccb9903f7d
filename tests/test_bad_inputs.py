"""A table of bad inputs: each gives exactly one ``bench: error:`` line naming the problem, the documented
exit code (2: bad usage, 1: the environment) and no traceback. Driven in-process; nothing here inverts
an image, so the whole table runs in seconds.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.store import SCHEMA_VERSION, Store

TINY = ["--bundle", "tiny-random"]
RUN = ["run", "--no-report", "--no-semantic", *TINY]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def _png(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def w(tmp_path):
    """A workspace of inputs: good and bad folders and files (paths as strings, keyed by name)."""
    data = tmp_path / "data"
    for i in range(2):
        _png(data / f"{i}.png", i)
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"not a png at all")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00" * 30)
    (tmp_path / "header.csv").write_text("name,smile\n0.png,1\n")
    (tmp_path / "value.csv").write_text("file,smile\n0.png,2\n1.png,0\n")
    (tmp_path / "missing_row.csv").write_text("file,smile\n0.png,1\n")
    Store(tmp_path / "results").close()
    (tmp_path / "notdb").mkdir()
    (tmp_path / "notdb" / "bench.sqlite").write_bytes(b"this is not sqlite " * 300)
    Store(tmp_path / "future").close()
    db = sqlite3.connect(tmp_path / "future" / "bench.sqlite")
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    (tmp_path / "weights").mkdir()
    (tmp_path / "ckpt.pt").write_bytes(b"not a checkpoint" * 10)
    header = "file,{},gender,eyeglasses,pose,expression\n"
    rows = "0.png,1,0,1,0,1\n1.png,0,1,0,1,0\n"
    (tmp_path / "upper.csv").write_text(header.format("AGE") + rows)
    (tmp_path / "bogus.csv").write_text(header.format("bogus") + rows)
    names = {p.name: str(p) for p in tmp_path.iterdir()}
    bad_utf8 = Path(os.fsdecode(bytes(tmp_path) + b"/data\xff"))
    _png(bad_utf8 / "0.png")
    names["bad-utf8"] = str(bad_utf8)
    names["long"] = str(tmp_path / ("x" * 300))
    names["very-long"] = str(tmp_path / "/".join(["y" * 200] * 25))
    names["nothing"] = str(tmp_path / "nothing")
    names["tmp"] = str(tmp_path)
    return names


# (argv, exit code, fragment of the error line); {name} is a path of the workspace above
CASES = [
    # methods and their hyperparameters
    (["run", "--methods", "idinvrt"], 2, "did you mean 'idinvert'"),
    (["run", "--methods", "nosuch*"], 2, "nosuch*"),
    (["run", "--methods", "idinvert", "--set", "idinvert.lambda_dom"], 2, "expected METHOD.PARAM=VALUE"),
    (["run", "--methods", "idinvert", "--set", "lambda_dom=2"], 2, "expected METHOD.PARAM=VALUE"),
    (["run", "--methods", "idinvert", "--set", "idinvert.lambda_dmo=2"], 2, "did you mean 'lambda_dom'"),
    (["run", "--methods", "idinvert", "--set", "idinvert.lambda_dom=abc"], 2, "'abc' is not a valid float"),
    (["run", "--methods", "idinvert", "--set", "image2stylegan.iters=2"], 2, "not among the selected methods"),
    (["run", "--methods", "idinvert", "--set", "nosuch.x=1"], 2, "unknown method 'nosuch'"),
    (["run", "--methods", "idinvert", "--set", "idinvert.lambda_dom=inf"], 2, "'inf' is not a finite number"),
    (["run", "--methods", "idinvert", "--set", "idinvert.lambda_dom=-1"], 2, "lambda_dom must be >= 0"),
    (["run", "--methods", "idinvert", "--set", "idinvert.lambda_vgg=nan"], 2, "'nan' is not a finite number"),
    (["run", "--methods", "idinvert", "--set", "idinvert.lr=0"], 2, "idinvert.lr must be > 0"),
    (["run", "--methods", "idinvert", "--set", "idinvert.iters=0"], 2, "idinvert.iters=0: a run needs"),
    (["run", "--methods", "idinvert", "--set", "idinvert.iters=1.5"], 2, "'1.5' is not a valid int"),
    (["run", "--methods", "idinvert", "--set", "idinvert.init=bogus"], 2, "idinvert.init must be one of"),
    # numbers and devices
    (["run", "--methods", "encoder", "--limit", "0"], 2, "--limit must be at least 1, got 0"),
    (["run", "--methods", "encoder", "--batch-size", "-1"], 2, "--batch-size must be at least 1"),
    (["run", "--methods", "encoder", "--threads", "0"], 2, "--threads must be at least 1"),
    (["run", "--methods", "encoder", "--limit", "abc"], 2, "argument --limit: invalid int value: 'abc'"),
    (["run", "--methods", "encoder", "--seed", "99999999999999999999"], 2, "--seed must be an integer in"),
    (["run", "--methods", "encoder", "--seed", "-1"], 2, "--seed must be an integer in [0, 4294967295]"),
    (["run", "--methods", "encoder", "--device", "tpu"], 2, "--device 'tpu'"),
    (["run", "--methods", "encoder", "--device", "cuda:x"], 2, "--device 'cuda:x'"),
    pytest.param(["run", "--methods", "encoder", "--device", "cuda"], 2, "CUDA is not available", marks=NO_CUDA),
    # bundles, folders, files
    (["run", "--methods", "encoder", "--bundle", "nosuch"], 2, "--bundle: unknown bundle 'nosuch'"),
    (["run", "--methods", "encoder", "--bundle", "synthetic-face"], 2, "did you mean 'synthetic-faces'"),
    (["run", "--methods", "encoder", "--results", "{file.txt}"], 2, "--results {file.txt}: is a file"),
    (["run", "--methods", "encoder", "--results", "{file.txt}/sub"], 2, "lies under {file.txt}, which is a file"),
    (["run", "--methods", "encoder", "--data", "{nothing}"], 2, "--data {nothing}: no such folder"),
    (["run", "--methods", "encoder", "--data", "{file.txt}"], 2, "--data {file.txt}: is a file, not a folder"),
    (["run", "--methods", "encoder", "--data", "{empty}"], 2, "no readable image in folder"),
    (["run", "--methods", "encoder", "--data", "gsamples:1"], 2, "--data: gsamples:1 is not a known-answer spec"),
    (["run", "--methods", "encoder", "--data", "gsamples:ten"], 2, "expected gsamples:N or gsamples:N:S"),
    (["run", "--methods", "encoder", "--data", "{junk}"], 2, "1 file(s) skipped as unreadable"),
    (["run", "--methods", "encoder", "--data", "{results}"], 2, "is a results folder written by the benchmark"),
    (["run", "--methods", "encoder", "--labels", "{header.csv}"], 2, "--labels applies to --data images"),
    (["run", "--methods", "encoder", "--data", "{data}", "--labels", "{nothing}"], 2, "--labels {nothing}: no such file"),
    (["run", "--methods", "encoder", "--data", "{data}", "--labels", "{binary.csv}"], 2,
     "--labels: labels CSV {binary.csv} is not UTF-8 text"),
    (["run", "--methods", "encoder", "--data", "{data}", "--labels", "{header.csv}"], 2, "header must be `file,"),
    (["run", "--methods", "encoder", "--data", "{data}", "--labels", "{value.csv}"], 2, "value must be 0 or 1, got '2'"),
    (["run", "--methods", "encoder", "--data", "{data}", "--labels", "{missing_row.csv}"], 2, "has no row for 1 image"),
    (["run", "--methods", "encoder", "--boundaries", "{nothing}"], 2, "--boundaries {nothing}: no such folder"),
    (["run", "--methods", "encoder", "--weights-dir", "{file.txt}"], 2, "--weights-dir {file.txt}: is a file"),
    (["run", "--methods", "encoder", "--bogus-flag"], 2, "unrecognized arguments: --bogus-flag"),
    # issue 27: what a new user still tripped over
    (["run", "--methods", "encoder", "--data", "{bad-utf8}"], 2, "the path is not valid UTF-8 text"),
    (["run", "--methods", "encoder", "--results", "{bad-utf8}/res"], 2, "the path is not valid UTF-8 text"),
    (["run", "--methods", "encoder", "--data", "{long}"], 2, "the path is too long"),
    (["run", "--methods", "encoder", "--results", "{very-long}"], 2, "the path is too long (5"),
    (["run", "--methods", "encoder", "--threads", "99999"], 2, "--threads must be between 1 and"),
    (["run", "--methods", "encoder", "--limit", "99999999999999999999999"], 2, "the embedded test split has"),
    (["run", "--methods", "idinvert", "--set", "idinvert.lr=1e10"], 2, "idinvert.lr must be > 0 and at most 1"),
    (["run", "--methods", "pti", "--set", "pti.tuning_lr=5"], 2, "pti.tuning_lr must be > 0 and at most 1"),
    (["run", "--methods", "encoder", "--data", "{data}", "--labels", "{upper.csv}"], 2,
     "column 'AGE' names no attribute of this run; did you mean 'age'?"),
    (["run", "--methods", "encoder", "--data", "{data}", "--labels", "{bogus.csv}"], 2,
     "column 'bogus' names no attribute of this run; known attributes: age, gender"),
    (["run", "--methods", ","], 2, "--methods ',': names no method"),
    (["run", "--methods", "encoder", "--seeds", ","], 2, "--seeds is empty"),
    (["run", "--methods", "encoder", "--seeds", "0,,1"], 2, "--seeds '0,,1': item 2 is empty"),
    (["ablate", "lambda_dom", "--values", "1,,2"], 2, "--values '1,,2': item 2 is empty"),
    (["zoo", "train", "--threads", "99999"], 2, "--threads must be between 1 and"),
    # ablate
    (["ablate", "no_such_param", "--methods", "idinvert", "--values", "1"], 2, "no selected method has a hyperparameter"),
    (["ablate", "lambda_dom", "--values", ","], 2, "--values is empty"),
    (["ablate", "lambda_dom", "--values", "1,inf"], 2, "'inf' is not a finite number"),
    (["ablate", "lambda_dom", "--values", "1,abc"], 2, "'abc' is not a valid float"),
    (["ablate", "iters", "--methods", "idinvert"], 2, "give the values to sweep with --values"),
    (["ablate", "iters", "--methods", "idinvert", "--values", "0,10"], 2, "idinvert.iters=0"),
    # reading results
    (["table", "--format", "xml", "--results", "{results}"], 2, "invalid choice: 'xml'"),
    (["table", "--run", "nosuch", "--results", "{results}"], 2, "--run 'nosuch': no such run"),
    (["table", "--results", "{file.txt}"], 2, "--results {file.txt}: is a file"),
    (["report", "--results", "{results}", "--out", "{empty}"], 2, "--out {empty}: is a folder"),
    (["report", "--results", "{results}", "--out", "{file.txt}/r.html"], 2, "--out {file.txt}/r.html: lies under"),
    # other commands
    (["zoo", "train", "--target", "bogus"], 2, "unknown target(s) bogus"),
    (["zoo", "train", "--work-dir", "{file.txt}"], 2, "--work-dir {file.txt}: is a file, not a folder"),
    (["zoo", "train", "--device", "tpu"], 2, "--device 'tpu'"),
    (["zoo", "train", "--target", "gan", "--gan-kimg", "0"], 2, "--gan-kimg must be > 0"),
    (["zoo", "train", "--target", "gan", "--gan-kimg", "700", "--gan-init-from", "{empty}"], 2,
     "--gan-init-from {empty}: no generator.json there"),
    (["domain", "preview", "--n", "0"], 2, "--n must be at least 1"),
    (["domain", "preview", "--out", "{file.txt}/p.png"], 2, "lies under {file.txt}, which is a file"),
    (["nosuchcommand"], 2, "invalid choice: 'nosuchcommand'"),
    # the environment: exit 1
    (["table", "--results", "{nothing}"], 1, "no results in {nothing}/ yet"),
    (["report", "--results", "{nothing}"], 1, "no results in {nothing}/ yet"),
    (["report", "--results", "{empty}"], 1, "no results in {empty}/ yet"),
    # the README's own form for a StyleGAN2 checkpoint gets as far as loading it (vgg16.pth is missing here)
    (["run", "--methods", "mse-optim", "--bundle", "stylegan2", "--weights-dir", "{ckpt.pt}"], 1,
     "missing weight file {tmp}/vgg16.pth"),
    (["table", "--results", "{notdb}"], 1, "{notdb}/bench.sqlite is not a usable results database"),
    (["report", "--results", "{notdb}"], 1, "mv {notdb}/bench.sqlite {notdb}/bench.sqlite.damaged"),
    (["run", "--methods", "encoder", "--results", "{notdb}"], 1, "is damaged"),
    (["table", "--results", "{future}"], 1, f"has results schema version {SCHEMA_VERSION + 1}"),
    (["run", "--methods", "encoder", "--bundle", "styleganinv-ffhq256", "--weights-dir", "{weights}"], 1,
     "styleganinv_ffhq256_generator.pth"),
]


def _fill(text: str, w: dict[str, str]) -> str:
    for name, path in w.items():
        text = text.replace("{" + name + "}", path)
    return text


def _argv(argv: list[str], w: dict[str, str]) -> list[str]:
    argv = [_fill(a, w) for a in argv]
    if argv[0] in ("run", "ablate"):
        argv += ["--no-report", "--no-semantic"]
        if "--bundle" not in argv:
            argv += TINY
        if "--results" not in argv:
            argv += ["--results", w["tmp"] + "/out"]
    return argv


def test_the_table_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("argv, code, fragment", CASES)
def test_bad_input_gives_one_error_line(w, capsys, argv, code, fragment):
    try:
        got = main(_argv(argv, w))
    except SystemExit as exc:  # argparse's own errors exit from inside parse_args
        got = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("bench: error:")]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert got == code, err
    assert _fill(fragment, w) in lines[0], lines[0]
    assert not Path(w["tmp"], "out", "bench.sqlite").exists(), "a refused command must not start a run"


def test_a_bug_still_shows_its_traceback(monkeypatch, capsys):
    """Anything that is not a user's error is not dressed up as one."""
    import bench.cli as cli

    def broken(args):
        raise ValueError("an internal invariant broke")

    monkeypatch.setitem(cli.COMMANDS, "ls", broken)
    with pytest.raises(ValueError, match="internal invariant"):
        main(["ls"])
