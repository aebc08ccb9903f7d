"""Runs inversion methods over a test set, stores per-image rows as batches finish, then set-level metrics.

Resumable: the run id is a hash of everything that determines the results (method, hyperparameters,
bundle and data fingerprints, image count, seed, code version), so re-running the same command finds the
run and inverts only the images not stored yet. A batch's codes file is written atomically before the
transaction that stores its rows, so a process killed at any point loses at most the batch in flight.

Under ``torchrun`` the images of every round are sharded across ranks; rank 0 is the only process that
touches the store, and it computes the set-level metrics.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from bench import defaults
from bench.errors import UsageError
from bench.leases import new_owner
from bench.store import RunSpec, Store


@dataclass
class RunOptions:
    methods: list[str]
    bundle: str = defaults.BUNDLE
    weights_dir: Path | None = None
    data: Path | None = None
    labels: Path | None = None
    boundaries: Path | None = None
    limit: int | None = None
    batch_size: int | None = None  # None: the bundle's default for the device, else defaults.BATCH_SIZE
    seed: int = defaults.SEED
    device: str = defaults.DEVICE
    results_dir: Path = Path(defaults.RESULTS_DIR)
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    fresh: bool = False
    semantic: bool = True
    report: bool = True
    quiet: bool = False
    threads: int | None = None
    semantic_config: Any = None  # bench.metrics.semantic.SemanticConfig; None: its defaults with this seed
    keep_tuned: bool = False  # keep per-image tuned generators (PTI) under runs/<id>/tuned/
    speed: str = "auto"  # "auto": the measured best on this machine (bench.speed_choice); "eager"; "compile"


# An eager run estimated shorter than this is not worth measuring compiled variants for: compiling costs
# tens of seconds on a 2-core CPU (bench.speed_choice decides for longer runs, by measurement).
MEASURE_ABOVE_S = 300.0


# -- environment ----------------------------------------------------------------------------------------

def code_version() -> str:
    """git commit (with '+dirty' when the tree has changes) of the checkout, else the package version."""
    from idinvert import __version__

    root = Path(__file__).resolve().parents[1]
    if (root / ".git").exists():
        try:
            head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                                  capture_output=True, text=True, timeout=10, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return f"git:{head}{'+dirty' if dirty else ''}"
        except (OSError, subprocess.SubprocessError):
            pass
    return f"pkg:{__version__}"


def resolve_device(name: str) -> torch.device:
    from bench.errors import check_device

    return torch.device(check_device(name))


@dataclass
class Dist:
    """torch.distributed context; a single process is rank 0 of 1."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return cls(rank=dist.get_rank(), world=dist.get_world_size(),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")))

    def broadcast(self, obj: Any) -> Any:
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def resolve_batch_size(requested: int | None, bundle: Any, device: torch.device) -> tuple[int, str | None]:
    """The batch size to run with, and a message when it is not the one asked for.

    A bundle may declare a default per device type (``BundleInfo.default_batch_size``): real-size
    networks, where a batch of ``defaults.BATCH_SIZE`` would need tens of GB for the backward pass (about
    0.35 GB per image at 256 px). ``requested`` None takes that default, else ``defaults.BATCH_SIZE``;
    an explicit size is used as given."""
    if requested is None:
        return bundle.info.batch_size_for(device.type) or defaults.BATCH_SIZE, None
    return requested, None


# -- data -----------------------------------------------------------------------------------------------

def load_dataset(opts: RunOptions, bundle: Any):
    """The test set: ``--data`` folder, or the test split of the bundle's built-in domain."""
    from idinvert.domains.base import ImageSet

    if opts.data is not None and is_known_answer_spec(opts.data):
        return _known_answer_set(opts, bundle)
    if opts.data is not None:
        from idinvert.domains.folder import FolderError, ImageFolder, LabelsError

        import warnings

        try:  # the harness never reads its own output: --results (and any results folder) is left out
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                full: ImageSet = ImageFolder(opts.data, bundle.resolution, labels_csv=opts.labels,
                                             exclude=[opts.results_dir])
        except LabelsError as exc:
            raise UsageError(f"--labels: {exc}") from None
        except FolderError as exc:
            raise UsageError(f"--data: {exc}") from None
        # skipped files are listed once by _start; anything else the folder said is passed on once
        for w in caught:
            if not str(w.message).startswith("ImageFolder: skipping"):
                _warn(opts, str(w.message))
        n = len(full) if opts.limit is None else min(opts.limit, len(full))
        return full, n
    from idinvert.domains import domain_of

    domain = domain_of(bundle)
    if domain is None:
        raise UsageError(bundle.info.needs_data(bundle.name))
    if opts.labels is not None:
        raise UsageError("--labels applies to --data images; the bundle's built-in domain has exact labels already")
    n = opts.limit or defaults.LIMIT
    return domain.split("test", n), n


