"""The command line is one table (bench.cli_table): every command in it has a handler, shared option groups
are declared once and parse alike, and the builder turns a table into argparse parsers."""
import argparse

import pytest

from bench import cli, cli_table
from bench.cli_table import Command, Group, opt


def test_every_command_of_the_table_has_a_handler_and_no_handler_lacks_a_command():
    assert [c.name for c in cli_table.TABLE] == list(cli.COMMANDS)
    for name in cli.COMMANDS:
        assert callable(cli._handler(name)), name


def test_run_and_ablate_share_one_declaration_of_their_options():
    parser = cli.build_parser()
    run = vars(parser.parse_args(["run", "--limit", "3", "--set", "idinvert.iters=2", "--no-report"]))
    ablate = vars(parser.parse_args(["ablate", "iters", "--limit", "3", "--set", "idinvert.iters=2",
                                     "--no-report"]))
    assert {k: v for k, v in ablate.items() if k not in ("command", "param", "values", "methods")} == \
        {k: v for k, v in run.items() if k not in ("command", "methods")}
    assert run["methods"] == "all" and ablate["methods"] is None   # ablate picks its methods itself


def test_the_own_parser_commands_read_their_options_from_the_table():
    from bench.tools import diffuse, perf

    for module, name in ((perf, "perf"), (diffuse, "diffuse")):
        declared = {f for item in cli_table.command(name).options
                    for o in (item.options if isinstance(item, Group) else (item,)) for f in o.flags}
        parsed = {f for a in module.build_parser()._actions for f in a.option_strings} - {"-h", "--help"}
        assert parsed == declared, name


def test_a_table_builds_subcommands_groups_and_exclusive_options():
    toy = (Command("paint", "paint a picture", (
        opt("--size", type=int, default=3),
        Group((opt("--red", action="store_true"), opt("--blue", action="store_true")), exclusive=True)),
        set_defaults={"layer": 1}),
        Command("frame", "frame it", dest="frame_command", subcommands=(
            Command("gild", "gold leaf", (opt("--karat", type=int, default=24),)),)))
    parser = argparse.ArgumentParser(prog="toy")
    cli_table.add_commands(parser, toy, "command", "COMMAND")
    got = parser.parse_args(["paint", "--size", "5", "--red"])
    assert (got.command, got.size, got.red, got.blue, got.layer) == ("paint", 5, True, False, 1)
    got = parser.parse_args(["frame", "gild"])
    assert (got.frame_command, got.karat) == ("gild", 24)
    with pytest.raises(SystemExit):   # the group is exclusive
        parser.parse_args(["paint", "--red", "--blue"])
    with pytest.raises(SystemExit):   # a subcommand is required
        parser.parse_args(["frame"])


def test_a_changed_option_keeps_its_flags_and_other_keywords():
    shared = opt("--device", default="cpu")
    own = shared.but(help="where to run")
    assert own.flags == ("--device",) and own.kwargs == {"default": "cpu", "help": "where to run"}
    assert shared.kwargs == {"default": "cpu"}   # the shared declaration is untouched
