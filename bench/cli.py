"""Command-line interface: ``python -m bench <command>`` (also installed as ``bench``). The commands and
their options are one table (``bench.cli_table``); this module checks the parsed values and runs each
command's handler (``COMMANDS``).

Every failure a user can cause is one line ``bench: error: ...`` naming the file, parameter or value:
exit code 2 for bad usage (unknown method or bundle, bad ``--set``, a bad flag value or input file), 1
for the environment (missing weights, disk full, no permission, a damaged store), never a traceback.
Those errors are raised as the classes of ``bench.errors`` where the input is checked; any other
exception is a bug and shows its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from bench import defaults
from bench.cli_table import TABLE, add_commands, command
from bench.errors import (BenchError, UsageError, UserError, check_device, check_output_dir, check_path_text,
                          check_seed, check_threads)

__all__ = ["main", "build_parser", "parse_sets", "UsageError", "BenchError"]


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one ``bench: error:`` line (exit 2) like every other error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"bench: error: {self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``bench`` parser, built from the command table (``bench.cli_table``)."""
    parser = _Parser(
        prog="bench", description="idinvert-bench: a benchmark harness for GAN inversion methods.")
    add_commands(parser, TABLE, "command", "COMMAND")
    return parser


# -- commands -------------------------------------------------------------------------------------------

