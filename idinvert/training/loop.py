"""One training loop for every part `bench train` trains: a *task* supplies the hooks, the loop does the rest.

    task.modules()      {name: nn.Module}        trained networks (checkpointed, gradients averaged over ranks)
    task.optimizers()   {name: Optimizer}        checkpointed with them
    task.step(step, ctx) -> {loss name: float}   one optimisation step on this rank's shard of the global batch
    task.validate()     -> float | None          lower is better (None: this task is not validated)
    task.export_module  nn.Module                whose best-validation weights are kept and exported
    task.export(summary)                         write the result (rank 0 only, after the last step)

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
exactly (tests/test_train_own.py states it).
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

import torch
import torch.distributed as tdist
import torch.nn as nn

from idinvert.training.common import (LossLog, Stopwatch, check_resume_config, load_checkpoint, progress,
                                      save_checkpoint)
from idinvert.training.loop_utils import IntervalLog, step_generator

__all__ = ["LoopSettings", "Dist", "StepContext", "Task", "train", "RESUMABLE_CHANGES"]

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
    val_every: int = 0                      # 0: never validate (the last step's weights are exported)
    plateau_window: int = 0                 # steps; 0: no plateau stop
    plateau_min_improvement: float = 0.01   # relative improvement over the window below which it stops
    max_minutes: Optional[float] = None     # this sitting's budget; rerun the same command to resume
    amp: bool = False                       # bf16 autocast (CUDA only)


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
    def validate(self) -> Optional[float]: ...
    def export(self, summary: dict) -> None: ...


class _Validation:
    """The validation curve (val.jsonl, rank 0), the best weights so far and the plateau rule."""

    def __init__(self, path: Path, settings: LoopSettings, resume_step: Optional[int], best: Optional[dict],
                 writer: bool):
        self.settings, self.best, self.writer = settings, best, writer
        self.log = LossLog(path, resume_step=resume_step) if writer else None
        self.rows = self.log.rows() if self.log is not None else list((best or {}).get("rows", []))

    def due(self, done: int) -> bool:
        every = self.settings.val_every
        return every > 0 and (done % every == 0 or done == self.settings.steps)

    def add(self, done: int, value: float, module: nn.Module, seconds: float) -> None:
        row = {"step": done, "val": value, "seconds": round(seconds, 2)}
        self.rows.append(row)
        if self.log is not None:
            self.log.write(**row)
        if self.best is None or value < self.best["val"]:
            self.best = {"step": done, "val": value,
                         "state": {k: v.detach().clone() for k, v in module.state_dict().items()}}
        self.best["rows"] = list(self.rows)   # kept in the checkpoint, so every rank resumes with the curve

    def plateaued(self) -> bool:
        """Improved by less than the minimum (relative) over the last `plateau_window` steps."""
        window = self.settings.plateau_window
        if window <= 0 or not self.rows or self.rows[-1]["step"] < window:
            return False
        now = self.rows[-1]
        past = [r for r in self.rows if r["step"] <= now["step"] - window]
        if not past:
            return False
        before = past[-1]["val"]
        return (before - now["val"]) / max(abs(before), 1e-12) < self.settings.plateau_min_improvement

    def restore_best(self, module: nn.Module) -> dict:
        """Load the best-validation weights into `module`; what was exported, for the summary."""
        if self.best is None:
            return {"rule": "last step (not validated)", "step": None, "val": None}
        module.load_state_dict(self.best["state"])
        return {"rule": "best validation value", "step": self.best["step"], "val": self.best["val"]}


def _checkpoint_state(task: Task, settings: dict, done: int, clock: Stopwatch, val: _Validation) -> dict:
    return {"modules": {k: m.state_dict() for k, m in task.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in task.optimizers().items()},
            "step": done, "seconds": clock.total(), "config": settings, "best": val.best}


def _resume(task: Task, work_dir: Path, settings: dict) -> Optional[dict]:
    """Load the checkpoint (if any) into the task's modules and optimisers; refuse other settings."""
    state = load_checkpoint(work_dir)
    if state is None:
        return None
    check_resume_config(state["config"], settings, ignore=RESUMABLE_CHANGES)
    for k, m in task.modules().items():
        m.load_state_dict(state["modules"][k])
    for k, o in task.optimizers().items():
        o.load_state_dict(state["optimizers"][k])
    return state


