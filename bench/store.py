"""The results store: one SQLite file (stdlib ``sqlite3``, WAL mode) under the results directory.

Tables
  runs      one row per (method, hyperparameters, bundle, data, seed, code version): the run key.
  images    per-image rows: status (ok | failed), failure reason, seconds, per-image metrics (JSON).
  metrics   set-level rows: value or NULL with status "unavailable" and the reason in ``detail``.
  curves    named curves of a run (precision-recall per attribute, ...), JSON.
  artifacts files a run wrote (codes, reconstructions, grids), paths relative to the results dir.
  sweeps    groups of runs made by ``bench ablate``.

Crash safety: every write is one transaction (``BEGIN IMMEDIATE``); a run is marked ``complete`` in the
same transaction that stores its set-level metrics, so a process killed at any point leaves either a
``running`` run (resumed by the next identical command) or a complete one, never a half-written run that
looks complete. Several processes may write to one store: WAL plus a busy timeout serialises them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

SCHEMA_VERSION = 1
DB_NAME = "bench.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    params TEXT NOT NULL,
    bundle TEXT NOT NULL,
    bundle_fingerprint TEXT NOT NULL,
    dataset TEXT NOT NULL,
    dataset_fingerprint TEXT NOT NULL,
    n_images INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    code_version TEXT NOT NULL,
    torch_version TEXT NOT NULL,
    device TEXT NOT NULL,
    num_threads INTEGER NOT NULL,
    world_size INTEGER NOT NULL DEFAULT 1,
    sweep_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'complete')),
    started REAL NOT NULL,
    finished REAL,
    env TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS images (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    image_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    reason TEXT,
    seconds REAL,
    metrics TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, image_id)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    name TEXT NOT NULL,
    value REAL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'unavailable')),
    detail TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS curves (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, kind, path)
);
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id TEXT PRIMARY KEY,
    param TEXT NOT NULL,
    "values" TEXT NOT NULL,
    methods TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_by_run ON images(run_id);
CREATE INDEX IF NOT EXISTS runs_by_sweep ON runs(sweep_id);
"""


class StoreError(RuntimeError):
    """The store is unusable (wrong schema version, not a results database, ...)."""


