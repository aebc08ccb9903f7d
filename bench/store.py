"""The results store: one SQLite file (stdlib ``sqlite3``, WAL mode) under the results directory.

Tables
  runs      one row per (method, hyperparameters, bundle, data, seed, code version): the run key.
  images    per-image rows: status (ok | failed), failure reason, seconds, per-image metrics (JSON).
  metrics   set-level rows: value or NULL with status "unavailable" and the reason in ``detail``.
  curves    named curves of a run (precision-recall per attribute, ...), JSON.
  artifacts files a run wrote (codes, reconstructions, grids), paths relative to the results dir.
  sweeps    groups of runs made by ``bench ablate``.
  milestones          anytime points per (run, image, step): the per-image metrics of the codes after
                      ``step`` optimisation steps and the seconds per image of its batch up to there
                      (an encoder method is one point at step 0). Written with the batch's image rows.
  milestone_metrics   set-level metrics per (run, step) (fid_domain, ap_mean), written with the run's
                      completion.

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
import random
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from bench.errors import DamagedStore, EnvironmentProblem, environment_error, is_environment_error
from bench.metrics.rows import MetricRow  # noqa: F401  (re-exported: the store writes these rows)

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
CREATE TABLE IF NOT EXISTS leases (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE IF NOT EXISTS milestones (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    image_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    step INTEGER NOT NULL,
    seconds REAL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    metrics TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, image_id, step)
);
CREATE TABLE IF NOT EXISTS milestone_metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'unavailable')),
    detail TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, step, name)
);
CREATE TABLE IF NOT EXISTS ingredients (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    metric TEXT NOT NULL,
    key TEXT NOT NULL,
    ids TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_id, metric, key)
);
CREATE INDEX IF NOT EXISTS images_by_run ON images(run_id);
CREATE INDEX IF NOT EXISTS runs_by_sweep ON runs(sweep_id);
"""


class StoreError(EnvironmentProblem):
    """The store is unusable (wrong schema version, read-only, disk full, ...): exit code 1."""


class StoreDamaged(StoreError, DamagedStore):
    """The store fails ``PRAGMA quick_check`` or is not an SQLite database; the message says how to recover."""


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


