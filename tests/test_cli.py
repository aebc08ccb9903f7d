"""The command-line surface: help for every command, clear usage errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from bench.cli import main, parse_sets, UsageError

COMMANDS = ["ls", "run", "ablate", "report", "table", "doctor", "zoo", "domain"]


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS + ["diffuse", "perf"]:
        assert command in out


def test_unknown_method_exits_2_with_suggestion():
    proc = _run("run", "--methods", "idinvrt", "--no-report")
    assert proc.returncode == 2
    assert "unknown method 'idinvrt'" in proc.stderr and "did you mean 'idinvert'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_glob_matching_nothing_exits_2(capsys):
    assert main(["run", "--methods", "nosuch*", "--no-report"]) == 2
    assert "nosuch*" in capsys.readouterr().err


@pytest.mark.parametrize("bad, message", [
    ("idinvert.lambda_dom", "expected METHOD.PARAM=VALUE"),
    ("lambda_dom=2", "expected METHOD.PARAM=VALUE"),
    ("idinvert.lambda_dmo=2", "did you mean 'lambda_dom'"),
    ("idinvert.lambda_dom=abc", "not a valid float"),
    ("image2stylegan.iters=2", "not among the selected methods"),
])
def test_bad_set_exits_2(bad, message, capsys):
    assert main(["run", "--methods", "idinvert", "--set", bad, "--no-report"]) == 2
    assert message in capsys.readouterr().err


def test_parse_sets():
    assert parse_sets(["idinvert.lambda_dom=5", "idinvert.iters=10"]) == {
        "idinvert": {"lambda_dom": "5", "iters": "10"}}
    with pytest.raises(UsageError):
        parse_sets(["nodot=1"])


def test_ablate_refuses_unknown_parameter_listing_known_ones(capsys):
    assert main(["ablate", "no_such_param", "--methods", "idinvert", "--values", "1,2"]) == 2
    err = capsys.readouterr().err
    assert "no_such_param" in err and "lambda_dom" in err


def test_nonpositive_limit_is_refused(capsys):
    assert main(["run", "--methods", "encoder", "--limit", "0", "--no-report"]) == 2
    assert "--limit" in capsys.readouterr().err


def test_ls_json_is_valid_and_complete():
    proc = _run("ls", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    names = {m["name"] for m in info["methods"]}
    assert {"encoder", "image2stylegan", "mse-optim", "optim-w", "idinvert-encoder", "idinvert"} <= names
    idinvert = next(m for m in info["methods"] if m["name"] == "idinvert")
    assert idinvert["hyperparameters"]["lambda_dom"] == 2.0
    metrics = {m["name"]: m for m in info["metrics"]}
    assert metrics["mse"]["direction"] == "lower" and metrics["psnr"]["direction"] == "higher"
    assert "synthetic-faces" in {b["name"] for b in info["bundles"]}


def test_table_without_results_says_so(tmp_path, capsys):
    assert main(["table", "--results", str(tmp_path / "none")]) == 1
    assert "no results" in capsys.readouterr().err
