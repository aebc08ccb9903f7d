"""Quality against time: anytime curves and the time each method needs to reach a quality.

A curve is a method's metric at its milestones (``idinvert.inversion.Milestone``): points
``(step, seconds per image, value)`` in order of time. An encoder method is a curve of one point.

``time_to_target`` reads off the *first measured milestone* at which the curve meets a target -- no
interpolation between milestones (a value between two milestones was never measured). The target was
therefore met somewhere after the milestone before it and by that milestone: the result carries both
ends (``earliest_seconds_per_image`` .. ``seconds_per_image``), and is exact only at the start (step 0,
an encoder). A curve that never meets the target is "not reached" (:attr:`TimeToTarget.reached` False,
``seconds`` None), never a number. ``speedup`` compares two such times; when one side did not reach
the target, it gives only a bound, labelled as such (``"at least"``/``"at most"``), from the other
side's time and the budget actually spent. Its ``low``/``high`` are what the two brackets allow: with
the default 5-per-decade schedule (``idinvert.inversion.anytime_milestones``) a measured ratio of 10 may
be anything from ~6 to ~16.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

__all__ = ["AnytimePoint", "curve", "mean_curve", "value_at", "TimeToTarget", "time_to_target",
           "Speedup", "speedup", "milestone_values", "pooled_seconds_per_image",
           "SubsetPlan", "subset_for_budget", "Target", "target_from", "time_to_quality_table"]

DIRECTIONS = ("lower", "higher")


@dataclass(frozen=True)
class AnytimePoint:
    step: int                 # optimisation steps done (0: the start; encoders: 0)
    seconds_per_image: float  # wall clock up to this milestone, per image (encoder start included)
    value: float              # the metric at this milestone (nan: not measured / no finite image)


def curve(steps: Sequence[int], seconds_per_image: Sequence[float], values: Sequence[float]
          ) -> list[AnytimePoint]:
    """Points from three parallel sequences, checked: equal lengths, at least one point, steps
    strictly increasing, seconds finite, >= 0 and non-decreasing."""
    if not (len(steps) == len(seconds_per_image) == len(values)):
        raise ValueError(f"steps, seconds and values differ in length: {len(steps)}, "
                         f"{len(seconds_per_image)}, {len(values)}")
    if len(steps) == 0:
        raise ValueError("a curve needs at least one point")
    points = [AnytimePoint(int(s), float(t), float(v)) for s, t, v in zip(steps, seconds_per_image, values)]
    for prev, cur in zip(points, points[1:]):
        if cur.step <= prev.step:
            raise ValueError(f"steps must increase: {prev.step} then {cur.step}")
        if cur.seconds_per_image < prev.seconds_per_image:
            raise ValueError(f"seconds must not decrease: {prev.seconds_per_image} at step {prev.step}, "
                             f"{cur.seconds_per_image} at step {cur.step}")
    for p in points:
        if not math.isfinite(p.seconds_per_image) or p.seconds_per_image < 0:
            raise ValueError(f"seconds per image must be finite and >= 0, got {p.seconds_per_image} "
                             f"at step {p.step}")
    return points


def mean_curve(steps: Sequence[int], seconds_per_image: Sequence[float], per_image: np.ndarray
               ) -> list[AnytimePoint]:
    """per_image [N, K] (image i's metric at milestone k; nan for failed images) -> the curve of the
    mean over finite values at each milestone (nan where none is finite)."""
    x = np.asarray(per_image, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(steps):
        raise ValueError(f"per_image must be [N, K={len(steps)}], got {x.shape}")
    finite = np.isfinite(x)
    counts = finite.sum(0)
    sums = np.where(finite, x, 0.0).sum(0)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return curve(steps, seconds_per_image, means.tolist())


def value_at(points: Sequence[AnytimePoint], step: Optional[int] = None) -> float:
    """The value at milestone ``step`` (default: the last, i.e. the method's budget); KeyError naming
    the milestones there are when that step was not measured."""
    if not points:
        raise ValueError("empty curve")
    if step is None:
        return points[-1].value
    for p in points:
        if p.step == step:
            return p.value
    raise KeyError(f"no milestone at step {step}; milestones: {[p.step for p in points]}")


@dataclass(frozen=True)
class TimeToTarget:
    target: float
    direction: str                  # "lower": reached when value <= target; "higher": >=
    reached: bool
    seconds_per_image: Optional[float]  # at the first milestone meeting the target; None if not reached
    step: Optional[int]
    value: Optional[float]          # the metric at that milestone
    budget_seconds_per_image: float  # the curve's last milestone: how long the method tried
    budget_step: int
    # The milestone before the first one meeting the target (it did not meet it): the target was met
    # after it. Equal to seconds_per_image / step when met at the start (step 0); 0 s and step 0 when
    # the curve's first milestone meets it but is not the start. None when not reached.
    earliest_seconds_per_image: Optional[float] = None
    earliest_step: Optional[int] = None

    @property
    def exact(self) -> bool:
        """Met at a milestone with nothing unmeasured before it (the start): the time is not a bracket."""
        return self.reached and self.earliest_step == self.step

    def __str__(self) -> str:
        if not self.reached:
            return f"not reached in {self.budget_seconds_per_image:.3g} s ({self.budget_step} steps)"
        if self.exact:
            return f"{self.seconds_per_image:.3g} s (step {self.step})"
        return (f"{self.earliest_seconds_per_image:.3g}-{self.seconds_per_image:.3g} s "
                f"(after step {self.earliest_step}, by step {self.step})")


def _meets(value: float, target: float, direction: str) -> bool:
    if not math.isfinite(value):
        return False
    return value <= target if direction == "lower" else value >= target


def time_to_target(points: Sequence[AnytimePoint], target: float, direction: str = "lower") -> TimeToTarget:
    """The first milestone of ``points`` (in time order) whose value meets ``target``.

    direction: the metric's direction ("lower" is better, e.g. MSE: reached when value <= target).
    Non-finite values never meet a target.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if not points:
        raise ValueError("empty curve")
    if not math.isfinite(target):
        raise ValueError(f"target must be finite, got {target}")
    last = points[-1]
    for k, p in enumerate(points):
        if _meets(p.value, target, direction):
            before = points[k - 1] if k else None
            if before is not None:
                earliest, earliest_step = before.seconds_per_image, before.step
            elif p.step == 0:  # the start itself: nothing before it to bracket
                earliest, earliest_step = p.seconds_per_image, 0
            else:              # first milestone after the start: met somewhere in (0, p]
                earliest, earliest_step = 0.0, 0
            return TimeToTarget(target=float(target), direction=direction, reached=True,
                                seconds_per_image=p.seconds_per_image, step=p.step, value=p.value,
                                budget_seconds_per_image=last.seconds_per_image, budget_step=last.step,
                                earliest_seconds_per_image=earliest, earliest_step=earliest_step)
    return TimeToTarget(target=float(target), direction=direction, reached=False, seconds_per_image=None,
                        step=None, value=None, budget_seconds_per_image=last.seconds_per_image,
                        budget_step=last.step)


@dataclass(frozen=True)
class Speedup:
    """How many times less time ``fast`` needs than ``slow`` to reach the same target.

    kind: "ratio" (both reached: ``value`` = slow / fast), "at least" (only ``fast`` reached:
    ``value`` = slow's budget / fast's time, a lower bound), "at most" (only ``slow`` reached:
    slow's time / fast's budget, an upper bound), "none" (neither reached: ``value`` None).
    A zero time on the fast side (an encoder's start measured as 0) gives ``value`` inf.
    ``low``/``high``: the range the milestone brackets allow (slow's earliest over fast's latest time,
    slow's latest over fast's earliest); "at least" has no upper end (inf), "at most" no lower one (0).
    """

    kind: str
    value: Optional[float]
    fast: TimeToTarget
    slow: TimeToTarget
    low: Optional[float] = None
    high: Optional[float] = None

    def __str__(self) -> str:
        if self.kind == "none":
            return "neither reached"
        text = f"{self.value:.3g}x"
        if self.kind != "ratio":
            return f"{self.kind} {text}"
        if self.low is not None and self.high is not None and (self.low, self.high) != (self.value,) * 2:
            text += f" (range {self.low:.2g}x-{self.high:.2g}x)"
        return text


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return math.inf if num > 0 else math.nan
    return num / den


def speedup(fast: TimeToTarget, slow: TimeToTarget) -> Speedup:
    """``slow`` / ``fast`` time to the same target (e.g. idinvert vs image2stylegan, the paper's ~36x)."""
    if (fast.target, fast.direction) != (slow.target, slow.direction):
        raise ValueError(f"times to different targets: {fast.target} ({fast.direction}) vs "
                         f"{slow.target} ({slow.direction})")
    if fast.reached and slow.reached:
        return Speedup("ratio", _ratio(slow.seconds_per_image, fast.seconds_per_image), fast, slow,
                       low=_ratio(slow.earliest_seconds_per_image, fast.seconds_per_image),
                       high=_ratio(slow.seconds_per_image, fast.earliest_seconds_per_image))
    if fast.reached:  # slow needs more than its budget: the ratio is at least this, with no upper end
        value = _ratio(slow.budget_seconds_per_image, fast.seconds_per_image)
        return Speedup("at least", value, fast, slow, low=value, high=math.inf)
    if slow.reached:  # fast needs more than its budget: at most this, with no lower end
        value = _ratio(slow.seconds_per_image, fast.budget_seconds_per_image)
        return Speedup("at most", value, fast, slow, low=0.0, high=value)
    return Speedup("none", None, fast, slow)


# ------------------------------------------------------------------------------------------------
# From the loop's milestones to per-image curves (what the runner stores, one row per image and step)
# ------------------------------------------------------------------------------------------------

def milestone_values(milestones: Sequence[Any], metric: Callable[[Any], Any]) -> np.ndarray:
    """``milestones``: the loop's ``Milestone`` list of one batch (``.codes`` [B, L, D], ``.failed``
    [B]); ``metric``: codes [B, L, D] -> per-image values [B] (e.g. the MSE of G(codes) to the batch's
    images). -> [B, K] float64, nan where the image had failed by that milestone."""
    if not milestones:
        raise ValueError("no milestones")
    cols = []
    for m in milestones:
        values = np.asarray(_to_numpy(metric(m.codes)), dtype=np.float64).reshape(-1)
        failed = np.asarray(_to_numpy(m.failed), dtype=bool).reshape(-1)
        if values.shape != failed.shape:
            raise ValueError(f"metric gave {values.shape[0]} values for a batch of {failed.shape[0]}")
        cols.append(np.where(failed, np.nan, values))
    return np.stack(cols, axis=1)


def pooled_seconds_per_image(batches: Sequence[tuple[Sequence[int], Sequence[float], int]]
                             ) -> tuple[list[int], list[float]]:
    """Seconds per image at each milestone over several batches: ``batches`` = [(steps, seconds of the
    whole batch at each step, batch size)], all with the same steps -> (steps, total seconds / total
    images). A small last batch is weighed by its size, so this is the time per image of the run."""
    if not batches:
        raise ValueError("no batches")
    steps = [int(s) for s in batches[0][0]]
    total = np.zeros(len(steps))
    images = 0
    for b_steps, seconds, size in batches:
        if [int(s) for s in b_steps] != steps:
            raise ValueError(f"batches have different milestones: {steps} vs {list(b_steps)}")
        if size < 1 or len(seconds) != len(steps):
            raise ValueError(f"bad batch: size {size}, {len(seconds)} times for {len(steps)} milestones")
        total += np.asarray(seconds, dtype=np.float64)
        images += int(size)
    return steps, (total / images).tolist()


def _to_numpy(x: Any) -> Any:
    if hasattr(x, "detach"):
        return x.detach().cpu().double().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return x


# ------------------------------------------------------------------------------------------------
# Fitting a long budget into a run's time: a documented subset, never a silently shorter budget
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SubsetPlan:
    """How many images (the first ``n_images`` of the evaluated set, so that paired comparisons with
    other methods use the same images) run the full ``steps``; ``full`` when that is all of them."""

    n_images: int
    n_available: int
    steps: int
    expected_seconds: float
    full: bool
    reason: str


def subset_for_budget(seconds_per_image_step: float, steps: int, seconds_available: float,
                      n_available: int, min_images: int = 8) -> SubsetPlan:
    """The largest number of images whose ``steps``-step optimisation fits ``seconds_available``,
    given a measured cost per image and step; at least ``min_images`` (the run then takes longer
    than asked, and says so) and at most ``n_available``."""
    if seconds_per_image_step <= 0 or not math.isfinite(seconds_per_image_step):
        raise ValueError(f"seconds per image-step must be a positive number, got {seconds_per_image_step}")
    if steps < 1 or n_available < 1 or min_images < 1:
        raise ValueError(f"steps, n_available and min_images must be >= 1, got {steps}, {n_available}, "
                         f"{min_images}")
    per_image = seconds_per_image_step * steps
    fits = int(max(seconds_available, 0.0) // per_image)
    n = min(n_available, max(fits, min(min_images, n_available)))
    if n == n_available:
        reason = f"all {n} images fit ({n * per_image:.0f} s of {seconds_available:.0f} s)"
    elif fits >= min_images:
        reason = (f"{n} of {n_available} images: {steps} steps cost {per_image:.1f} s per image and "
                  f"{seconds_available:.0f} s are available")
    else:
        reason = (f"{n} of {n_available} images (the minimum): only {fits} fit in "
                  f"{seconds_available:.0f} s at {per_image:.1f} s per image, so this takes longer")
    return SubsetPlan(n_images=n, n_available=n_available, steps=steps,
                      expected_seconds=n * per_image, full=n == n_available, reason=reason)


# ------------------------------------------------------------------------------------------------
# The time-to-quality table
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """A quality to reach: ``value`` of a metric with ``direction``, named by where it comes from
    (e.g. "image2stylegan final MSE", "idinvert MSE at 100 steps")."""

    name: str
    metric: str
    value: float
    direction: str = "lower"


def target_from(points: Sequence[AnytimePoint], name: str, metric: str, step: Optional[int] = None,
                direction: str = "lower") -> Target:
    """A target read off a measured curve: its value at ``step`` (default: the last milestone)."""
    return Target(name=name, metric=metric, value=value_at(points, step), direction=direction)


def time_to_quality_table(curves: Mapping[str, Mapping[str, Sequence[AnytimePoint]]],
                          targets: Sequence[Target], fast: str = "idinvert",
                          slow: str = "image2stylegan") -> list[dict[str, Any]]:
    """One row per target: for every method, its :class:`TimeToTarget`; and the speed-up of ``fast``
    over ``slow`` (:class:`Speedup`; None when either method has no curve for the metric).

    curves: {method: {metric: points}}. A method without a curve for a target's metric is left out of
    that row (not "not reached": it was not measured).
    """
    rows = []
    for t in targets:
        times = {m: time_to_target(c[t.metric], t.value, t.direction)
                 for m, c in curves.items() if t.metric in c}
        ratio = speedup(times[fast], times[slow]) if fast in times and slow in times else None
        rows.append({"target": t, "times": times, "speedup": ratio, "fast": fast, "slow": slow})
    return rows
