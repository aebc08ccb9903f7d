"""The metric registry: every number the benchmark stores has one entry here, and every consumer reads it.

An entry says what the number is (``description``, ``label``, ``unit``), which way is better
(``direction``), when it is computed (``level``: per image as batches finish, per set at the end of a run,
or in the semantic analysis), what it needs, how it aggregates, which table shows it, and which function
computes it from a metric context (``bench.metrics.context.MetricContext``); and the facts other parts
act on: whether anytime runs follow it (``anytime``), its place in sweeps (``sweep``) and in the speed
scatter (``scatter_rank``), the reference runs shown with it and the controls read beside a claim on it
(``references``, ``controls``), and what a claim's bootstrap recomputes it from (``bootstrap``). The
evaluator, quality-time curves, ``bench table``, the report, the claims and ``bench ls`` all read this
registry; none keeps a list of its own.

A metric is one module: its function and its registration side by side (``@metric(...)``, or
``register(Metric(...))`` for a family's rows that another entry's function computes). The built-in
ones live in ``bench.metrics.reconstruction``, ``code_metrics`` and ``semantic_metrics``, imported by
the package ``bench.metrics``; this module imports none of them.

A metric function takes the context and returns:
    per_image: a tensor [B] (one value per image of the batch in ``ctx.images``);
    set / semantic: a float, a ``MetricRow``, or a list of ``MetricRow`` (a family: ``ap_<attr>`` ...);
and raises ``MetricUnavailable(reason)`` when it cannot be computed (stored with the reason).
Entries of a family that one function computes name it in ``computed_by`` and have no ``fn``.

Functions are given as callables or lazy ``"module:attr"`` strings. Importing this module -- and the
built-in metric modules -- constructs no network and imports no torch, so the report reads it without.
A function sees the context through ``MetricContext.for_metric``: reading what its ``needs`` do not
declare raises ``UndeclaredNeed``.

Vocabulary of ``needs``:

    images            the real images            recons          their reconstructions G(codes)
    codes             the inverted W+ codes      generator       the bundle's G
    eval_network      the evaluation network (ctx.eval_embedding: the bundle's judge, evaluation only)
    reference         a real set disjoint from the test images (real-vs-real floors)
    boundaries        attribute boundaries (unit normals in W)
    labels            ground-truth attribute labels of the images
    lpips_weights     torchvision's ImageNet AlexNet file (for the ``lpips`` package)
    inception_weights pytorch-fid's FID Inception file
    identity_weights  ArcFace IR-SE50 (model_ir_se50.pth, the identity network of pSp / e4e / ReStyle)
    timing            wall-clock timing of ``invert``

A name may hold the placeholder ``<attr>`` (``ap_<attr>``): ``get("ap_age")`` finds that template.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from idinvert.registry import Registry, UnknownName, load_ref

DIRECTIONS = ("lower", "higher")
LEVELS = ("per_image", "set", "semantic")
AGGREGATES = ("mean_ci", "value")
TABLES = ("inversion", "codes", "interpolation", "manipulation", "attributes")
NEEDS = (
    "images", "recons", "codes", "generator", "eval_network", "reference", "boundaries", "labels",
    "lpips_weights", "inception_weights", "identity_weights", "timing",
)
ANYTIME = ("measured", "plotted")
SWEEP = ("column", "x", "y")
BOOTSTRAP = ("per_image", "seconds", "frechet", "ap", "edits", "detail")
ATTR = "<attr>"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(<attr>[a-z0-9_]*)?$")

UnknownMetric = UnknownName


@dataclass(frozen=True)
class Metric:
    """One registered metric (see the module docstring for the meaning of each field)."""

    name: str
    direction: str  # "lower" | "higher": which way is better
    level: str  # "per_image" | "set" | "semantic"
    needs: tuple[str, ...]
    description: str
    fn: str | Callable | None = None  # (ctx) -> value(s); "module:attr" is imported on first use
    label: str | None = None  # column header; default: the name
    unit: str | None = None
    aggregate: str = "value"  # "mean_ci": mean of per-image values with a 95% CI; "value": as returned
    table: str | None = None  # the report / `bench table` table that shows it (None: long format only)
    stands_in_for: str | None = None  # the ImageNet metric this domain metric replaces when absent
    computed_by: str | None = None  # the entry whose fn produces this row (families)
    # Shown in its table only when some run has a value: a metric most bundles cannot have (identity
    # similarity needs aligned faces and IR-SE50) would otherwise add an empty column to every table.
    only_when_present: bool = False
    # Followed along an anytime run: "measured" at every milestone (per image as batches finish, per set
    # at the end of the run), "plotted" also in the quality-time figure; a plotted per-image metric is a
    # time-to-quality target. None: measured at the final step only.
    anytime: str | None = None
    # In the report's sweep tables: "column", or also an axis of the sweep's trade-off figure: "x" (what a
    # hyperparameter costs, e.g. reconstruction error) or "y" (what it buys, e.g. edit success).
    sweep: str | None = None
    scatter_rank: int | None = None  # a panel of the report's quality-vs-speed scatter, lowest rank first
    # The reference runs (controls, ``bench.tables.REFERENCE_METHODS``) whose row its table shows, and
    # the controls read beside a claim on it: ((method, what it is), ...).
    references: tuple[str, ...] = ()
    controls: tuple[tuple[str, str], ...] = ()
    # What a claim's bootstrap recomputes it from: "per_image" (its per-image values: a mean), "seconds"
    # (the per-image invert() times), "frechet" (stored features of both sets), "ap" (stored scores and
    # labels), "edits" (stored edit counts), "detail" (per-image values in its row's detail); None: no
    # claim can be judged on it.
    bootstrap: str | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"bad metric name {self.name!r}: lowercase letters, digits, '_' "
                             f"(and at most one {ATTR!r})")
        for value, allowed, what in ((self.direction, DIRECTIONS, "direction"), (self.level, LEVELS, "level"),
                                     (self.aggregate, AGGREGATES, "aggregate")):
            if value not in allowed:
                raise ValueError(f"{self.name}: {what} must be one of {allowed}, got {value!r}")
        if self.table is not None and self.table not in TABLES:
            raise ValueError(f"{self.name}: table must be one of {TABLES} or None, got {self.table!r}")
        unknown = [n for n in self.needs if n not in NEEDS]
        if unknown:
            raise ValueError(f"{self.name}: unknown needs {unknown}; known: {NEEDS}")
        for value, allowed, what in ((self.anytime, ANYTIME, "anytime"), (self.sweep, SWEEP, "sweep"),
                                     (self.bootstrap, BOOTSTRAP, "bootstrap")):
            if value is not None and value not in allowed:
                raise ValueError(f"{self.name}: {what} must be one of {allowed} or None, got {value!r}")
        if isinstance(self.fn, str) and ":" not in self.fn:
            raise ValueError(f"{self.name}: fn must be 'module:attr' or a callable, got {self.fn!r}")

    @property
    def is_template(self) -> bool:
        return ATTR in self.name

    @property
    def display(self) -> str:
        return self.label or self.name

    def attribute_of(self, name: str) -> str | None:
        """The attribute of ``name``, a concrete name of this template (``age`` of ``ap_age``); None for
        an entry that is no template."""
        if not self.is_template:
            return None
        prefix, suffix = self.name.split(ATTR)
        return name[len(prefix):len(name) - len(suffix)] if suffix else name[len(prefix):]

    def label_for(self, name: str) -> str:
        """The column label of ``name`` (a concrete name of this entry: ``ap_age`` for ``ap_<attr>``)."""
        attr = self.attribute_of(name)
        if attr is None:
            return self.display
        return (self.label or "{attr}").replace(ATTR, attr).replace("{attr}", attr)

    def better(self, a: float, b: float) -> bool:
        """True when value ``a`` is strictly better than ``b`` for this metric."""
        return a < b if self.direction == "lower" else a > b

    def load(self) -> Callable:
        """The computing function (a lazy ``"module:attr"`` is imported only now)."""
        if self.fn is None:
            owner = f"with {self.computed_by!r}" if self.computed_by else "by the runner"
            raise LookupError(f"metric {self.name!r} is computed {owner}, not by a function of its own")
        return load_ref(self.fn) if isinstance(self.fn, str) else self.fn


METRICS: Registry[Metric] = Registry("metric")


def register(metric: Metric, replace: bool = False) -> Metric:
    """Add ``metric``; registering a different metric under a taken name is an error unless ``replace``."""
    old = METRICS._entries.get(metric.name)
    if old is not None and old != metric and not replace:
        raise ValueError(f"metric {metric.name!r} is already registered")
    METRICS.add(metric.name, metric, replace=True)
    return metric


def metric(name: str, direction: str, level: str, needs: tuple[str, ...], description: str,
           **fields: Any) -> Callable[[Callable], Callable]:
    """Decorator: register the decorated function ``(ctx) -> value(s)`` as metric ``name``.

        @metric("mean_abs", "lower", "per_image", ("images", "recons"), "mean |x - G(w)|", table="inversion")
        def mean_abs(ctx):
            return (ctx.images - ctx.recons).abs().flatten(1).mean(1)
    """
    def wrap(fn: Callable) -> Callable:
        register(Metric(name, direction, level, tuple(needs), description, fn=fn, **fields))
        return fn
    return wrap


def unregister(name: str) -> None:
    METRICS.remove(name)


def _template_match(name: str) -> Metric | None:
    for entry in METRICS.values():
        if entry.is_template:
            prefix, suffix = entry.name.split(ATTR)
            if (name.startswith(prefix) and name.endswith(suffix)
                    and len(name) > len(prefix) + len(suffix)):
                return entry
    return None


def get(name: str) -> Metric:
    """The metric called ``name``; ``ap_age`` resolves to the ``ap_<attr>`` template."""
    if name in METRICS:
        return METRICS.get(name)
    template = _template_match(name)
    if template is not None:
        return template
    return METRICS.get(name)  # raises UnknownMetric with a suggestion


def find(name: str) -> Metric | None:
    """Like :func:`get`, but None for a name the registry does not know (e.g. in an old store)."""
    try:
        return get(name)
    except UnknownMetric:
        return None


def all_metrics(level: str | None = None, table: str | None = None, **facts: Any) -> list[Metric]:
    """Registered metrics in registration order, optionally of one level / one table, and with the given
    values of other fields (``all_metrics(anytime="plotted")``; ``True``: the field is set at all)."""
    def is_set(value: Any) -> bool:  # 0 is a value (a rank), unlike None / False / ()
        return value is not None and value is not False and value != ()

    def keeps(m: Metric) -> bool:
        return all(is_set(getattr(m, k)) if v is True else getattr(m, k) == v for k, v in facts.items())
    return [m for m in METRICS.values()
            if (level is None or m.level == level) and (table is None or m.table == table) and keeps(m)]


def names(level: str | None = None, table: str | None = None, **facts: Any) -> list[str]:
    """The names of :func:`all_metrics` (templates such as ``ap_<attr>`` included as they are)."""
    return [m.name for m in all_metrics(level, table, **facts)]


def direction_of(name: str) -> str:
    """'lower' or 'higher' for a stored metric name ('lower' for one the registry does not know)."""
    entry = find(name)
    return entry.direction if entry is not None else "lower"


def label_of(name: str) -> str:
    entry = find(name)
    return entry.label_for(name) if entry is not None else name


def speed_metric() -> str:
    """The metric that times the methods' ``invert()`` (the one that needs only ``timing``): the speed
    axis of the report's scatter and the seconds of a matched-budget row."""
    timed = [m.name for m in METRICS.values() if m.needs == ("timing",)]
    if len(timed) != 1:
        raise LookupError(f"expected one registered metric that needs only 'timing', found {timed}")
    return timed[0]


def stand_ins() -> dict[str, str]:
    """ImageNet metric -> the domain metric that stands in for it when its weights are absent."""
    return {m.stands_in_for: m.name for m in METRICS.values() if m.stands_in_for}