@dataclass(frozen=True)
class RunSpec:
    """Everything that identifies a run; the run id is a hash of it, so an identical command resumes."""

    method: str
    params: dict[str, Any]
    bundle: str
    bundle_fingerprint: str
    dataset: str
    dataset_fingerprint: str
    n_images: int
    seed: int
    code_version: str

    @property
    def run_id(self) -> str:
        key = json.dumps(
            [self.method, self.params, self.bundle, self.bundle_fingerprint, self.dataset,
             self.dataset_fingerprint, self.n_images, self.seed, self.code_version],
            sort_keys=True, default=str,
        )
        return f"{self.method}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=_json_default, allow_nan=False)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class Store:
    """Results store at ``results_dir/bench.sqlite``. Cheap to open; use as a context manager or ``close()``."""

    def __init__(self, results_dir: str | Path):
        self.root = Path(results_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / DB_NAME
        try:
            self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=60000")
            with self._transaction() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif int(row["value"]) != SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path} has results schema version {row['value']}, this code reads version "
                        f"{SCHEMA_VERSION}; use another --results directory or migrate it")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable results database: {exc}") from exc

    # -- plumbing -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield _Cursor(cur)
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs -----------------------------------------------------------------------------------------
    def begin_run(self, spec: RunSpec, *, torch_version: str, device: str, num_threads: int,
                  world_size: int = 1, sweep_id: str | None = None, env: dict | None = None) -> tuple[str, str]:
        """Create the run, or find the existing one. Returns ``(run_id, status)``."""
        run_id = spec.run_id
        with self._transaction() as db:
            row = db.execute("SELECT status, sweep_id FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is not None:
                if sweep_id and not row["sweep_id"]:
                    db.execute("UPDATE runs SET sweep_id=? WHERE run_id=?", (sweep_id, run_id))
                return run_id, row["status"]
            db.execute(
                "INSERT INTO runs (run_id, method, params, bundle, bundle_fingerprint, dataset, "
                "dataset_fingerprint, n_images, seed, code_version, torch_version, device, num_threads, "
                "world_size, sweep_id, status, started, env) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, spec.method, _json(spec.params), spec.bundle, spec.bundle_fingerprint, spec.dataset,
                 spec.dataset_fingerprint, spec.n_images, spec.seed, spec.code_version, torch_version, device,
                 num_threads, world_size, sweep_id, "running", time.time(), _json(env or {})),
            )
        return run_id, "running"

    def reset_run(self, run_id: str) -> None:
        """``--fresh``: drop everything a run stored, keeping its identity; it starts again as running."""
        with self._transaction() as db:
            for table in ("images", "metrics", "curves", "artifacts"):
                db.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
            db.execute("UPDATE runs SET status='running', started=?, finished=NULL WHERE run_id=?",
                       (time.time(), run_id))

    def update_run_env(self, run_id: str, *, device: str, num_threads: int, world_size: int) -> None:
        """A resumed run records where its latest part ran."""
        with self._transaction() as db:
            db.execute("UPDATE runs SET device=?, num_threads=?, world_size=? WHERE run_id=?",
                       (device, num_threads, world_size, run_id))

    def complete_run(self, run_id: str, metrics: Iterable["MetricRow"] = (),
                     curves: dict[str, Any] | None = None) -> None:
        """Store set-level metrics and curves and mark the run complete, atomically."""
        with self._transaction() as db:
            self._write_metrics(db, run_id, metrics)
            for name, data in (curves or {}).items():
                db.execute("INSERT OR REPLACE INTO curves VALUES (?,?,?)", (run_id, name, _json(data)))
            db.execute("UPDATE runs SET status='complete', finished=? WHERE run_id=?", (time.time(), run_id))

    def add_metrics(self, run_id: str, metrics: Iterable["MetricRow"]) -> None:
        with self._transaction() as db:
            self._write_metrics(db, run_id, metrics)

    @staticmethod
    def _write_metrics(db: Any, run_id: str, metrics: Iterable["MetricRow"]) -> None:
        for m in metrics:
            value = _finite_or_none(m.value)
            status = m.status if value is not None or m.status == "unavailable" else "unavailable"
            detail = dict(m.detail)
            if m.value is not None and value is None:
                detail.setdefault("reason", f"non-finite value {m.value!r}")
            db.execute("INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?)",
                       (run_id, m.name, value, status, _json(detail)))

    def runs(self, *, status: str | None = None, run_id: str | None = None,
             sweep_id: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM runs WHERE 1=1", []
        for col, val in (("status", status), ("run_id", run_id), ("sweep_id", sweep_id)):
            if val is not None:
                sql += f" AND {col}=?"
                args.append(val)
        rows = self._db.execute(sql + " ORDER BY started", args).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["params"] = json.loads(d["params"])
            d["env"] = json.loads(d["env"])
            out.append(d)
        return out

    # -- per-image rows -------------------------------------------------------------------------------
    def add_images(self, run_id: str, rows: Sequence["ImageRow"],
                   artifacts: Sequence[tuple[str, str, dict]] = ()) -> None:
        """Write one finished batch (and the artifact files it produced) in one transaction."""
        with self._transaction() as db:
            for r in rows:
                db.execute(
                    "INSERT OR REPLACE INTO images VALUES (?,?,?,?,?,?,?)",
                    (run_id, r.image_id, r.idx, r.status, r.reason, _finite_or_none(r.seconds),
                     _json({k: _finite_or_none(v) for k, v in r.metrics.items()})),
                )
            for kind, path, meta in artifacts:
                db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?)", (run_id, kind, path, _json(meta)))

    def images(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM images WHERE run_id=? ORDER BY idx", (run_id,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["metrics"] = json.loads(d["metrics"])
            out.append(d)
        return out

    def done_image_ids(self, run_id: str) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT image_id FROM images WHERE run_id=?", (run_id,))}

    # -- set-level rows, curves, artifacts --------------------------------------------------------------
    def metrics(self, run_id: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM metrics", []
        if run_id is not None:
            sql, args = sql + " WHERE run_id=?", [run_id]
        return self._decoded(sql + " ORDER BY run_id, name", args, "detail")

    def curves(self, run_id: str) -> dict[str, Any]:
        return {r["name"]: json.loads(r["data"])
                for r in self._db.execute("SELECT name, data FROM curves WHERE run_id=?", (run_id,))}

    def artifacts(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM artifacts WHERE run_id=?", [run_id]
        if kind is not None:
            sql += " AND kind=?"
            args.append(kind)
        return self._decoded(sql + " ORDER BY kind, path", args, "meta")

    def _decoded(self, sql: str, args: Sequence[Any], json_column: str) -> list[dict[str, Any]]:
        """Rows of ``sql`` as dicts, with ``json_column`` parsed."""
        return [{**dict(r), json_column: json.loads(r[json_column])} for r in self._db.execute(sql, args).fetchall()]

    def add_artifacts(self, run_id: str, artifacts: Sequence[tuple[str, str, dict]]) -> None:
        with self._transaction() as db:
            for kind, path, meta in artifacts:
                db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?)", (run_id, kind, path, _json(meta)))

    # -- sweeps ---------------------------------------------------------------------------------------
    def add_sweep(self, param: str, values: Sequence[Any], methods: Sequence[str]) -> str:
        key = _json([param, list(values), list(methods)])
        sweep_id = f"sweep-{param}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
        with self._transaction() as db:
            db.execute('INSERT OR IGNORE INTO sweeps (sweep_id, param, "values", methods, created) '
                       "VALUES (?,?,?,?,?)", (sweep_id, param, _json(list(values)), _json(list(methods)),
                                              time.time()))
        return sweep_id

    def sweeps(self) -> list[dict[str, Any]]:
        out = []
        for r in self._db.execute("SELECT * FROM sweeps ORDER BY created").fetchall():
            d = dict(r)
            d["values"] = json.loads(d["values"])
            d["methods"] = json.loads(d["methods"])
            out.append(d)
        return out


class _Cursor:
    """Thin wrapper so transactions expose ``execute`` only."""

    def __init__(self, cur: sqlite3.Cursor):
        self._cur = cur

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._cur.execute(sql, args)


@dataclass
class ImageRow:
    image_id: str
    idx: int
    status: str = "ok"
    reason: str | None = None
    seconds: float | None = None
    metrics: dict[str, float | None] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.metrics is None:
            self.metrics = {}


@dataclass
class MetricRow:
    name: str
    value: float | None
    status: str = "ok"
    detail: dict[str, Any] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.detail is None:
            self.detail = {}

    @classmethod
    def unavailable(cls, name: str, reason: str, **detail: Any) -> "MetricRow":
        return cls(name, None, "unavailable", {"reason": reason, **detail})