def _stopped(val: _Validation, done: int, settings: LoopSettings, timed_out: bool) -> str:
    if val.plateaued():
        return "validation plateau"
    if timed_out and done < settings.steps:
        return (f"time budget of this sitting (max_minutes={settings.max_minutes:g}); "
                "rerun the same command to resume")
    return f"step cap ({settings.steps})"


def train(task: Task, settings: LoopSettings, work_dir: str | Path, dist: Dist = Dist(),
          show_progress: bool = True) -> dict:
    """Run (or resume) `task` to its step cap, plateau or time budget; export on rank 0 when complete.

    Returns the summary (steps, wall time, last logged losses, validation curve, what was exported,
    why it stopped, `complete`: False when a sitting ran out of time -- then nothing is exported)."""
    if settings.batch_size % dist.world:
        raise ValueError(f"the global batch {settings.batch_size} must divide by the {dist.world} processes")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    # the number of processes may change between sittings: the global batches are the same
    config = {**task.settings(), **vars(settings)}
    state = _resume(task, work_dir, config)
    start = int(state["step"]) if state is not None else 0
    resume = start if state is not None else None
    log = IntervalLog(work_dir / "log.jsonl", settings.log_every, resume) if dist.writer else None
    val = _Validation(work_dir / "val.jsonl", settings, resume, state and state.get("best"), dist.writer)
    clock = Stopwatch(float(state["seconds"]) if state is not None else 0.0)
    done, timed_out = _run_steps(task, settings, work_dir, dist, start, log, val, clock, config, show_progress)
    exported = val.restore_best(task.export_module)
    complete = not timed_out or done >= settings.steps or val.plateaued()
    summary = {"part": task.name, "steps": done, "images_seen": done * settings.batch_size,
               "processes": dist.world, "wall_time_s": round(clock.total(), 1),
               "final": log.last() if log is not None else {}, "val_curve": val.rows,
               "plateau_rule": (f"stop when the validation value improves by less than "
                                f"{settings.plateau_min_improvement:.0%} over {settings.plateau_window} steps"
                                if settings.plateau_window > 0 else "none (step cap)"),
               "exported": exported, "stopped": _stopped(val, done, settings, timed_out), "complete": complete,
               "loop": dict(vars(settings))}
    if complete and dist.writer:
        task.export(summary)
    dist.barrier()
    return summary


def _run_steps(task, settings, work_dir, dist, start, log, val, clock, config, show_progress):
    """The step loop; returns (steps done, whether this sitting's time ran out)."""
    started, done, timed_out = time.monotonic(), start, False
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if settings.amp and dist.device.type == "cuda"
           else nullcontext())
    bar = progress(settings.steps, start, task.name, enabled=show_progress and dist.writer)
    for step in range(start, settings.steps):
        ctx = StepContext(step_generator(settings.seed, step), dist, settings.batch_size)
        with amp:
            losses = dist.mean(task.step(step, ctx))
        done = step + 1
        row = log.add(done, losses, seconds=round(clock.total(), 2)) if log is not None else None
        if row is not None:
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k.startswith("loss")})
        bar.update(1)
        stop = False
        if val.due(done):
            for m in task.modules().values():
                dist.average_buffers(m)
            val.add(done, task.validate(), task.export_module, clock.total())
            stop = val.plateaued()
        out = settings.max_minutes is not None and time.monotonic() - started >= 60 * settings.max_minutes
        timed_out = dist.any(out)
        if stop or timed_out or done % settings.checkpoint_every == 0 or done == settings.steps:
            for m in task.modules().values():
                dist.average_buffers(m)
            if dist.writer:
                save_checkpoint(work_dir, _checkpoint_state(task, config, done, clock, val))
            dist.barrier()
        if stop or timed_out:
            break
    bar.close()
    return done, timed_out
