"""One training loop for every trainer: the parts `bench train` trains and the embedded zoo's (GAN, classifier,
judge, both encoders, e4e, ReStyle). A *task* supplies the hooks, the loop does the rest.

    task.modules()      {name: nn.Module}        trained networks (checkpointed, gradients averaged over ranks)
    task.optimizers()   {name: Optimizer}        checkpointed with them
    task.step(step, ctx) -> {loss name: float}   one optimisation step on this rank's shard of the global batch
    task.validate()     -> float | None          lower is better (None: this task is not validated)
    task.export_module  nn.Module                whose best-validation weights are kept and exported
    task.export(summary)                         write the result (rank 0 only, after the last step)

Optional hooks (defaults in `TaskBase`; the zoo's tasks use them to keep their work dirs' formats and recipes):
    task.records                          Records: validation file / keys, checkpoint layout ("flat": the zoo's)
    task.checkpoint_config(settings)      (what a resume must match, which keys may differ)
    task.extra_state() / load_extra_state(state)   more resumable state (the GAN's RNG, image counters)
    task.on_checkpoint(work_dir)          after each checkpoint (the GAN mirrors its carried folder)

The loop: resume from <work_dir>/checkpoint.pt (written atomically, by rank 0 only), a tqdm bar, a JSONL
loss log (interval means, averaged over ranks), validation every `val_every` steps into val.jsonl,
plateau-stop (relative improvement below `plateau_min_improvement` over `plateau_window` steps) that
exports the *best*-validation weights, and `max_minutes` sittings (checkpoint, say so, rerun resumes).

Distributed (torchrun): `Dist.from_env()` reads torchrun's environment and joins the process group (gloo
on a CPU, NCCL on a GPU). Each step draws the *global* batch from `step_generator(seed, step)` and every
rank takes its contiguous shard of it (`StepContext.shard`), so a 2-process run sees the batches a
1-process run sees. Gradients are averaged over ranks by `StepContext.update` before each optimiser
step -- by hand, as StyleGAN2-ADA does, not through the `DistributedDataParallel` wrapper: the
steps here run a network several times before one backward (the discriminator on reals and fakes,
ReStyle's refinement loop), call non-`forward` methods (e4e's `forward_parts`) and take a
double-backward R1 gradient, none of which the wrapper's hooks support. BatchNorm statistics stay per
shard (as DDP without SyncBatchNorm); their running buffers are averaged before validation and every
checkpoint. That is why a 2-process loss curve follows the 1-process one within a tolerance, not
exactly (tests/test_train_own.py states it). The zoo's GAN, classifier and judge draw their batches from
their own streams (the GAN from the global RNG, whose state it checkpoints), not from the step's shard:
they train in one process, as `bench zoo train` runs them.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

import torch
import torch.distributed as tdist
import torch.nn as nn

from idinvert.training.common import (LossLog, Stopwatch, check_resume_config, load_checkpoint, progress,
                                      save_checkpoint)
from idinvert.training.loop_utils import IntervalLog, step_generator

__all__ = ["LoopSettings", "Dist", "StepContext", "Task", "TaskBase", "Records", "train", "position",
           "seed_checkpoint", "RESUMABLE_CHANGES"]

# Settings a resumed run may change (bookkeeping, or the length of training).
RESUMABLE_CHANGES = ("checkpoint_every", "log_every", "max_minutes", "amp")


@dataclass
class LoopSettings:
    """How long and how a task trains. `batch_size` is the *global* batch (all ranks together)."""
    steps: int
    batch_size: int
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    val_every: float = 0                    # in `position` units; 0: never validate (the last step is exported)
    plateau_window: float = 0               # in `position` units; 0: no plateau stop
    plateau_min_improvement: float = 0.01   # relative improvement over the window below which it stops
    max_minutes: Optional[float] = None     # this sitting's budget; rerun the same command to resume
    amp: bool = False                       # bf16 autocast (CUDA only)
    # The zoo's trainers set these to keep their recipes (the defaults are bench train's):
    position: str = "step"                  # unit of val_every / plateau_window: "step", or "kimg" (images / 1000)
    validate_first: bool = False            # also validate before the first step of a fresh run
    validate_last: bool = True              # also validate after the last step
    export_best: bool = True                # export the best-validation weights (else the last step's)
    export_incomplete: bool = False         # export also when a sitting's time runs out
    log_reduce: str = "mean"                # a log row holds the interval's "mean" or the logged step's "last"

    def __post_init__(self):
        if self.position not in ("step", "kimg") or self.log_reduce not in ("mean", "last"):
            raise ValueError(f"position must be 'step' or 'kimg' and log_reduce 'mean' or 'last', got "
                             f"{self.position!r} and {self.log_reduce!r}")


@dataclass
class Dist:
    """This process's place in a torchrun job (world 1: a plain single process)."""
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def from_env(cls, device: str = "cpu") -> "Dist":
        """Join torchrun's process group when WORLD_SIZE > 1 (gloo on CPU, NCCL on CUDA)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if world > 1 and not tdist.is_initialized():
            tdist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return cls(rank, world, dev)

    @property
    def writer(self) -> bool:
        """Only rank 0 writes checkpoints, logs, cards and weights."""
        return self.rank == 0

    def mean(self, values: dict[str, Optional[float]]) -> dict[str, Optional[float]]:
        """Each value averaged over ranks (None stays None: a loss this step did not compute)."""
        if self.world == 1:
            return values
        keys = [k for k, v in values.items() if v is not None]
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        tdist.all_reduce(t)
        return {**values, **{k: float(v) / self.world for k, v in zip(keys, t)}}

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on one (stop decisions: each rank's clock differs)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item())

    def average_grads(self, module: nn.Module) -> None:
        """Gradients averaged over ranks, in one flat all-reduce (a parameter without one counts 0)."""
        if self.world == 1:
            return
        params = [p for p in module.parameters() if p.requires_grad]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        tdist.all_reduce(flat)   # in place: the parameters (hence their gradients) live on this rank's device
        flat = flat / self.world
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(p.dtype).clone()
            offset += n

    def average_buffers(self, module: nn.Module) -> None:
        """Floating buffers (BatchNorm running statistics) averaged over ranks."""
        if self.world == 1:
            return
        for b in module.buffers():
            if b.is_floating_point():
                tdist.all_reduce(b)
                b.div_(self.world)

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()


@dataclass
class StepContext:
    """What a task's step gets: the step's RNG (the same on every rank), its shard of the global batch."""
    rng: torch.Generator
    dist: Dist
    batch_size: int
    notes: dict = field(default_factory=dict)   # step-level values for this step's log row (lr, stage), not averaged

    @property
    def shard(self) -> slice:
        """This rank's contiguous slice of the global batch (global batch divisible by the world)."""
        n = self.batch_size // self.dist.world
        return slice(self.dist.rank * n, (self.dist.rank + 1) * n)

    def update(self, loss: torch.Tensor, module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """zero_grad, backward, average gradients over ranks, optimiser step."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_grads(module)
        optimizer.step()


class Task(Protocol):
    name: str
    export_module: nn.Module

    def modules(self) -> dict[str, nn.Module]: ...
    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...
    def settings(self) -> dict[str, Any]: ...
    def step(self, step: int, ctx: StepContext) -> dict[str, Optional[float]]: ...
    def validate(self) -> Optional[float | tuple[float, dict]]: ...
    def export(self, summary: dict) -> None: ...


@dataclass(frozen=True)
class Records:
    """What the loop's files are called and hold. bench train's defaults; the zoo's trainers keep the names
    their work dirs have always had (`checkpoint.pt` top-level keys, `val_curve.jsonl` rows in kimg with
    `val_mse`, `best_val`), so a work dir written before they moved onto this loop resumes."""
    val_file: str = "val.jsonl"
    val_key: str = "val"                # the value's key in a validation row and in the best record
    val_label: str = "value"            # in the exported rule, "best validation <label>"
    best_key: str = "best"              # the checkpoint's key of the best-validation weights
    flat: bool = False                  # modules, optimisers and extra state at the checkpoint's top level


# LoopSettings' fields added for the zoo's trainers: left out of the checkpoint's config while at their
# defaults, so that a bench train work dir written before they existed still resumes.
_LATER_FIELDS = ("position", "validate_first", "validate_last", "export_best", "export_incomplete", "log_reduce")


class TaskBase:
    """Defaults of the optional hooks (a task need not derive from this; the loop falls back to these).

        records                          Records: names of the checkpoint's and validation curve's contents
        checkpoint_config(settings)      (the settings a resume must match, the keys that may differ)
        extra_state() / load_extra_state(state)   more resumable state (RNG, counters), checkpointed
        on_checkpoint(work_dir)          after each checkpoint (e.g. mirror it to a carried folder)
    """
    records = Records()

    def checkpoint_config(self, settings: LoopSettings) -> tuple[dict, tuple]:
        loop = {k: v for k, v in vars(settings).items() if k not in _LATER_FIELDS or v != getattr(LoopSettings, k)}
        return {**self.settings(), **loop}, RESUMABLE_CHANGES

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def on_checkpoint(self, work_dir: Path) -> None:
        pass


def _hook(task: Task, name: str):
    """The task's hook `name`, or TaskBase's default bound to it."""
    found = getattr(task, name, None)
    if found is not None:
        return found
    default = getattr(TaskBase, name)
    return default.__get__(task) if callable(default) else default


def position(settings: LoopSettings, done: int) -> float:
    """Where training is after `done` steps, in the unit of val_every and plateau_window."""
    return done if settings.position == "step" else done * settings.batch_size / 1000


class _Validation:
    """The validation curve (rank 0 writes it), the best weights so far and the plateau rule."""

    def __init__(self, path: Path, settings: LoopSettings, resume_step: Optional[int], best: Optional[dict],
                 writer: bool, records: Records):
        self.settings, self.best, self.writer, self.rec = settings, best, writer, records
        self.key = settings.position
        resume = None if resume_step is None else position(settings, resume_step)
        self.log = LossLog(path, resume_step=resume, key=self.key) if writer else None
        self.rows = self.log.rows() if self.log is not None else list((best or {}).get("rows", []))

    def due(self, done: int) -> bool:
        s = self.settings
        if s.val_every <= 0:
            return False
        crossed = int(position(s, done) // s.val_every) > int(position(s, done - 1) // s.val_every)
        return crossed or (s.validate_last and done == s.steps)

    def add(self, done: int, result, module: nn.Module, seconds: float) -> None:
        value, extra = result if isinstance(result, tuple) else (result, {})
        where = position(self.settings, done)
        row = {self.key: where if self.key == "step" else round(where, 3), self.rec.val_key: value, **extra,
               "seconds": round(seconds, 2)}
        self.rows.append(row)
        if self.log is not None:
            self.log.write(**row)
        if self.best is None or value < self.best[self.rec.val_key]:
            self.best = {self.key: row[self.key], self.rec.val_key: value,
                         "state": {k: v.detach().clone() for k, v in module.state_dict().items()}}
        self.best["rows"] = list(self.rows)   # kept in the checkpoint, so every rank resumes with the curve

    def plateaued(self) -> bool:
        """Improved by less than the minimum (relative) over the last `plateau_window`."""
        window, k, v = self.settings.plateau_window, self.key, self.rec.val_key
        if window <= 0 or not self.rows or self.rows[-1][k] < window:
            return False
        now = self.rows[-1]
        past = [r for r in self.rows if r[k] <= now[k] - window + 1e-9]
        if not past:
            return False
        before = past[-1][v]
        return (before - now[v]) / max(abs(before), 1e-12) < self.settings.plateau_min_improvement

    def restore_best(self, module: nn.Module) -> dict:
        """Load the best-validation weights into `module` (when the settings export the best); what was
        exported, for the summary."""
        k, v = self.key, self.rec.val_key
        if self.best is None or not self.settings.export_best:
            return {"rule": "last step (not validated)" if self.best is None else "last step",
                    k: None, v: None}
        module.load_state_dict(self.best["state"])
        return {"rule": f"best validation {self.rec.val_label}", k: self.best[k], v: self.best[v]}

    def rule(self) -> str:
        s, unit = self.settings, self.settings.position + ("s" if self.settings.position == "step" else "")
        if s.plateau_window <= 0 or s.val_every <= 0:
            return "none (step cap)"
        return (f"stop when the validation {self.rec.val_label} improves by less than "
                f"{s.plateau_min_improvement:.0%} over {s.plateau_window:g} {unit} (checked every "
                f"{s.val_every:g} {unit})")


def _checkpoint_state(task: Task, config: dict, done: int, seconds: float, records: Records,
                      best: Optional[dict]) -> dict:
    mods = {k: m.state_dict() for k, m in task.modules().items()}
    opts = {k: o.state_dict() for k, o in task.optimizers().items()}
    parts = {**mods, **opts} if records.flat else {"modules": mods, "optimizers": opts}
    return {**parts, **_hook(task, "extra_state")(), "step": done, "seconds": seconds, "config": config,
            records.best_key: best}


def seed_checkpoint(task: Task, settings: LoopSettings, work_dir: str | Path, step: int, seconds: float) -> Path:
    """Write the task's current state as the checkpoint of `step` (a run continued from exported weights
    rather than from a checkpoint: training resumes from it as from any other)."""
    config, _ = _hook(task, "checkpoint_config")(settings)
    return save_checkpoint(work_dir, _checkpoint_state(task, config, step, seconds, _hook(task, "records"), None))


def _resume(task: Task, work_dir: Path, settings: LoopSettings) -> tuple[Optional[dict], dict]:
    """Load the checkpoint (if any) into the task; refuse other settings. -> (state or None, config)."""
    config, resumable = _hook(task, "checkpoint_config")(settings)
    state = load_checkpoint(work_dir)
    if state is None:
        return None, config
    check_resume_config(state["config"], config, ignore=resumable)
    flat = _hook(task, "records").flat
    for k, m in task.modules().items():
        m.load_state_dict(state[k] if flat else state["modules"][k])
    for k, o in task.optimizers().items():
        o.load_state_dict(state[k] if flat else state["optimizers"][k])
    _hook(task, "load_extra_state")(state)
    return state, config


def _stopped(val: _Validation, done: int, settings: LoopSettings, timed_out: bool) -> str:
    if val.plateaued():
        return "validation plateau"
    if timed_out and done < settings.steps:
        return (f"time budget of this sitting (max_minutes={settings.max_minutes:g}); "
                "rerun the same command to resume")
    plateau_rule = settings.plateau_window > 0 and settings.val_every > 0
    return f"step cap ({settings.steps})" + (" before the plateau" if plateau_rule else "")


def train(task: Task, settings: LoopSettings, work_dir: str | Path, dist: Dist = Dist(),
          show_progress: bool = True) -> dict:
    """Run (or resume) `task` to its step cap, plateau or time budget; export on rank 0 when complete
    (or, with `settings.export_incomplete`, also when a sitting's time ran out).

    Returns the summary (steps, wall time, last logged losses, validation curve, what was exported,
    why it stopped, `complete`: False when a sitting ran out of time)."""
    if settings.batch_size % dist.world:
        raise ValueError(f"the global batch {settings.batch_size} must divide by the {dist.world} processes")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    # the number of processes may change between sittings: the global batches are the same
    state, config = _resume(task, work_dir, settings)
    resume = int(state["step"]) if state is not None else None
    records = _hook(task, "records")
    log = (IntervalLog(work_dir / "log.jsonl", settings.log_every, resume, settings.log_reduce)
           if dist.writer else None)
    val = _Validation(work_dir / records.val_file, settings, resume, state and state.get(records.best_key),
                      dist.writer, records)
    clock = Stopwatch(float(state["seconds"]) if state is not None else 0.0)
    run = _Run(task, settings, work_dir, dist, log, val, clock, config)
    done, timed_out = run.steps(resume or 0, show_progress)
    exported = val.restore_best(task.export_module)
    complete = not timed_out or done >= settings.steps or val.plateaued()
    summary = {"part": task.name, "steps": done, "images_seen": done * settings.batch_size,
               "processes": dist.world, "wall_time_s": round(clock.total(), 1),
               "final": log.last() if log is not None else {}, "val_curve": val.rows, "plateau_rule": val.rule(),
               "plateaued": val.plateaued(), "exported": exported,
               "stopped": _stopped(val, done, settings, timed_out), "complete": complete,
               "loop": dict(vars(settings))}
    if (complete or settings.export_incomplete) and dist.writer:
        task.export(summary)
    dist.barrier()
    return summary


class _Run:
    """One sitting's step loop: step, log, validate, time budget, checkpoint."""

    def __init__(self, task, settings: LoopSettings, work_dir: Path, dist: Dist, log, val: _Validation,
                 clock: Stopwatch, config: dict):
        self.task, self.settings, self.work_dir, self.dist = task, settings, work_dir, dist
        self.log, self.val, self.clock, self.config = log, val, clock, config

    def steps(self, start: int, show_progress: bool) -> tuple[int, bool]:
        """Steps from `start`; returns (steps done, whether this sitting's time ran out)."""
        task, settings, dist = self.task, self.settings, self.dist
        started, done, timed_out = time.monotonic(), start, False
        amp = (torch.autocast("cuda", dtype=torch.bfloat16) if settings.amp and dist.device.type == "cuda"
               else nullcontext())
        bar = progress(settings.steps, start, task.name, enabled=show_progress and dist.writer)
        if start == 0 and settings.validate_first and settings.val_every > 0:
            self.validate(0)
        for step in range(start, settings.steps):
            ctx = StepContext(step_generator(settings.seed, step), dist, settings.batch_size)
            with amp:
                losses = dist.mean(task.step(step, ctx))
            done = step + 1
            self.record(done, losses, ctx.notes, bar)
            stop = False
            if self.val.due(done):
                stop = self.validate(done)
            out = settings.max_minutes is not None and time.monotonic() - started >= 60 * settings.max_minutes
            timed_out = dist.any(out)
            if stop or timed_out or done % settings.checkpoint_every == 0 or done == settings.steps:
                self.checkpoint(done)
            if stop or timed_out:
                break
        bar.close()
        return done, timed_out

    def record(self, done: int, losses: dict, notes: dict, bar) -> None:
        row = (self.log.add(done, losses, **notes, seconds=round(self.clock.total(), 2))
               if self.log is not None else None)
        if row is not None:
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k.startswith("loss") and v is not None})
        bar.update(1)

    def validate(self, done: int) -> bool:
        """Validate (BatchNorm buffers averaged over ranks first); True at the plateau."""
        for m in self.task.modules().values():
            self.dist.average_buffers(m)
        self.val.add(done, self.task.validate(), self.task.export_module, self.clock.total())
        return self.val.plateaued()

    def checkpoint(self, done: int) -> None:
        for m in self.task.modules().values():
            self.dist.average_buffers(m)
        if self.dist.writer:
            save_checkpoint(self.work_dir, _checkpoint_state(self.task, self.config, done, self.clock.total(),
                                                              self.val.rec, self.val.best))
            _hook(self.task, "on_checkpoint")(self.work_dir)
        self.dist.barrier()