def _warn(opts: RunOptions, text: str) -> None:
    if opts.quiet:
        import warnings

        warnings.warn(text, stacklevel=3)
    else:
        print(f"bench: WARNING: {text}", file=sys.stderr)


def check_label_columns(dataset: Any, attributes: Sequence[str], labels: Path | None) -> None:
    """Every column of a labels CSV must name an attribute the run can score (the bundle's, or a
    --boundaries file's): a misspelt one would silently leave that attribute without AP."""
    known = list(dict.fromkeys(attributes))
    if labels is None or not known:
        return
    import difflib

    for column in getattr(dataset, "attributes", ()):
        if column not in known:
            lower = {k.lower(): k for k in known}
            close = [lower[column.lower()]] if column.lower() in lower else \
                difflib.get_close_matches(column, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(f"--labels {labels}: column {column!r} names no attribute of this run; {hint}"
                             f"known attributes: {', '.join(known)}")


def is_known_answer_spec(data: Any) -> bool:
    from idinvert.domains.generator_samples import is_spec

    return is_spec(data)


def _known_answer_set(opts: RunOptions, bundle: Any, n: int | None = None):
    """``--data gsamples:N[:S]``: N of G's own samples with their true codes (--limit caps N)."""
    from idinvert.domains.generator_samples import generator_samples, parse_spec

    if opts.labels is not None:
        raise UsageError("--labels applies to --data folders; the known-answer set is labelled by the judge")
    count, seed = parse_spec(opts.data) if opts.data is not None else (n, 0)
    count = count if n is None else n
    count = min(count, opts.limit) if opts.limit else count
    return generator_samples(bundle.generator, count, seed, bundle.fingerprint, tuple(bundle.attributes)), count


# -- the run --------------------------------------------------------------------------------------------

def _start(opts: RunOptions, sweep_id: str | None) -> "_Session":
    """Device, bundle, data and batch size of a harness run, said once; the store and evaluator on rank 0."""
    from bench.evaluation import Evaluator

    device = resolve_device(opts.device)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    dist = Dist.from_env(device)
    if device.type == "cuda" and dist.world > 1:
        device = torch.device("cuda", dist.local_rank)
    torch.manual_seed(opts.seed)
    bundle = _load_bundle(opts, device)
    dataset, n = load_dataset(opts, bundle)
    ids = list(dataset.ids[:n])
    say = (lambda *a: None) if (opts.quiet or not dist.is_main) else print
    boundary_names: list[str] = []
    if opts.semantic and opts.boundaries is not None:  # a bad --boundaries fails now, not after inverting
        from idinvert.official_boundaries import load_boundary_dir

        boundary_names = list(load_boundary_dir(opts.boundaries, bundle.num_layers, bundle.w_dim))
    check_label_columns(dataset, [*getattr(bundle, "attributes", ()), *boundary_names], opts.labels)
    batch_size, batch_note = resolve_batch_size(opts.batch_size, bundle, device)
    if batch_size != opts.batch_size:
        opts = dataclasses.replace(opts, batch_size=batch_size)
    say(f"bench: bundle {bundle.name} ({bundle.resolution}px), data {dataset.name}: {n} images, "
        f"device {device}, {torch.get_num_threads()} threads, batch size {batch_size}"
        + (f", {dist.world} processes" if dist.world > 1 else ""))
    if batch_note:
        say(f"bench: {batch_note}")
    if device.type == "cpu" and bundle.info.cpu_note:
        say(f"bench: note: {bundle.info.cpu_note}")
    if getattr(dataset, "excluded", None):
        say("bench: not reading as input: " + "; ".join(f"{d} (a results folder)" for d in dataset.excluded))
    if getattr(dataset, "skipped", None):
        say(f"bench: skipped {len(dataset.skipped)} unreadable file(s): "
            + "; ".join(f"{f} ({r})" for f, r in dataset.skipped[:5]))
    distorted = getattr(dataset, "distorted", None)
    if distorted and dist.is_main:
        _warn(opts, f"{len(distorted)} image(s) are distorted by the resize to {bundle.resolution}x"
                    f"{bundle.resolution} px, and their numbers measure that: "
                    + "; ".join(f"{f} ({note})" for f, note in distorted[:5]) + (" ..." if len(distorted) > 5 else ""))
    session = _Session(opts, bundle, dataset, n, ids, device, dist, say, sweep_id,
                       store=Store(opts.results_dir) if dist.is_main else None,
                       evaluator=Evaluator(bundle, opts, device, results_dir=opts.results_dir) if dist.is_main
                       else None)
    if dist.is_main:
        session.domain = _check_domain(session)
    return session


@dataclass
class _Session:
    """One harness run: what every method's run shares."""

    opts: RunOptions
    bundle: Any
    dataset: Any
    n: int
    ids: list[str]
    device: torch.device
    dist: Dist
    say: Any
    sweep_id: str | None
    store: Store | None
    evaluator: Any
    version: str = field(default_factory=code_version)
    owner: str = field(default_factory=new_owner)  # this process, in the store's leases (bench.leases)
    domain: Any = None                             # bench.domain_check.DomainCheck of a --data folder
    control_for: str | None = None                 # a known-answer control's run: the data it stands beside


def run_benchmark(opts: RunOptions, *, sweep_id: str | None = None) -> list[str]:
    """Run every selected method; returns the run ids (rank 0) in order."""
    from methods import registry

    started = time.perf_counter()
    session = _start(opts, sweep_id)
    run_ids: list[str] = []
    for name in session.opts.methods:
        method = registry.build(name, session.opts.overrides.get(name))
        missing = [part for part in method.needs if not session.bundle.has(part)]
        if missing:
            session.say(f"bench: skipping {name}: bundle {session.bundle.name} has no {', '.join(missing)}")
            continue
        run_ids.append(_run_method(_for_method(session, method), name, method))
    if session.dist.is_main:
        if session.opts.report and run_ids:
            _write_report(session.opts.results_dir, session.say)
        session.store.close()
        session.say(f"bench: {len(run_ids)} run(s) in {_duration(time.perf_counter() - started)} "
                    f"({os.cpu_count()} CPUs here, {torch.get_num_threads()} torch threads)")
    return run_ids


def _for_method(s: _Session, method: Any) -> _Session:
    """The session a method runs in: a reference that needs known codes (``known_answer``, the "G codes
    (truth)" control) gets the known-answer set of the same size when the data has none, and is
    recorded as the control of the data it stands beside."""
    if not getattr(method, "known_answer", False):
        return s
    if getattr(s.dataset, "true_codes", None) is None:
        dataset, n = _known_answer_set(dataclasses.replace(s.opts, data=None, limit=None), s.bundle, n=s.n)
        s = dataclasses.replace(s, dataset=dataset, n=n, ids=list(dataset.ids), domain=None,
                                control_for=s.dataset.name)
    method.bind_dataset(s.dataset)
    return s


def _begin(s: _Session, name: str, method: Any) -> tuple[str, list[int] | None]:
    """Rank 0: the run's id and its pending images (None: already complete and reused)."""
    spec = RunSpec(method=name, params=method.params(), bundle=s.bundle.name,
                   bundle_fingerprint=s.bundle.fingerprint, dataset=s.dataset.name,
                   dataset_fingerprint=s.dataset.fingerprint, n_images=s.n, seed=s.opts.seed,
                   code_version=s.version)
    run_id, status = s.store.begin_run(
        spec, torch_version=torch.__version__, device=str(s.device), num_threads=torch.get_num_threads(),
        world_size=s.dist.world, sweep_id=s.sweep_id,
        env={"batch_size": s.opts.batch_size, "label_source": s.dataset.label_source,
             "python": sys.version.split()[0], **_method_notes(method, s.bundle),
             **({"domain_check": s.domain.to_json()} if s.domain is not None else {}),
             **({"control_for": s.control_for} if s.control_for else {})})
    if status == "complete" and not s.opts.fresh:
        s.say(f"bench: {name}: run {run_id} is already complete (use --fresh to recompute)")
        return run_id, None
    if status == "complete":  # --fresh: forget the earlier result, keep the run id
        s.store.reset_run(run_id)
    s.store.update_run_env(run_id, device=str(s.device), num_threads=torch.get_num_threads(),
                           world_size=s.dist.world)
    done = s.store.done_image_ids(run_id)
    if done:
        s.say(f"bench: {name}: resuming run {run_id}: {len(done)} of {s.n} images already stored")
    return run_id, [i for i in range(s.n) if s.ids[i] not in done]


def image_subset(method: Any, n: int) -> int:
    """How many of the run's first ``n`` images ``method`` inverts: all, unless it has a ``max_images``
    hyperparameter > 0 (a long-budget protocol on a documented subset, e.g. image2stylegan's 5,000 steps)."""
    limit = getattr(method, "max_images", 0) or 0
    return min(n, int(limit)) if limit > 0 else n


def _method_notes(method: Any, bundle: Any) -> dict[str, Any]:
    """{"notes": [...]} when the method states facts about its run (``method.notes(bundle)``: e.g. PTI's
    memory per image and a budget below the official one); the tables print them under the run."""
    notes = method.notes(bundle) if callable(getattr(method, "notes", None)) else []
    return {"notes": list(notes)} if notes else {}


def _run_method(s: _Session, name: str, method: Any) -> str:
    k = image_subset(method, s.n)
    if k < s.n:
        s.say(f"bench: {name}: the first {k} of {s.n} images (max_images={k}; --budget full for all)")
        s = dataclasses.replace(s, n=k, ids=s.ids[:k])
    run_id, pending = s.dist.broadcast(_begin(s, name, method) if s.dist.is_main else None)
    if pending is None:
        return run_id
    t0 = time.perf_counter()
    if pending:
        here = _invert_pending(s, method, run_id, pending)
        s.say(f"bench: {name}: inverted {here} of the {len(pending)} pending images in this process"
              + ("; another process running the same command inverted the others" if here < len(pending) else ""))
    if s.dist.is_main:
        t1 = time.perf_counter()
        _finish_shared(s, run_id, method)
        t2 = time.perf_counter()
        # wall times of this sitting, so a user sees where a run's minutes go
        s.say(f"bench: {name}: done ({run_id}) in {_duration(t2 - t0)}: inverting {_duration(t1 - t0)}, "
              f"metrics {_duration(t2 - t1)}")
    s.dist.barrier()
    return run_id


def _duration(seconds: float) -> str:
    """12.3 s / 4 min 05 s."""
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _invert_pending(s: _Session, method: Any, run_id: str, pending: list[int]) -> int:
    """Invert the pending images round by round; returns how many were inverted here. Rank 0 leases
    each round's images in the store first (bench.leases), so an identical command running at the same
    time inverts the other images, and waits for them instead of inverting them again."""
    method.prepare(s.bundle)
    bs, dist = s.opts.batch_size, s.dist
    first = s.dataset.load(pending[:bs]).to(s.device)
    warmed = _choose_speed(s, method, run_id, first, len(pending))
    step = bs * dist.world
    bar = tqdm(total=len(pending), desc=method.name, unit="img", disable=not dist.is_main or s.opts.quiet)
    if not bar.disable:  # a long optimisation shows its steps inside the batch (5,000 steps take minutes)
        method.on_step = lambda done, total: bar.set_postfix_str(f"batch: step {done}/{total}")
    remaining = list(pending)
    batch_seconds: float | None = None
    inverted = 0
    try:
        while True:
            claimed = None
            if dist.is_main:
                claimed, remaining = _claim_round(s, run_id, remaining, step, batch_seconds, bar, pending)
            claimed = dist.broadcast(claimed)
            if not claimed:
                break
            inverted += len(claimed)
            mine = claimed[dist.rank * bs:(dist.rank + 1) * bs]
            if mine and len(mine) not in warmed:  # a new shape: compile / warm up untimed, not in the batch
                warmed[len(mine)] = _warm_up(method, s.dataset.load(mine).to(s.device))
            parts = dist.gather(_invert_batch(method, s.dataset, mine, s.device) if mine else None)
            if dist.is_main:
                for p in parts:
                    if p is not None:
                        s.evaluator.store_batch(s.store, run_id, p, s.ids, s.dataset)
                batch_seconds = max(p["seconds"] for p in parts if p is not None)
                _show_progress(bar, s, run_id, pending)
        if dist.is_main:
            s.store.release(run_id, s.owner)
            _show_progress(bar, s, run_id, pending)
    finally:
        method.on_step = None
        bar.close()  # ends the bar's line, so an error below starts on its own line
    return inverted


def _warm_up(method: Any, images: torch.Tensor) -> float:
    """Seconds of the untimed warm-up at this batch shape (a compiled method compiles here)."""
    t0 = time.perf_counter()
    method.warmup(images)
    return time.perf_counter() - t0


def _choose_speed(s: _Session, method: Any, run_id: str, first: torch.Tensor, n_pending: int) -> dict:
    """Set ``method.speed`` (eager / compiled, fp32 / autocast) for this run, warm it up at the first
    batch's shape, and record the choice and the compile time with the run. Returns {batch size: warm-up s}."""
    from idinvert import speed as speed_mod

    warm_s = _warm_up(method, first)  # untimed: allocator and kernel warm-up
    iters = int(getattr(method, "iters", 0) or 0)
    est = 0.0
    if iters and s.opts.speed == "auto":  # a second, warm call of 2 steps (WARMUP_STEPS): the run's estimate
        est = _warm_up(method, first) / 2 * iters * -(-n_pending // max(1, first.shape[0]))
    record: dict[str, Any] = {"mode": s.opts.speed}
    # rank 0's estimate decides for every rank (they must all take the same branch: it broadcasts)
    if s.dist.broadcast(s.opts.speed == "compile" or (s.opts.speed == "auto" and est >= MEASURE_ABOVE_S
                                                      and callable(getattr(method, "optimise", None)))):
        if s.opts.speed == "compile":
            method.speed, record["variant"] = speed_mod.Speed(compile=True), "compiled fp32 (asked)"
        elif s.dist.is_main:
            from bench.speed_choice import choose

            method.speed, chosen = choose(method, first, n_pending * iters, s.opts.results_dir, s.say)
            record.update(chosen or {})
        method.speed = s.dist.broadcast(method.speed)
        warm_s = _warm_up(method, first)
    record.update(speed=method.speed.to_json(), warmup_s=warm_s, eager_estimate_s=est,
                  fallback=speed_mod.notes())
    if method.speed != speed_mod.EAGER or record["fallback"]:
        s.say(f"bench: {method.name}: {method.speed.label()} (warm-up and compile {warm_s:.1f} s, untimed)"
              + "".join(f"; note: {n}" for n in record["fallback"]))
    if s.dist.is_main:
        s.store.merge_run_env(run_id, speed=record)
    return {first.shape[0]: warm_s}


def _claim_round(s: _Session, run_id: str, remaining: list[int], step: int, batch_seconds: float | None,
                 bar: Any, pending: list[int]) -> tuple[list[int], list[int]]:
    """The next images this process inverts (leased), and what is left; waits while only images leased by
    another live process remain. ``([], [])`` when every image is stored."""
    from bench import leases

    waiting = False
    while True:
        got = leases.claimable(s.store, run_id, s.ids, remaining, s.owner, step, leases.ttl_for(batch_seconds))
        if got:
            taken = set(got)
            return got, [i for i in remaining if i not in taken]
        done = s.store.done_image_ids(run_id)
        remaining = [i for i in remaining if s.ids[i] not in done]
        if not remaining:
            return [], []
        if not waiting:
            bar.set_postfix_str("waiting for images another process is inverting")
            waiting = True
        _show_progress(bar, s, run_id, pending)
        time.sleep(leases.POLL_SECONDS)


def _show_progress(bar: Any, s: _Session, run_id: str, pending: list[int]) -> None:
    """The bar counts every pending image stored, by this process or another one sharing the run."""
    stored = s.store.image_count(run_id) - (len(s.ids) - len(pending))  # pending: not stored at start
    if stored > bar.n:
        bar.update(stored - bar.n)


def _finish_shared(s: _Session, run_id: str, method: Any) -> None:
    """Set-level metrics, computed by one of the processes sharing a run; the others wait for it."""
    from bench import leases

    told = False
    while True:
        holder = s.store.claim(run_id, "finish", s.owner, leases.MIN_TTL_SECONDS, leases.is_stale)
        if holder is None:
            break
        if s.store.runs(run_id=run_id)[0]["status"] == "complete":
            return
        if not told:
            s.say(f"bench: {method.name}: waiting for process {holder} to store the set-level metrics ...")
            told = True
        time.sleep(leases.POLL_SECONDS)
    if s.store.runs(run_id=run_id)[0]["status"] != "complete":
        s.say(f"bench: {method.name}: set-level metrics ...")
        s.evaluator.finish_run(s.store, run_id, method, s.dataset, s.ids)
    s.store.release(run_id, s.owner)


def _load_bundle(opts: RunOptions, device: torch.device):
    import idinvert.bundles  # noqa: F401  (registers the release formats)
    from idinvert.zoo import UnknownBundle, load_bundle

    from idinvert.bundles.trained import NAME, is_trained_dir

    try:
        if is_trained_dir(opts.bundle):   # --bundle DIR: a directory `bench train` wrote
            return load_bundle(NAME, weights_dir=opts.bundle, device=device)
        return load_bundle(opts.bundle, weights_dir=opts.weights_dir, device=device)
    except UnknownBundle as exc:
        raise UsageError(f"--bundle: {exc}") from None


def _check_domain(s: _Session):
    """The domain check of a --data folder (bench.domain_check); None for the bundle's own test split."""
    if s.opts.data is None:
        return None
    import warnings

    from bench.domain_check import check_domain
    from bench.metrics.errors import MetricUnavailable

    try:
        embedding = s.evaluator.resources.eval_network().embed
    except MetricUnavailable:
        features = None
    else:
        # the full embedding, not its PCA projection: the projection keeps the directions real images vary
        # along and drops exactly those an out-of-domain image moves into (measured: ratio 1.4 vs 1.8)
        features = getattr(embedding, "embed", embedding)
    result = check_domain(s.dataset, s.n, s.bundle, features)
    text = result.message(s.dataset.name, s.bundle.name)
    if result.status == "out":
        if s.opts.quiet:
            warnings.warn(text, stacklevel=2)
        else:
            print(f"bench: WARNING: {text}", file=sys.stderr)
    else:
        s.say(f"bench: {text}")
    return result


def _invert_batch(method, dataset, indices: Sequence[int], device: torch.device) -> dict[str, Any]:
    images = dataset.load(list(indices)).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    result = method.invert(images)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    # Anytime points: the method's milestones (an optimisation's codes after 0, 10, 30, ... steps, with
    # the seconds since invert() started), else one point -- the result itself at the method's budget
    # (step 0 for an encoder). Codes a per-image decoder (PTI) goes with are one point too: its
    # milestones' codes would decode with a G it never tuned.
    milestones = None
    if result.milestones and result.decoders is None:
        milestones = [{"step": int(m.step), "seconds": float(m.seconds), "codes": m.codes.detach().float().cpu(),
                       "failed": m.failed.cpu()} for m in result.milestones]
    return {"indices": list(indices), "codes": result.codes.detach().float().cpu(),
            "failed": result.failed.cpu(), "reasons": list(result.reasons), "seconds": seconds,
            "decoders": result.decoders, "milestones": milestones,
            "final_step": int(getattr(method, "iters", 0) or 0)}


def _write_report(results_dir: Path, say) -> None:
    try:
        from bench.report import build_report
    except ImportError as exc:  # pragma: no cover - report package always ships
        say(f"bench: report not written ({exc})")
        return
    path = build_report(results_dir)
    say(f"bench: report at {path}")


def run_sweep(opts: RunOptions, param: str, values: Sequence[str], seeds: Sequence[int] = ()) -> list[str]:
    """``bench ablate``: one ordinary run per value (and per seed, when ``seeds`` are given) for every
    selected method, grouped as one sweep."""
    from methods import registry

    run_ids: list[str] = []
    sweep_id = None
    default = registry.get(opts.methods[0]).hyperparameters()[param]
    typed = [registry.coerce(v, default, f"{opts.methods[0]}.{param}") if default is not None else v
             for v in values]  # stored as the runs' params are, so the report can match them
    if int(os.environ.get("RANK", "0")) == 0:
        with Store(opts.results_dir) as store:
            sweep_id = store.add_sweep(param, typed, list(opts.methods))
    report = opts.report
    seeds = list(seeds) or [opts.seed]
    for k, seed in enumerate(seeds):
        for i, value in enumerate(values):
            sub = RunOptions(**{**opts.__dict__, "report": False, "seed": seed,
                                "overrides": {m: {**opts.overrides.get(m, {}), param: value} for m in opts.methods}})
            if not opts.quiet:
                of_seed = f", seed {seed} ({k + 1}/{len(seeds)})" if len(seeds) > 1 else ""
                print(f"bench: ablate {param}={value} ({i + 1}/{len(values)}){of_seed}")
            run_ids += run_benchmark(sub, sweep_id=sweep_id)
    if report and int(os.environ.get("RANK", "0")) == 0:
        _write_report(opts.results_dir, print if not opts.quiet else (lambda *a: None))
    return run_ids
