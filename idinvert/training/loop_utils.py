"""Small pieces the training loop and its tasks share: per-step RNG, the learning-rate schedule, interval
loss logs, the validation hold-out, setting checks, and the A/B speed timers' machinery.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from idinvert.training.common import LossLog

__all__ = ["step_generator", "lr_at", "set_lr", "IntervalLog", "split_holdout", "check_positive",
           "interleaved_speed", "speed_arguments"]


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, step): a resumed run draws identical batches."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) % (2 ** 63))


def lr_at(base_lr: float, step: int, total_steps: int, decay_rate: float = 0.8,
          decay_fraction: float = 0.25) -> float:
    """base_lr * decay_rate ** (step / (decay_fraction * total_steps)): the official idinvert
    encoder schedule (x0.8 every quarter of training, applied continuously)."""
    period = max(1.0, total_steps * decay_fraction)
    return base_lr * decay_rate ** (step / period)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class IntervalLog:
    """Losses of every `every` steps as one row of a LossLog at `path`. reduce "mean": their mean over the
    interval (a loss computed on only some steps, lazy R1, is averaged over the steps that had it); "last":
    the logged step's own values (None kept), as the zoo's GAN, classifier and judge have always logged."""

    def __init__(self, path: str | os.PathLike, every: int, resume_step: Optional[int], reduce: str = "mean"):
        self.log = LossLog(path, resume_step=resume_step)
        self.every, self.reduce = max(1, int(every)), reduce
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, step: int, values: dict, **extra) -> Optional[dict]:
        """Accumulate this step's losses; at every `every`-th step write and return the row."""
        if self.reduce == "last":
            row = {"step": step, **values, **extra} if step % self.every == 0 else None
        else:
            row = self._mean_row(step, values, extra)
        if row is not None:
            self.log.write(**row)
        return row

    def _mean_row(self, step: int, values: dict, extra: dict) -> Optional[dict]:
        for k, v in values.items():
            if v is not None:
                self.sums[k] = self.sums.get(k, 0.0) + float(v)
                self.counts[k] = self.counts.get(k, 0) + 1
        if step % self.every != 0 or not self.sums:
            return None
        row = {"step": step, **{k: v / self.counts[k] for k, v in self.sums.items()}, **extra}
        self.sums, self.counts = {}, {}
        return row

    def last(self) -> dict:
        rows = self.log.rows()
        return rows[-1] if rows else {}


def split_holdout(n_images: int, holdout: int, batch_size: int) -> tuple[range, range]:
    """(validation indices, training indices): the first `holdout` images are held out."""
    if holdout < 0:
        raise ValueError(f"validation holdout must be >= 0, got {holdout}")
    if n_images - holdout < batch_size:
        raise ValueError(f"need at least {batch_size} training images after holding out {holdout} "
                         f"for validation, got {n_images} images")
    return range(0, holdout), range(holdout, n_images)


def check_positive(**values) -> None:
    """Raise ValueError naming every setting that is not > 0."""
    bad = [f"{k}={v!r}" for k, v in values.items() if not (v is not None and v > 0)]
    if bad:
        raise ValueError(f"settings must be > 0: {', '.join(bad)}")


def speed_arguments(doc: str, argv, steps: int):
    """The A/B timers' command line: --rounds (4), --steps (`steps`) per variant per round, --batch (32)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--batch", type=int, default=32)
    return ap.parse_args(argv)


def interleaved_speed(variants: dict, step, rounds: int, steps: int, batch: int, base: str = "fp32") -> dict:
    """A/B timing of training-step variants in one process: ``variants`` maps a name to (threads, args);
    ``step(name, i)`` runs step i of that variant (its ``args`` are the caller's business). Round-robin over
    ``rounds`` (one untimed warm-up step, then ``steps`` timed ones per variant per round), so that a busy
    machine slows every variant alike. Prints, per variant, the median wall and process CPU time per step and
    its ratio to ``base``; returns {name: (wall s/step, CPU s/step)}."""
    import statistics
    import time

    times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, (threads, _) in variants.items():
            torch.set_num_threads(threads)
            step(name, 1)   # warm-up
            c0, w0 = time.process_time(), time.perf_counter()
            for i in range(steps):
                step(name, i + 2)
            times[name].append((time.perf_counter() - w0, time.process_time() - c0))
    med = {k: (statistics.median(w for w, _ in v) / steps, statistics.median(c for _, c in v) / steps)
           for k, v in times.items()}
    bw, bc = med[base]
    for k, (w, c) in med.items():
        print(f"{k:14s} {w:.3f} s/step wall ({batch / w:.0f} img/s), {c:.3f} s/step CPU; "
              f"ratio to {base}: wall {w / bw:.2f}, CPU {c / bc:.2f}")
    return med
