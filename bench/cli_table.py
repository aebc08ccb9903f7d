"""The command line as one table: each ``bench`` subcommand with its help and options, the option groups
several commands share declared once, and the builder that turns the table into argparse parsers.

``bench.cli`` builds the ``bench`` parser from it and maps each command to its handler; ``diffuse`` and
``perf`` parse the rest of their line themselves (``bench.tools``), with parsers built here from the same
table. The table is data only (argparse keywords verbatim), so ``bench --help`` imports nothing heavy.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from bench import defaults
from bench.train_own import PART_NAMES

__all__ = ["Opt", "Group", "Command", "opt", "TABLE", "command", "add_commands", "standalone_parser", "parser_of"]


@dataclasses.dataclass(frozen=True)
class Opt:
    """One ``add_argument(*flags, **kwargs)`` call."""
    flags: tuple[str, ...]
    kwargs: dict[str, Any]


    def but(self, **kwargs: Any) -> "Opt":
        """The same option with some keywords changed (a shared option's own help in one command)."""
        return Opt(self.flags, {**self.kwargs, **kwargs})


def opt(*flags: str, **kwargs: Any) -> Opt:
    return Opt(flags, kwargs)


@dataclasses.dataclass(frozen=True)
class Group:
    """Options shown under their own heading (``title``), or mutually exclusive ones (``exclusive``)."""
    options: tuple[Opt, ...]
    title: str | None = None
    exclusive: bool = False


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its one-line ``help`` in the listing, its options (and option groups) in order, its
    own subcommands (``dest`` names the chosen one), defaults to set, and whether it parses its own
    arguments (``own_parser``: the listing names it, its module's parser reads the rest of the line)."""
    name: str
    help: str
    options: tuple[Opt | Group, ...] = ()
    subcommands: tuple["Command", ...] = ()
    dest: str | None = None
    set_defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    description: str | None = None
    own_parser: bool = False


# -- option groups that several commands share --------------------------------------------------------

STORE = opt("--results", type=Path, default=Path(defaults.RESULTS_DIR))   # where results are stored
JSON = opt("--json", action="store_true")
WEIGHTS_DIR = opt("--weights-dir", type=Path, default=None)
DEVICE = opt("--device", default=defaults.DEVICE)
OUT = opt("--out", type=Path, default=None)
THREADS = opt("--threads", type=int, default=None)

RUN_OPTIONS = (  # bench run and bench ablate
    opt("--methods", default=defaults.METHODS,
        help="'all', a method name, a comma list, or a glob such as 'idinvert*' (default: %(default)s)"),
    opt("--bundle", default=defaults.BUNDLE,
        help="model bundle: synthetic-faces (embedded), styleganinv-ffhq256, stylegan2, e4e-ffhq, "
             "psp-ffhq, restyle-psp-ffhq, restyle-e4e-ffhq (default: %(default)s)"),
    WEIGHTS_DIR.but(
        help="folder holding a real bundle's weight files, or the checkpoint file itself (stylegan2, "
             "the e4e / pSp / ReStyle releases) (default: $BENCH_HOME/weights)"),
    opt("--data", type=Path, default=None,
        help="folder of test images, or gsamples:N[:S] for N of G's own samples with their true "
             "codes (the known-answer set); default: the bundle's own test split"),
    opt("--labels", type=Path, default=None,
        help="CSV 'file,<attr>,...' with 0/1 ground-truth attributes for --data images"),
    opt("--boundaries", type=Path, default=None, help="folder of official InterFaceGAN/idinvert boundary .npy files"),
    opt("--limit", type=int, default=None,
        help=f"number of test images (default: {defaults.LIMIT} on the embedded domain, all of --data)"),
    opt("--batch-size", type=int, default=None,
        help=f"images per batch (default: {defaults.BATCH_SIZE}, or the bundle's own default for "
             "real-size networks, e.g. 8 on a CPU at 256 px)"),
    opt("--seed", type=int, default=defaults.SEED, help="seed (default: %(default)s)"),
    DEVICE.but(help="cpu, cuda or cuda:N (default: %(default)s)"),
    THREADS.but(
        help="torch CPU threads (default: torch's own choice; use 1 on a busy machine, where "
             "spinning OpenMP threads can slow small models down many times)"),
    STORE.but(help="results directory (default: %(default)s)"),
    opt("--set", dest="sets", action="append", default=[], metavar="METHOD.PARAM=VALUE",
        help="override a method hyperparameter, e.g. --set idinvert.lambda_dom=5 (repeatable)"),
    opt("--budget", choices=("own", "full"), default="own",
        help="own (default): each method at its own paper's budget, a long one on its documented "
             "image subset (max_images); full: every method on every image"),
    opt("--seeds", default=None, metavar="S1,S2,...",
        help="run everything once per seed (e.g. 0,1,2: the claims' intervals then span seeds)"),
    opt("--fresh", action="store_true", help="recompute runs that are already complete instead of reusing them"),
    opt("--no-semantic", action="store_true",
        help="skip boundaries, attribute AP, interpolation and manipulation metrics"),
    opt("--no-report", action="store_true", help="do not rewrite report.html at the end"),
    opt("--speed", choices=("auto", "eager", "compile"), default="auto",
        help="how optimisation methods run their networks: auto (default): the best measured on this "
             "machine (torch.compile and bf16 autocast only where faster and within tolerance; "
             "measured once for a long run, cached in RESULTS/cache/speed.json); eager; compile"),
    opt("--keep-tuned", action="store_true",
        help="keep the per-image tuned generator weights of methods that tune G (pti) under "
             "RESULTS/runs/<run id>/tuned/ (default: deleted when the run completes)"),
)



# -- the commands, in the order ``bench --help`` lists them -----------------------------------------------

_ZOO_TRAIN = (
    opt("--target", default="all",
        help="all, or a comma list of: classifier, judge, gan, conventional-encoder, domain-encoder, "
             "e4e-encoder, restyle-encoder, card"),
    opt("--work-dir", type=Path, default=Path("zoo-work"),
        help="checkpoints and logs; rerunning resumes from here (default: %(default)s)"),
    OUT.but(help="where the shipped weights go (default: the package's idinvert/weights/synthetic-faces)"),
    DEVICE,
    opt("--max-minutes", type=float, default=None,
        help="stop the GAN and the plateau-trained encoders after this long in this sitting "
             "(checkpointed and exported, the card says so); rerun to resume"),
    opt("--gan-kimg", type=float, default=None,
        help="train the GAN to this many kimg in all (default: the recipe's total_kimg); raising "
             "it extends a run in --work-dir, which resumes"),
    opt("--gan-init-from", type=Path, default=None,
        help="a directory of exported GAN weights (generator.pt, generator.json, discriminator.pt; "
             "e.g. idinvert/weights/synthetic-faces) to extend when --work-dir has no GAN checkpoint: "
             "a warm start (the EMA G, fresh Adam moments; the cards say so), since a clone ships no "
             "checkpoint; needs --gan-kimg above the weights' own kimg"),
    opt("--carry-dir", type=Path, default=None,
        help="a small folder (<= 15 MB) the GAN mirrors its resumable state into at every "
             "checkpoint; keep it in git (e.g. training-state/) and an empty --work-dir on "
             "another machine resumes from it"),
    THREADS.but(help="torch CPU threads (default: the GAN's recipe setting, 1, and torch's choice "
                     "for the rest)"),
)

_TRAIN = (  # defaults: idinvert.training.own_generator.TrainSettings
    opt("--bundle", required=True,
        help="the generator's bundle: stylegan2 (a rosinality .pt via --weights-dir), styleganinv-ffhq256, "
             "synthetic-faces, tiny-random"),
    WEIGHTS_DIR.but(help="the bundle's weights (file or folder)"),
    opt("--data", required=True, help="folder:DIR (or DIR) of RGB training images at G's resolution"),
    opt("--out", type=Path, required=True, help="the bundle directory to write (rerun: resumes)"),
    opt("--parts", default=",".join(PART_NAMES), help="comma list of %(default)s"),
    opt("--labels", type=Path, default=None,
        help="CSV 'file,<attr>,...' of 0/1 labels for the folder's images: an attribute classifier is "
             "trained first (the boundaries' labeller, and F's stand-in without VGG16)"),
    opt("--steps", type=int, default=None, help="steps per part (default 2000; plateau-stop before)"),
    opt("--batch-size", type=int, default=None, help="global batch over all processes (default 16)"),
    opt("--val-images", type=int, default=None, help="images held out for validation (default 64)"),
    opt("--val-every", type=int, default=None, help="validate every N steps (default 100)"),
    opt("--plateau-window", type=int, default=None, help="plateau window in steps (default 500)"),
    opt("--checkpoint-every", type=int, default=None, help="checkpoint every N steps (default 50)"),
    opt("--log-every", type=int, default=None, help="one loss-log row per N steps (default 10)"),
    opt("--max-minutes", type=float, default=None,
        help="stop this sitting after this long (checkpointed; rerun the same command to resume)"),
    opt("--vgg16", type=Path, default=None,
        help="the official idinvert vgg16.pth for the perceptual term (default: beside the generator's "
             "weights, or $BENCH_HOME/weights)"),
    DEVICE.but(help="cpu, cuda (under torchrun: each process its LOCAL_RANK GPU)"),
    opt("--amp", action="store_true", help="bf16 autocast on CUDA"),
    THREADS.but(help="torch CPU threads per process"),
    opt("--quiet", action="store_true", help="no progress bars"),
)

_DIFFUSE = (
    opt("--target", type=Path, required=True, help="image whose masked region is diffused"),
    opt("--context", type=Path, required=True, action="append", help="image to diffuse into (repeat for several)"),
    Group((opt("--mask", type=Path, default=None,
               help="mask image (white = take from the target), any size; resized to the model"),
           opt("--box", default=None,
               help="x0,y0,x1,y1 in pixels of the target image (or fractions of its size when all "
                    "are <= 1); default: the official centre crop (110 px centred at (125, 145) "
                    "of 256 px, scaled)")), exclusive=True),
    opt("--bundle", default=defaults.BUNDLE, help="model bundle (default: %(default)s)"),
    WEIGHTS_DIR.but(help="where the bundle's weight files are"),
    opt("--iters", type=int, default=100, help="optimisation steps (default: %(default)s)"),
    opt("--lr", type=float, default=0.01, help="Adam learning rate (default: %(default)s)"),
    opt("--lambda-vgg", type=float, default=None,
        help="weight of the masked perceptual loss (default: the bundle's, as the methods use)"),
    opt("--init", choices=("encoder", "mean"), default="encoder",
        help="start code: the encoder's code of the composite (official) or the mean w"),
    DEVICE,
    opt("--seed", type=int, default=defaults.SEED),
    OUT.but(help="output PNG (default: results/diffusion/<target>_TO_<context>.png)"),
)

_PERF = (
    opt("--bundle", default=defaults.BUNDLE, help="bundle name (default: %(default)s)"),
    WEIGHTS_DIR.but(help="where the bundle's files are"),
    opt("--tiny", action="store_true", help="use a random tiny bundle (plumbing check; numbers mean little)"),
    DEVICE.but(help="cpu, cuda, cuda:1, ... (default: %(default)s)"),
    opt("--images", type=int, default=None,
        help=f"images inverted each way (default: {defaults.PERF_IMAGES}; with --variants "
             f"{defaults.PERF_VARIANT_IMAGES}, image2stylegan's batch in the default run)"),
    opt("--method", default="idinvert",
        help="a registered optimisation method with an iters parameter (default: %(default)s)"),
    opt("--iters", type=int, default=defaults.PERF_ITERS,
        help="optimisation iterations (default: %(default)s, idinvert's own)"),
    THREADS.but(help="torch CPU threads (default: torch's)"),
    opt("--peak-size", type=int, default=None,
        help="n of the n x n matmul for the peak (default: 2048 on CPU, 8192 on GPU)"),
    opt("--rounds", type=int, default=3,
        help="alternations of the with/without-milestones timing (default: %(default)s)"),
    opt("--seed", type=int, default=defaults.SEED),
    OUT.but(help="write the results as JSON here"),
    Group((opt("--variants", action="store_true",
               help="time each optimisation method's loop per variant instead, print the ratios, and cache "
                    "them for bench run"),
           opt("--methods", default=None, help="comma list (default: image2stylegan,idinvert,mse-optim,optim-w)"),
           opt("--steps", type=int, default=5, help="Adam steps per timed call (default: %(default)s)"),
           opt("--no-processes", dest="processes", action="store_false", help="skip the 2-processes-of-1-thread row"),
           opt("--all-variants", action="store_true", help="also compiled bf16 on a CPU without bf16 instructions"),
           STORE.but(help="results folder whose cache/speed.json bench run reads (default: %(default)s)"),
           opt("--quiet", action="store_true", help="no progress lines")),
          title="--variants: eager vs compiled, fp32 vs bf16, threads (bench.tools.perf_variants)"),
)

TABLE = (
    Command("ls", "list methods, metrics and bundles", (JSON.but(help="machine-readable output"),)),
    Command("run", "invert the test set with the chosen methods and store every metric", RUN_OPTIONS),
    Command("ablate", "sweep one hyperparameter (default: lambda_dom of idinvert)",
            (opt("param", help="hyperparameter name, e.g. lambda_dom or iters"),
             opt("--values", default=None, help="comma-separated values (default for lambda_dom: 0,0.5,1,2,5,10)"),
             *RUN_OPTIONS), set_defaults={"methods": None}),
    Command("report", "write RESULTS/report.html from the store",
            (STORE, OUT.but(help="output file (default: RESULTS/report.html)"))),
    Command("claims", "the paper's claims as verdicts with 95%% intervals (issue 13)",
            (STORE, opt("--format", choices=("md", "json"), default="md"),
             opt("--n-boot", type=int, default=2000, help="bootstrap resamples (default: %(default)s)"),
             opt("--budget", choices=("most", "own", "full"), default="most",
                 help="which of a method's runs each claim uses when runs differ only in their image budget: "
                      "most (default: the run on the most images), own (the default run), full "
                      "(the --budget full run)"),
             opt("--run", dest="run_ids", action="append", default=[], metavar="RUN_ID",
                 help="use this run for its method's arms (repeatable; run ids: 'bench table --format json')"))),
    Command("table", "print the results table",
            (STORE, opt("--format", choices=("md", "csv", "json", "latex"), default="md"),
             opt("--run", dest="run_id", default=None, help="only this run id (long format)"))),
    Command("doctor", "which optional weights are present, and where missing ones go", (WEIGHTS_DIR, JSON)),
    Command("zoo", "the embedded model zoo", dest="zoo_command", subcommands=(
        Command("train", "rebuild the embedded synthetic-faces models from scratch", _ZOO_TRAIN),)),
    Command("train", "train the encoders for your own generator on an image folder (torchrun-able)", _TRAIN),
    Command("domain", "the synthetic-faces domain", dest="domain_command", subcommands=(
        Command("preview", "save a labelled grid of rendered samples",
                (opt("--out", type=Path, default=Path("results/domain-preview.png")),
                 opt("--n", type=int, default=64), opt("--seed", type=int, default=0))),)),
    Command("diffuse", "semantic diffusion (paper Fig. 8); see 'bench diffuse --help'", _DIFFUSE,
            own_parser=True,
            description="Semantic diffusion (paper Fig. 8): paste the target's masked region into each "
                        "context image and invert the composite with the loss restricted to the mask "
                        "(encoder start, no encoder regulariser), so the generator blends it in."),
    Command("perf", "batched vs one-at-a-time inversion throughput and GFLOP/s", _PERF, own_parser=True),
)


def command(name: str) -> Command:
    return next(c for c in TABLE if c.name == name)


# -- the builder ---------------------------------------------------------------------------------------

def _add_options(parser: argparse.ArgumentParser, options: tuple[Opt | Group, ...]) -> None:
    for item in options:
        if isinstance(item, Opt):
            parser.add_argument(*item.flags, **item.kwargs)
            continue
        group = (parser.add_mutually_exclusive_group() if item.exclusive
                 else parser.add_argument_group(item.title))
        for o in item.options:
            group.add_argument(*o.flags, **o.kwargs)


def add_commands(parser: argparse.ArgumentParser, commands: tuple[Command, ...], dest: str,
                 metavar: str) -> None:
    """Add ``commands`` as ``parser``'s required subcommands (the chosen one's name in ``dest``); a
    command that parses its own arguments is listed with its help alone."""
    sub = parser.add_subparsers(dest=dest, metavar=metavar)
    sub.required = True
    for c in commands:
        if c.own_parser:
            sub.add_parser(c.name, help=c.help, add_help=False)
            continue
        p = sub.add_parser(c.name, help=c.help)
        _add_options(p, c.options)
        if c.subcommands:
            add_commands(p, c.subcommands, c.dest, c.dest.upper())
        if c.set_defaults:
            p.set_defaults(**c.set_defaults)


def standalone_parser(name: str, description: str | None = None) -> argparse.ArgumentParser:
    """The parser of a command that reads its own arguments (``bench diffuse``, ``bench perf``)."""
    c = command(name)
    return parser_of(f"bench {name}", c.options, description or c.description)


def parser_of(prog: str, options: tuple[Opt | Group, ...], description: str | None) -> argparse.ArgumentParser:
    """A plain argparse parser of ``options`` (also for the ``python -m bench.tools.*`` timers)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    _add_options(parser, options)
    return parser