def parse_sets(items: Sequence[str], method_names: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
    """``["idinvert.lambda_dom=5"]`` -> ``{"idinvert": {"lambda_dom": "5"}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, param = key.partition(".")
        if not sep or not dot or not method or not param:
            raise UsageError(f"--set {item!r}: expected METHOD.PARAM=VALUE, e.g. idinvert.lambda_dom=5")
        out.setdefault(method.strip(), {})[param.strip()] = value.strip()
    return out


def _validate_overrides(method_names: Sequence[str], overrides: dict[str, dict[str, str]]) -> None:
    from methods import registry

    for method, params in overrides.items():
        try:
            registry.get(method)
        except registry.UnknownName as exc:
            raise UsageError(f"--set: {exc}") from None
        if method not in method_names:
            raise UsageError(f"--set names method {method!r}, which is not among the selected methods "
                             f"({', '.join(method_names)})")
        try:
            _check_budget(registry.build(method, params))
        except registry.BadParameter as exc:
            raise UsageError(f"--set: {exc}") from None


# An optimisation method built with zero steps would store its starting codes as a finished run under
# its own name; the library allows it (tests use it to check the start), a benchmark run does not.
_STEP_BUDGETS = ("iters", "steps")


def _check_budget(method) -> None:
    for field in _STEP_BUDGETS:
        value = getattr(method, field, None)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise UsageError(f"{method.name}.{field}={value}: a run needs at least 1 step (for the "
                             "starting codes alone, run the method that gives them, e.g. idinvert-encoder)")


def cmd_ls(args: argparse.Namespace) -> int:
    from bench import catalogue

    info = catalogue.describe()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print("Methods:")
    for m in info["methods"]:
        params = ", ".join(f"{k}={v!r}" for k, v in m["hyperparameters"].items())
        print(f"  {m['name']:<18} needs {'+'.join(m['needs'])}; {params}")
    print("Metrics:")
    for m in info["metrics"]:
        facts = "".join(f"; {k} {m[k]}" for k in ("anytime", "bootstrap") if m[k])
        print(f"  {m['name']:<22} {m['level']:<9} {m['direction']:<6} is better; needs "
              f"{', '.join(m['needs']) or '-'}{facts}")
    print("Bundles:")
    for b in info["bundles"]:
        print(f"  {b['name']:<22} {b['description']}")
    return 0


def _run_options(args: argparse.Namespace, methods_spec: str):
    from bench.runner import RunOptions
    from methods import registry

    try:
        names = registry.resolve(methods_spec)
    except registry.UnknownName as exc:
        raise UsageError(str(exc)) from None
    if not names:
        raise UsageError(f"--methods {methods_spec!r}: names no method; give 'all', a name, a comma list "
                         "or a glob (see 'bench ls')")
    overrides = parse_sets(args.sets)
    if getattr(args, "budget", "own") == "full":  # every image, unless --set says otherwise
        for name in names:
            if "max_images" in registry.get(name).hyperparameters():
                overrides.setdefault(name, {}).setdefault("max_images", "0")
    _validate_overrides(names, overrides)
    for flag in ("limit", "batch_size", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    check_threads(args.threads)
    _check_limit(args.limit, args.data)
    check_seed(args.seed)
    check_device(args.device)
    _check_bundle(args.bundle)
    check_output_dir(args.results)
    from idinvert.domains.generator_samples import is_spec, parse_spec

    known_answer = args.data is not None and is_spec(args.data)
    if known_answer:  # --data gsamples:N[:S], G's own samples with their codes (idinvert.domains.generator_samples)
        try:
            parse_spec(args.data)
        except ValueError as exc:
            raise UsageError(f"--data: {exc}") from None
    for flag, path, kind in (("--data", None if known_answer else args.data, "folder"), ("--labels", args.labels, "file"),
                             ("--boundaries", args.boundaries, "folder"), ("--weights-dir", args.weights_dir,
                                                                           _weights_kind(args.bundle))):
        _check_input_path(flag, path, kind)
    return RunOptions(
        methods=names, bundle=args.bundle, weights_dir=args.weights_dir, data=args.data, labels=args.labels,
        boundaries=args.boundaries, limit=args.limit, batch_size=args.batch_size, seed=args.seed,
        device=args.device, results_dir=args.results, overrides=overrides, fresh=args.fresh,
        semantic=not args.no_semantic, report=not args.no_report, threads=args.threads,
        keep_tuned=args.keep_tuned, speed=args.speed,
    )


def _check_bundle(name: str) -> None:
    import idinvert.bundles  # noqa: F401  (registers the release formats)
    from idinvert.bundles.trained import is_trained_dir
    from idinvert.zoo import BUNDLES, UnknownBundle

    if name not in BUNDLES.names() and not is_trained_dir(name):   # a name, or a directory `bench train` wrote
        raise UsageError(f"--bundle: {UnknownBundle('bundle', name, BUNDLES.names())}")


def _check_limit(limit: int | None, data: Path | None) -> None:
    """The embedded test split is rendered on demand: an unbounded --limit would only fill memory."""
    if limit is not None and data is None and limit > defaults.MAX_LIMIT:
        raise UsageError(f"--limit {limit}: the embedded test split has {defaults.MAX_LIMIT} images; give at "
                         f"most {defaults.MAX_LIMIT}")


def _weights_kind(bundle: str) -> str:
    """What --weights-dir may be for this bundle: a folder, or also the checkpoint file itself."""
    from idinvert.zoo import BUNDLES

    return "file or folder" if bundle in BUNDLES.names() and BUNDLES[bundle].accepts_file else "folder"


def _check_input_path(flag: str, path: Path | None, kind: str) -> None:
    if path is None:
        return
    check_path_text(path, flag)
    if not path.exists():
        raise UsageError(f"{flag} {path}: no such {kind}")
    if kind == "folder" and not path.is_dir():
        raise UsageError(f"{flag} {path}: is a file, not a folder")
    if kind == "file" and not path.is_file():
        raise UsageError(f"{flag} {path}: is not a regular file")


def cmd_run(args: argparse.Namespace) -> int:
    from bench.runner import run_benchmark

    opts = _run_options(args, args.methods)
    seeds = _parse_seeds(getattr(args, "seeds", None))
    if not seeds:
        run_benchmark(opts)
        return 0
    import dataclasses

    for k, seed in enumerate(seeds):
        if not opts.quiet:
            print(f"bench: seed {seed} ({k + 1}/{len(seeds)})")
        run_benchmark(dataclasses.replace(opts, seed=seed, report=opts.report and k == len(seeds) - 1))
    return 0


def split_list(text: str, flag: str) -> list[str]:
    """``"0,1,2"`` -> ``["0", "1", "2"]``; an empty list or an empty item (``1,,2``, ``,``) is refused."""
    items = [t.strip() for t in text.split(",")]
    if not any(items):
        raise UsageError(f"{flag} is empty ({text!r}); give comma-separated values, e.g. 0,1,2")
    if not all(items):
        raise UsageError(f"{flag} {text!r}: item {items.index('') + 1} is empty; give comma-separated "
                         "values, e.g. 0,1,2")
    return items


def _parse_seeds(text: str | None) -> list[int]:
    if text is None:
        return []
    items = split_list(text, "--seeds")
    try:
        seeds = [int(t) for t in items]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    for s in seeds:
        check_seed(s)
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r}: a seed is repeated")
    return seeds


def cmd_claims(args: argparse.Namespace) -> int:
    from bench import claims_store as CS
    from bench.store import Store

    if args.n_boot < 100:
        raise UsageError(f"--n-boot must be at least 100, got {args.n_boot}")
    with Store(args.results, readonly=True) as store:
        for run_id in args.run_ids:
            _check_run_id(store, run_id)
        choice = CS.Choice(args.budget, tuple(args.run_ids))
        results = CS.judge_store(store, n_boot=args.n_boot, choice=choice)
    if args.format == "json":
        print(json.dumps([r.row() for r in results], indent=1, default=str))
    else:
        print(CS.to_markdown(results))
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from bench.runner import run_sweep
    from methods import registry

    spec = args.methods
    if spec is None:
        having = [n for n in registry.names() if args.param in registry.get(n).hyperparameters()]
        if not having:
            raise UsageError(_no_such_param(args.param, registry.names()))
        spec = "idinvert" if "idinvert" in having else ",".join(having)
    opts = _run_options(args, spec)
    having = [n for n in opts.methods if args.param in registry.get(n).hyperparameters()]
    if not having:
        raise UsageError(_no_such_param(args.param, opts.methods))
    if args.values is None:
        if args.param not in defaults.ABLATE_VALUES:
            raise UsageError(f"ablate {args.param}: give the values to sweep with --values V1,V2,...")
        values = [str(v) for v in defaults.ABLATE_VALUES[args.param]]
    else:
        values = split_list(args.values, "--values")
    for name in having:  # type-check every value before any work starts
        for v in values:
            try:
                _check_budget(registry.build(name, {**opts.overrides.get(name, {}), args.param: v}))
            except registry.BadParameter as exc:
                raise UsageError(f"ablate --values: {exc}") from None
    opts.methods = having
    run_sweep(opts, args.param, values, seeds=_parse_seeds(getattr(args, "seeds", None)))
    return 0


def _no_such_param(param: str, method_names: Sequence[str]) -> str:
    from methods import registry

    known = "; ".join(f"{n}: {', '.join(registry.get(n).hyperparameters()) or '(none)'}" for n in method_names)
    return f"no selected method has a hyperparameter {param!r}. Their hyperparameters: {known}"


def _check_results_store(results: Path) -> None:
    """A results folder holding a store, for the commands that only read one (report, table)."""
    check_path_text(results, "--results")
    if results.exists() and not results.is_dir():
        raise UsageError(f"--results {results}: is a file, not a folder")
    if not (results / "bench.sqlite").exists():
        raise BenchError(f"no results in {results}/ yet: run 'python -m bench run' first")


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import build_report

    _check_results_store(args.results)
    if args.out is not None:
        if args.out.is_dir():
            raise UsageError(f"--out {args.out}: is a folder; give the report's file name, e.g. "
                             f"{args.out / 'report.html'}")
        check_output_dir(args.out, "--out", file_target=True)
    path = build_report(args.results, out=args.out)
    print(f"wrote {path}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from bench.store import Store
    from bench.tables import render_table

    _check_results_store(args.results)
    with Store(args.results, readonly=True) as store:
        if args.run_id is not None:
            _check_run_id(store, args.run_id)
        print(render_table(store, fmt=args.format, run_id=args.run_id))
    return 0


def _check_run_id(store, run_id: str) -> None:
    if store.runs(run_id=run_id):
        return
    import difflib

    known = [r["run_id"] for r in store.runs()]
    close = difflib.get_close_matches(run_id, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"--run {run_id!r}: no such run in {store.path}; {hint}"
                     f"'bench table --format json' lists the {len(known)} stored run ids")


def cmd_doctor(args: argparse.Namespace) -> int:
    from bench.tools.doctor import doctor

    return doctor(weights_dir=args.weights_dir, as_json=args.json)


def cmd_zoo(args: argparse.Namespace) -> int:
    from idinvert.training.recipe import TARGETS, train_zoo

    wanted = [t.strip() for t in args.target.split(",") if t.strip()]
    unknown = [t for t in wanted if t != "all" and t not in TARGETS]
    if unknown or not wanted:
        raise UsageError(f"zoo train: unknown target(s) {', '.join(unknown) or '(none)'}; "
                         f"choose all or a comma list of {', '.join(TARGETS)}")
    check_output_dir(args.work_dir, "--work-dir")
    if args.out is not None:
        check_output_dir(args.out, "--out")
    if args.carry_dir is not None:
        check_output_dir(args.carry_dir, "--carry-dir")
    check_device(args.device)
    # the raw list: train_zoo adds "card" itself, and skips it (saying why) when it was not asked for
    # and a part is missing or was trained against an older generator
    from idinvert.training.recipe import ZooRecipe

    recipe = ZooRecipe()
    if args.max_minutes is not None:
        if not args.max_minutes > 0:
            raise UsageError(f"--max-minutes must be > 0, got {args.max_minutes}")
        for part in (recipe.gan, recipe.conventional, recipe.domain):
            part.max_minutes = args.max_minutes
    if args.gan_kimg is not None:
        if not args.gan_kimg > 0:
            raise UsageError(f"--gan-kimg must be > 0, got {args.gan_kimg}")
        recipe.gan.total_kimg = args.gan_kimg
    if args.gan_init_from is not None:
        if not (args.gan_init_from / "generator.json").is_file():
            raise UsageError(f"--gan-init-from {args.gan_init_from}: no generator.json there (need exported "
                             f"generator.pt, generator.json and discriminator.pt)")
        recipe.gan_init_from = str(args.gan_init_from)
    if args.threads is not None:
        check_threads(args.threads)
        import torch

        recipe.gan.threads = args.threads
        torch.set_num_threads(args.threads)
    train_zoo("all" if "all" in wanted else wanted, work_dir=args.work_dir, out_dir=args.out,
              device=args.device, recipe=recipe, carry_dir=args.carry_dir)
    return 0


def cmd_domain(args: argparse.Namespace) -> int:
    from idinvert.domains.preview import save_preview

    if args.n < 1:
        raise UsageError(f"--n must be at least 1, got {args.n}")
    check_seed(args.seed)
    check_output_dir(args.out, "--out", file_target=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_preview(args.out, n=args.n, seed=args.seed)
    print(f"wrote {args.out}")
    return 0


# The handler of each command of the table; a "module:attr" string is imported when its command runs.
# diffuse and perf are handed the rest of the line, which their own parsers (from the table) read.
COMMANDS = {
    "ls": cmd_ls, "run": cmd_run, "ablate": cmd_ablate, "report": cmd_report, "claims": cmd_claims,
    "table": cmd_table, "doctor": cmd_doctor, "zoo": cmd_zoo, "train": "bench.train_own:cmd_train",
    "domain": cmd_domain, "diffuse": "bench.tools.diffuse:main", "perf": "bench.tools.perf:main",
}


def _handler(name: str):
    handler = COMMANDS[name]
    if isinstance(handler, str):
        import importlib

        module, _, attr = handler.partition(":")
        handler = getattr(importlib.import_module(module), attr)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS and command(argv[0]).own_parser:
        return _guarded(lambda: _handler(argv[0])(argv[1:]))
    args = build_parser().parse_args(argv)
    return _guarded(lambda: _handler(args.command)(args))


def _guarded(fn) -> int:
    """Run a command: a user's error is one ``bench: error:`` line (exit 2 usage, 1 environment); a bug
    (any other exception) keeps its traceback (exit 1). BENCH_DEBUG=1 shows tracebacks for all."""
    try:
        return int(fn() or 0)
    except BrokenPipeError:  # `bench table | head`: the reader left; stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("bench: interrupted; everything stored so far is kept, rerun the same command to resume",
              file=sys.stderr)
        return 130
    except Exception as exc:
        code = _user_error_code(exc)
        if code is None or _debug():
            raise
        print(f"bench: error: {_one_line(exc)}", file=sys.stderr)
        return code


def _user_error_code(exc: BaseException) -> int | None:
    """The exit code of an error the user caused (its class carries it: ``idinvert.errors``), 1 for
    what the machine refused (disk full, no permission), or None for a bug."""
    from bench.errors import is_environment_error

    if isinstance(exc, UserError):
        return exc.exit_code
    return 1 if is_environment_error(exc) else None


def _one_line(exc: BaseException) -> str:
    from bench.errors import describe_os_error, is_environment_error

    text = describe_os_error(exc) if is_environment_error(exc) and not isinstance(exc, UserError) else str(exc)
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _debug() -> bool:
    import os

    return os.environ.get("BENCH_DEBUG", "") not in ("", "0")