def _npy_bytes(array: Any) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def _npy_array(data: bytes) -> Any:
    import io

    import numpy as np

    return np.load(io.BytesIO(data), allow_pickle=False)


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class Store:
    """Results store at ``results_dir/bench.sqlite``. Cheap to open; use as a context manager or ``close()``.

    ``readonly=True`` (``bench table``, ``bench report``) never writes: it needs no write permission on
    the folder, and reads a store on read-only media (then opened ``immutable``, without WAL files).
    Every open runs ``PRAGMA quick_check``: a damaged store is reported, with how to recover, before any
    command reads from it or adds to it.
    """

    def __init__(self, results_dir: str | Path, *, readonly: bool = False):
        self.root = Path(results_dir)
        self.path = self.root / DB_NAME
        self.readonly = readonly
        try:
            if readonly:
                if not self.path.is_file():
                    raise StoreError(f"no results store in {self.root}/ ({DB_NAME} is missing): "
                                     "run 'python -m bench run' first")
                self._db = self._open_readonly()
            else:
                try:
                    self.root.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    if is_environment_error(exc):
                        raise environment_error(exc, self.root, "create the results folder") from None
                    raise
                self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._check_integrity()
            if readonly:
                self._check_schema_version()
                return
            self._enable_wal()
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=60000")
            with self._transaction() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif int(row["value"]) != SCHEMA_VERSION:
                    raise StoreError(self._version_message(row["value"]))
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) or StoreDamaged(self._damage_message(exc)) from None

    def _enable_wal(self, patience_s: float = 60.0) -> None:
        """Switch the store to WAL mode (persistent, so usually a no-op).

        SQLite answers the switch with "database is locked" *at once*, without waiting on the busy
        timeout, when another process opens the same new store at the same moment (measured: 46 of 1,200
        openers in 200 six-way races). Retry with backoff for ``patience_s``, as the busy timeout would.
        """
        deadline = time.monotonic() + patience_s
        delay = 0.005
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                msg = str(exc).lower()
                if ("locked" not in msg and "busy" not in msg) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)

    def _open_readonly(self) -> sqlite3.Connection:
        """``mode=ro`` (sees a live writer's WAL), else ``immutable=1`` where the folder cannot be written
        (read-only media, no permission): SQLite then opens no -wal/-shm file at all."""
        uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}"
        try:
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60.0, isolation_level=None)
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=60.0, isolation_level=None)

    def _check_integrity(self) -> None:
        rows = [r[0] for r in self._db.execute("PRAGMA quick_check").fetchall()]
        if rows != ["ok"]:
            raise StoreDamaged(self._damage_message("; ".join(str(r) for r in rows[:3])))

    def _check_schema_version(self) -> None:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError:  # no meta table: not one of ours
            raise StoreDamaged(self._damage_message("no results tables")) from None
        if row is None or int(row["value"]) != SCHEMA_VERSION:
            raise StoreError(self._version_message(row["value"] if row else "(none)"))

    def _version_message(self, found: Any) -> str:
        return (f"{self.path} has results schema version {found}, this code reads version "
                f"{SCHEMA_VERSION}; use another --results directory or migrate it")

    def _damage_message(self, detail: Any) -> str:
        return (f"results store {self.path} is not a usable results database: it is damaged ({detail}). "
                f"To recover: move it aside (mv {self.path} {self.path}.damaged) and rerun your commands, "
                f"which recompute the runs; `sqlite3 {self.path}.damaged .recover` may salvage its rows. "
                f"The per-run files under {self.root / 'runs'} (codes, images) are still there")

    def _translate(self, exc: sqlite3.DatabaseError) -> Exception | None:
        """An SQLite error the user can act on, as a one-line error; None for anything else (a bug)."""
        msg = str(exc).lower()
        if any(w in msg for w in ("malformed", "not a database", "disk image", "encrypted", "corrupt")):
            return StoreDamaged(self._damage_message(exc))
        if "full" in msg:
            return StoreError(f"cannot write results store {self.path}: {exc} (free some space and rerun the "
                              "same command to resume)")
        if "readonly" in msg or "read-only" in msg:
            return StoreError(f"cannot write results store {self.path}: {exc} (the folder is read-only; "
                              "give another --results folder)")
        if "unable to open" in msg or "i/o error" in msg:
            return StoreError(f"cannot open results store {self.path}: {exc}")
        if "locked" in msg or "busy" in msg:
            return StoreError(f"results store {self.path} stayed locked by another process for 60 s: {exc}")
        return None

    def _q(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """A read outside a transaction (all rows), with SQLite's user-actionable errors translated."""
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) or exc

    # -- plumbing -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        if self.readonly:
            raise RuntimeError(f"Store({self.root}) was opened read-only")
        cur = self._db.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) or exc
        try:
            yield _Cursor(cur, self._translate)
        except BaseException:
            try:
                cur.execute("ROLLBACK")
            except sqlite3.DatabaseError:
                pass  # the transaction may already be gone (disk full); the original error matters
            raise
        else:
            try:
                cur.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                raise self._translate(exc) or exc

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
            for table in ("images", "metrics", "curves", "artifacts", "milestones", "milestone_metrics",
                          "ingredients"):
                db.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
            db.execute("UPDATE runs SET status='running', started=?, finished=NULL WHERE run_id=?",
                       (time.time(), run_id))

    def update_run_env(self, run_id: str, *, device: str, num_threads: int, world_size: int) -> None:
        """A resumed run records where its latest part ran."""
        with self._transaction() as db:
            db.execute("UPDATE runs SET device=?, num_threads=?, world_size=? WHERE run_id=?",
                       (device, num_threads, world_size, run_id))

    def merge_run_env(self, run_id: str, **facts: Any) -> None:
        """Add facts to a run's env (e.g. how its networks ran: ``bench.runner``'s speed choice)."""
        with self._transaction() as db:
            row = db.execute("SELECT env FROM runs WHERE run_id=?", (run_id,)).fetchone()
            env = {**json.loads(row[0] or "{}"), **facts} if row is not None else dict(facts)
            db.execute("UPDATE runs SET env=? WHERE run_id=?", (_json(env), run_id))

    def complete_run(self, run_id: str, metrics: Iterable["MetricRow"] = (),
                     curves: dict[str, Any] | None = None,
                     milestone_metrics: Iterable[tuple[int, "MetricRow"]] = ()) -> None:
        """Store set-level metrics (and those per milestone step) and curves and mark the run complete,
        atomically."""
        with self._transaction() as db:
            self._write_metrics(db, run_id, metrics)
            for step, m in milestone_metrics:
                value = _finite_or_none(m.value)
                detail = dict(m.detail)
                if m.value is not None and value is None:
                    detail.setdefault("reason", f"non-finite value {m.value!r}")
                db.execute("INSERT OR REPLACE INTO milestone_metrics VALUES (?,?,?,?,?,?)",
                           (run_id, int(step), m.name, value,
                            "ok" if value is not None and m.status == "ok" else "unavailable", _json(detail)))
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
            db.execute("DELETE FROM ingredients WHERE run_id=? AND metric=?", (run_id, m.name))
            for key, (ids, array) in (m.arrays or {}).items():
                db.execute("INSERT OR REPLACE INTO ingredients VALUES (?,?,?,?,?)",
                           (run_id, m.name, key, _json(list(ids)), _npy_bytes(array)))

    def runs(self, *, status: str | None = None, run_id: str | None = None,
             sweep_id: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM runs WHERE 1=1", []
        for col, val in (("status", status), ("run_id", run_id), ("sweep_id", sweep_id)):
            if val is not None:
                sql += f" AND {col}=?"
                args.append(val)
        rows = self._q(sql + " ORDER BY started", args)
        out = []
        for r in rows:
            d = dict(r)
            d["params"] = json.loads(d["params"])
            d["env"] = json.loads(d["env"])
            out.append(d)
        return out

    # -- per-image rows -------------------------------------------------------------------------------
    def add_images(self, run_id: str, rows: Sequence["ImageRow"],
                   artifacts: Sequence[tuple[str, str, dict]] = (),
                   milestones: Sequence["MilestoneRow"] = ()) -> None:
        """Write one finished batch (its milestone rows and the artifact files it produced) in one
        transaction: a resumed run has every milestone of every stored image, and none of another."""
        with self._transaction() as db:
            for m in milestones:
                db.execute("INSERT OR REPLACE INTO milestones VALUES (?,?,?,?,?,?,?)",
                           (run_id, m.image_id, m.idx, int(m.step), _finite_or_none(m.seconds), m.status,
                            _json({k: _finite_or_none(v) for k, v in m.metrics.items()})))
            for r in rows:
                db.execute(
                    "INSERT OR REPLACE INTO images VALUES (?,?,?,?,?,?,?)",
                    (run_id, r.image_id, r.idx, r.status, r.reason, _finite_or_none(r.seconds),
                     _json({k: _finite_or_none(v) for k, v in r.metrics.items()})),
                )
            for kind, path, meta in artifacts:
                db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?)", (run_id, kind, path, _json(meta)))

    def images(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._q("SELECT * FROM images WHERE run_id=? ORDER BY idx", (run_id,))
        out = []
        for r in rows:
            d = dict(r)
            d["metrics"] = json.loads(d["metrics"])
            out.append(d)
        return out

    def milestones(self, run_id: str) -> list[dict[str, Any]]:
        """The run's milestone rows (ordered by image, then step); [] for a store made before them."""
        try:
            rows = self._q("SELECT * FROM milestones WHERE run_id=? ORDER BY idx, step", (run_id,))
        except sqlite3.OperationalError:  # a read-only store made before milestones existed
            return []
        return [{**dict(r), "metrics": json.loads(r["metrics"])} for r in rows]

    def milestone_metrics(self, run_id: str) -> list[dict[str, Any]]:
        """Set-level metrics per milestone step of a run: rows with step, name, value, status, detail."""
        try:
            return self._decoded("SELECT * FROM milestone_metrics WHERE run_id=? ORDER BY step, name",
                                 (run_id,), "detail")
        except sqlite3.OperationalError:
            return []

    def ingredients(self, run_id: str, metric: str) -> dict[str, tuple[list[str], Any]]:
        """The per-unit arrays a set-level metric was computed from: key -> (ids along the first axis,
        numpy array); {} where none were stored (a store made before them, or the metric keeps none)."""
        try:
            rows = self._q("SELECT key, ids, data FROM ingredients WHERE run_id=? AND metric=? ORDER BY key",
                           (run_id, metric))
        except sqlite3.OperationalError:  # a read-only store made before ingredients existed
            return {}
        return {r["key"]: (json.loads(r["ids"]), _npy_array(r["data"])) for r in rows}

    def done_image_ids(self, run_id: str) -> set[str]:
        return {r[0] for r in self._q("SELECT image_id FROM images WHERE run_id=?", (run_id,))}

    # -- set-level rows, curves, artifacts --------------------------------------------------------------
    def metrics(self, run_id: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM metrics", []
        if run_id is not None:
            sql, args = sql + " WHERE run_id=?", [run_id]
        return self._decoded(sql + " ORDER BY run_id, name", args, "detail")

    def curves(self, run_id: str) -> dict[str, Any]:
        return {r["name"]: json.loads(r["data"])
                for r in self._q("SELECT name, data FROM curves WHERE run_id=?", (run_id,))}

    def artifacts(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM artifacts WHERE run_id=?", [run_id]
        if kind is not None:
            sql += " AND kind=?"
            args.append(kind)
        return self._decoded(sql + " ORDER BY kind, path", args, "meta")

    def _decoded(self, sql: str, args: Sequence[Any], json_column: str) -> list[dict[str, Any]]:
        """Rows of ``sql`` as dicts, with ``json_column`` parsed."""
        return [{**dict(r), json_column: json.loads(r[json_column])} for r in self._q(sql, args)]

    def add_artifacts(self, run_id: str, artifacts: Sequence[tuple[str, str, dict]]) -> None:
        with self._transaction() as db:
            for kind, path, meta in artifacts:
                db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?)", (run_id, kind, path, _json(meta)))

    # -- leases: identical runs started together share the work (see bench.leases) ----------------------
    def claim_images(self, run_id: str, candidates: Sequence[tuple[int, str]], owner: str, limit: int,
                     ttl: float, is_stale: Any) -> list[int]:
        """Atomically lease up to ``limit`` of ``candidates`` ((idx, image_id), in order) that are neither
        stored nor leased by a live other owner; returns their indices. ``is_stale(owner, expires)``
        says whether another owner's lease may be taken over (process gone, or lease expired).

        The owner's earlier image leases are dropped first: a process claims its next batch only after
        storing the previous one, so the table holds about one batch per process."""
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM leases WHERE run_id=? AND owner=? AND key LIKE 'img:%'", (run_id, owner))
            held = {r["key"]: (r["owner"], r["expires"])
                    for r in db.execute("SELECT key, owner, expires FROM leases WHERE run_id=?", (run_id,))}
            taken: list[int] = []
            for start in range(0, len(candidates), 500):
                chunk = candidates[start:start + 500]
                marks = ",".join("?" * len(chunk))
                done = {r[0] for r in db.execute(
                    f"SELECT image_id FROM images WHERE run_id=? AND image_id IN ({marks})",
                    (run_id, *(image_id for _, image_id in chunk)))}
                for idx, image_id in chunk:
                    if len(taken) >= limit:
                        break
                    if image_id in done:
                        continue
                    lease = held.get(f"img:{idx}")
                    if lease is not None and lease[0] != owner and not is_stale(*lease):
                        continue
                    taken.append(idx)
                    db.execute("INSERT OR REPLACE INTO leases VALUES (?,?,?,?)",
                               (run_id, f"img:{idx}", owner, now + ttl))
                if len(taken) >= limit:
                    break
        return taken

    def image_count(self, run_id: str) -> int:
        return int(self._q("SELECT count(*) FROM images WHERE run_id=?", (run_id,))[0][0])

    def claim(self, run_id: str, key: str, owner: str, ttl: float, is_stale: Any) -> str | None:
        """Lease ``key`` of a run; returns None when taken, else the other live owner that holds it."""
        with self._transaction() as db:
            row = db.execute("SELECT owner, expires FROM leases WHERE run_id=? AND key=?", (run_id, key)).fetchone()
            if row is not None and row["owner"] != owner and not is_stale(row["owner"], row["expires"]):
                return row["owner"]
            db.execute("INSERT OR REPLACE INTO leases VALUES (?,?,?,?)", (run_id, key, owner, time.time() + ttl))
        return None

    def release(self, run_id: str, owner: str) -> None:
        """Drop every lease ``owner`` holds on a run."""
        with self._transaction() as db:
            db.execute("DELETE FROM leases WHERE run_id=? AND owner=?", (run_id, owner))

    def leases(self, run_id: str) -> list[dict[str, Any]]:
        try:
            return [dict(r) for r in self._q("SELECT * FROM leases WHERE run_id=? ORDER BY key", (run_id,))]
        except sqlite3.OperationalError:  # a read-only store made before leases existed
            return []

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
        for r in self._q("SELECT * FROM sweeps ORDER BY created"):
            d = dict(r)
            d["values"] = json.loads(d["values"])
            d["methods"] = json.loads(d["methods"])
            out.append(d)
        return out


class _Cursor:
    """Thin wrapper so transactions expose ``execute`` only (with user-actionable errors translated)."""

    def __init__(self, cur: sqlite3.Cursor, translate: Any = lambda exc: None):
        self._cur = cur
        self._translate = translate

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._cur.execute(sql, args)
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) or exc


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
class MilestoneRow:
    """One image at one milestone: ``seconds`` per image of its batch up to ``step`` (encoder start
    included), ``status`` failed when the image had diverged by then (its metrics then empty)."""

    image_id: str
    idx: int
    step: int
    seconds: float | None
    status: str = "ok"
    metrics: dict[str, float | None] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.metrics is None:
            self.metrics = {}

