"""The results store: one SQLite file (WAL mode) holding checkpoints, tasks, finetune results, bench
definitions, the estimators' feature cache, imported gains (portable leaderboards) and zero-shot scores.

Results are keyed by :meth:`FinetuneSpec.key`, so a spec that is already stored is never trained again.
A store travels as a database (``upcycle store merge OTHER.db``) or as an export (``upcycle store export``: JSON
lines, one row per line in key order, so a grid's results can be committed and grow by diffs) that merges the same way.
The schema is versioned with SQLite's ``user_version``; opening an older database applies the missing
migrations in order inside one transaction, and a database from a newer upcycle is refused.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoints import CheckpointRef
from .errors import StoreError
from .specs import FinetuneResult, FinetuneSpec

DEFAULT_DB = "upcycle.db"

MIGRATIONS: list[str] = [
    # 1: checkpoints (the zoo, with lineage), tasks, finetune results
    """
    CREATE TABLE checkpoints (
        fingerprint TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        arch TEXT NOT NULL,
        model_type TEXT NOT NULL,
        source_task TEXT,
        base_fingerprint TEXT,
        provenance TEXT,
        added_at TEXT NOT NULL
    );
    CREATE TABLE tasks (
        fingerprint TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        num_labels INTEGER NOT NULL,
        sizes TEXT NOT NULL,
        added_at TEXT NOT NULL
    );
    CREATE TABLE finetune_results (
        key TEXT PRIMARY KEY,
        base_fingerprint TEXT NOT NULL,
        task_fingerprint TEXT NOT NULL,
        task_name TEXT NOT NULL,
        seed INTEGER NOT NULL,
        protocol TEXT NOT NULL,
        metric TEXT NOT NULL,
        score REAL NOT NULL,
        spec TEXT NOT NULL,
        result TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX finetune_results_base ON finetune_results (base_fingerprint);
    CREATE INDEX finetune_results_task ON finetune_results (task_fingerprint);
    """,
    # 2: benchmark definitions (the grid of a named bench), so views can be rebuilt from the store alone
    """
    CREATE TABLE benches (
        name TEXT PRIMARY KEY,
        arch TEXT NOT NULL,
        definition TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
    # 3: the feature cache of the selection estimators: mean-pooled encoder features of a task sample
    """
    CREATE TABLE features (
        checkpoint_fingerprint TEXT NOT NULL,
        task_fingerprint TEXT NOT NULL,
        sample TEXT NOT NULL,
        n INTEGER NOT NULL,
        dim INTEGER NOT NULL,
        data BLOB NOT NULL,
        cpu_seconds REAL NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (checkpoint_fingerprint, task_fingerprint, sample)
    );
    """,
    # 4: imported gains (``upcycle leaderboard import``): one validated set of a gains file per (source, base),
    # as JSON; an import from the same source replaces its sets
    """
    CREATE TABLE imported_gains (
        source TEXT NOT NULL,
        base TEXT NOT NULL,
        arch TEXT NOT NULL,
        license TEXT NOT NULL,
        gain_set TEXT NOT NULL,
        imported_at TEXT NOT NULL,
        PRIMARY KEY (source, base)
    );
    CREATE INDEX imported_gains_arch ON imported_gains (arch);
    """,
    # 5: zero-shot scores of generative LMs (``upcycle score``): one row per (model, task, template, method,
    # options), with every option's score of every example (float64, examples x options)
    """
    CREATE TABLE zero_shot_scores (
        key TEXT PRIMARY KEY,
        model_fingerprint TEXT NOT NULL,
        task_fingerprint TEXT NOT NULL,
        task_name TEXT NOT NULL,
        method TEXT NOT NULL,
        spec TEXT NOT NULL,
        result TEXT NOT NULL,
        option_scores BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX zero_shot_scores_task ON zero_shot_scores (task_fingerprint);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

# Each table's identity: a row whose key is stored already is the same record (results are keyed by what
# determines them), so a merge copies only the keys it lacks. Order: what later rows refer to comes first.
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("fingerprint",),
    "tasks": ("fingerprint",),
    "finetune_results": ("key",),
    "benches": ("name",),
    "features": ("checkpoint_fingerprint", "task_fingerprint", "sample"),
    "imported_gains": ("source", "base"),
    "zero_shot_scores": ("key",),
}


@dataclass(frozen=True)
class ZooEntry:
    """A registered checkpoint and its lineage (the base it was finetuned from, on which task)."""

    fingerprint: str
    name: str
    path: str
    arch: str
    model_type: str
    source_task: str | None
    base_fingerprint: str | None
    added_at: str

    def ref(self) -> CheckpointRef:
        """How a spec names this checkpoint: its location and fingerprint."""
        return CheckpointRef(reference=self.path, name=self.name, fingerprint=self.fingerprint,
                             model_type=self.model_type)


def migrate(connection: sqlite3.Connection, migrations: list[str] = MIGRATIONS) -> int:
    """Bring the schema to ``len(migrations)``; return the version found before. One transaction."""
    found = connection.execute("PRAGMA user_version").fetchone()[0]
    if found > len(migrations):
        raise StoreError(
            f"The database has schema version {found}, newer than this upcycle understands "
            f"({len(migrations)}). Upgrade upcycle or use another --db."
        )
    if found == len(migrations):
        return found
    script = "".join(migrations[found:]) + f"\nPRAGMA user_version = {len(migrations)};"
    try:
        connection.executescript(f"BEGIN;\n{script}\nCOMMIT;")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return found


@dataclass(frozen=True)
class MergeSummary:
    """What :meth:`Store.merge_from` did. ``added`` and ``present`` count rows per table (copied; stored here
    already, this store's kept); ``differing`` lists the result cells stored in both with different scores (the
    same finetune run elsewhere, e.g. on another device); ``skipped`` lists rows not copied, with the reason."""

    added: dict[str, int]
    present: dict[str, int]
    differing: list[str]
    skipped: list[str]
    adopted: list[str] = field(default_factory=list)  # rebuilds whose results were adopted (``adopt_rebuilds``)


class Store:
    """Results and zoo in one SQLite database. The process that holds it is its only writer.

    A database this store created is removed again when its ``with`` block ends in an exception before any row
    was written (a failing command leaves no empty file behind); a database that existed before is never removed.
    """

    def __init__(self, path: str | Path = DEFAULT_DB):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.created = not self.path.exists()
        connection = None
        try:
            self._db = connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            migrate(connection)
        except BaseException as error:
            if connection is not None:
                connection.close()
            if self.created:
                self._remove_files()
            if isinstance(error, sqlite3.DatabaseError):
                raise StoreError(f"{self.path}: not a usable upcycle database ({error}). Use another --db.") from None
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        discard = exc_type is not None and self.created and self.is_empty()
        self.close()
        if discard:
            self._remove_files()

    def is_empty(self) -> bool:
        """True when no table holds a row (a database only just created); False when unsure."""
        try:
            tables = [name for (name,) in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
            return not any(self._db.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone() for table in tables)
        except sqlite3.Error:
            return False

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    # ---------------------------------------------------------------- merging stores

    def merge_from(self, other: str | Path, *, adopt_rebuilds: bool = False) -> MergeSummary:
        """Copy into this store every row of the store at ``other`` that it lacks: results, zoo entries, tasks,
        benches, cached features, imported gains and zero-shot scores. A key stored in both keeps this store's row.
        ``other`` is a database or an export of one (:meth:`export_to`).

        With ``adopt_rebuilds``, a checkpoint of ``other`` that is not here but was trained by the same recipe
        (the spec key in its provenance: same base, task data, seed and protocol) as a checkpoint here with other
        weights is taken for that checkpoint's build elsewhere: its results are copied as results of the one here
        (re-keyed; each keeps the fingerprint it ran on as ``measured_on``). That is what a grid resumed on another
        machine needs, where the rebuilt experts differ from the first build only in floating-point rounding
        (another CPU model's kernels); left out, those results stay keyed to weights that are not here.

        ``other`` is opened read-only and never changed. Its rows are checked first (a result whose score is not
        finite or disagrees with its record, a zoo name that is another checkpoint here) and the copy is one
        transaction, so a bad source or an interruption leaves this store as it was.
        """
        source_path = Path(other)
        if not source_path.is_file():
            raise StoreError(f"{source_path}: no such database or export.")
        if source_path.resolve() == self.path.resolve():
            raise StoreError(f"{source_path} is this store; merge another database into it.")
        rows = self._read_export(source_path) if _is_export(source_path) else self._read_database(source_path)
        _check_results(rows, source_path)
        rebuilds = self._rebuilds_here(rows) if adopt_rebuilds else {}
        adopted = _adopt_results(rows, rebuilds)
        added = {table: 0 for table in rows}
        present = {table: 0 for table in rows}
        differing: list[str] = []
        skipped: list[str] = []
        names_here = {name: fingerprint for fingerprint, name in self._db.execute(
            "SELECT fingerprint, name FROM checkpoints")}
        with self._transaction() as db:
            for table, (columns, records) in rows.items():
                keys = TABLE_KEYS[table]
                where = " AND ".join(f"{column} = ?" for column in keys)
                insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
                for record in records:
                    row = dict(zip(columns, record))
                    identity = [row[column] for column in keys]
                    existing = db.execute(f"SELECT * FROM {table} WHERE {where}", identity).fetchone()
                    if existing is not None:
                        present[table] += 1
                        here = dict(zip(columns, existing))
                        if table == "finetune_results" and here["score"] != row["score"]:
                            differing.append(f"{row['task_name']} seed {row['seed']} from "
                                             f"{row['base_fingerprint'][:12]}: {here['score']:.4f} here, "
                                             f"{row['score']:.4f} there")
                        elif table == "benches" and not _same_definition(here["definition"], row["definition"]):
                            skipped.append(f"bench {row['name']}: defined differently here; this store's kept")
                        continue
                    if table == "checkpoints" and row["fingerprint"] in rebuilds:
                        continue
                    if table == "checkpoints" and names_here.get(row["name"], row["fingerprint"]) != row["fingerprint"]:
                        skipped.append(f"zoo entry {row['name']} ({row['fingerprint'][:12]}): the name is another "
                                       "checkpoint here; its results are copied, `upcycle zoo add` names it")
                        continue
                    db.execute(insert, record)
                    added[table] += 1
                    if table == "checkpoints":
                        names_here[row["name"]] = row["fingerprint"]
        return MergeSummary(added=added, present=present, differing=differing, skipped=skipped, adopted=adopted)

    def _rebuilds_here(self, rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]]) -> dict[str, ZooEntry]:
        """``{fingerprint there: checkpoint here}`` for the checkpoints of ``rows`` that are not here but whose
        recipe (the training spec key in their provenance) is that of exactly one checkpoint here."""
        here: dict[str, list[str]] = {}
        for fingerprint, provenance in self._db.execute("SELECT fingerprint, provenance FROM checkpoints"):
            if recipe := _recipe(provenance):
                here.setdefault(recipe, []).append(fingerprint)
        columns, records = rows.get("checkpoints", ([], []))
        rebuilds: dict[str, ZooEntry] = {}
        for record in records:
            row = dict(zip(columns, record))
            builds = here.get(_recipe(row["provenance"]) or "", [])
            if len(builds) == 1 and row["fingerprint"] not in builds:
                entry = self.get_checkpoint(builds[0])
                assert entry is not None
                rebuilds[row["fingerprint"]] = entry
        return rebuilds

    def _read_database(self, source_path: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
        """``{table: (columns, rows)}`` of the tables the database at ``source_path`` shares with this store."""
        try:
            source = sqlite3.connect(f"{source_path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as error:
            raise StoreError(f"{source_path}: cannot open it read-only ({error}).") from None
        try:
            return self._read_mergeable(source, source_path)
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{source_path}: not a usable upcycle database ({error}).") from None
        finally:
            source.close()

    def _read_mergeable(self, source: sqlite3.Connection,
                        source_path: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
        """``{table: (columns, rows)}`` of the tables ``source`` shares with this store."""
        version = source.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{source_path} has schema version {version}, newer than this upcycle understands "
                             f"({SCHEMA_VERSION}). Upgrade upcycle.")
        tables = {name for (name,) in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "finetune_results" not in tables:
            raise StoreError(f"{source_path}: not an upcycle database (it has no finetune_results table).")
        rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
        for table in TABLE_KEYS:
            if table not in tables:  # an older schema: migrations only ever added tables
                continue
            columns = self._columns(table)
            rows[table] = (columns, source.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall())
        return rows

    def _columns(self, table: str) -> list[str]:
        return [column for (_, column, *_rest) in self._db.execute(f"PRAGMA table_info({table})")]

    # ---------------------------------------------------------------- exports

    def export_to(self, path: str | Path, *, features: bool = False,
                  relative_to: str | Path | None = None) -> dict[str, int]:
        """Write every row of this store to ``path`` as JSON lines and return the rows written per table.

        Line 1 is a header (``format``, ``schema_version``); then one ``{"table", "row"}`` per line, tables in
        dependency order and rows in key order, so an export of a store that grew differs from the last one by
        added lines. Binary columns are base64. The estimators' feature cache is left out unless ``features``
        (it is large and recomputed on demand). Absolute paths under ``relative_to`` (default: the working
        directory) or its ancestors below the root are written relative to it (``runs/x``, ``../shared/y``): they
        only say where a file was, and an export to commit or send should not name the folders of the machine it
        came from. The file is written whole or not at all (a temporary file, renamed).
        """
        relative = _relative_paths(Path(relative_to if relative_to is not None else Path.cwd()))
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        counts: dict[str, int] = {}
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with temporary.open("w", encoding="utf-8") as out:
                out.write(json.dumps({"format": EXPORT_FORMAT, "schema_version": SCHEMA_VERSION}) + "\n")
                for table, keys in TABLE_KEYS.items():
                    if table == "features" and not features:
                        continue
                    columns = self._columns(table)
                    query = f"SELECT {', '.join(columns)} FROM {table} ORDER BY {', '.join(keys)}"
                    counts[table] = 0
                    for record in self._db.execute(query):
                        row = {column: _to_json(value) for column, value in zip(columns, record)}
                        out.write(relative(json.dumps({"table": table, "row": row}, sort_keys=True)) + "\n")
                        counts[table] += 1
            temporary.replace(target)
        finally:
            temporary.unlink(missing_ok=True)
        return counts

    def _read_export(self, path: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
        """``{table: (columns, rows)}`` of an export, each row complete for this store's columns."""
        with path.open(encoding="utf-8") as lines:
            try:
                header = json.loads(next(lines))
            except (StopIteration, ValueError):
                header = None
            if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
                raise StoreError(f"{path}: not an upcycle store export (its first line is not the export header).")
            version = header.get("schema_version")
            if not isinstance(version, int) or version > SCHEMA_VERSION:
                raise StoreError(f"{path} has schema version {version}, newer than this upcycle understands "
                                 f"({SCHEMA_VERSION}). Upgrade upcycle.")
            columns = {table: self._columns(table) for table in TABLE_KEYS}
            rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {
                table: (names, []) for table, names in columns.items()}
            for number, line in enumerate(lines, start=2):
                try:
                    entry = json.loads(line)
                    names, records = rows[entry["table"]]
                    records.append(tuple(_from_json(entry["row"][column]) for column in names))
                except (ValueError, KeyError, TypeError) as error:
                    raise StoreError(f"{path}, line {number}: not a row of an upcycle store export "
                                     f"({type(error).__name__}: {error}); nothing merged.") from None
        return rows

    # ---------------------------------------------------------------- results

    def get_result(self, key: str) -> FinetuneResult | None:
        row = self._db.execute("SELECT result FROM finetune_results WHERE key = ?", (key,)).fetchone()
        return None if row is None else FinetuneResult.model_validate_json(row[0])

    def has_result(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM finetune_results WHERE key = ?", (key,)).fetchone() is not None

    def put_result(self, spec: FinetuneSpec, result: FinetuneResult) -> None:
        """Store (or replace, after ``--force``) the result of ``spec``."""
        if result.key != spec.key():
            raise StoreError("Result and spec keys differ; refusing to store a result under the wrong spec.")
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO finetune_results VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (result.key, spec.base.fingerprint, spec.task.fingerprint, result.task_name, spec.seed,
                 spec.protocol.name, result.metric, result.score, spec.model_dump_json(), result.model_dump_json(),
                 result.created_at),
            )

    def set_result_path(self, key: str, path: str | None) -> None:
        """Point the stored result ``key`` at the folder its saved weights moved to (None: they were not kept)."""
        result = self.get_result(key)
        if result is None:
            raise StoreError(f"No stored result {key[:12]} to point at {path}.")
        with self._transaction() as db:
            db.execute("UPDATE finetune_results SET result = ? WHERE key = ?",
                       (result.model_copy(update={"checkpoint_path": path}).model_dump_json(), key))

    def results(self, *, task: str | None = None, base_fingerprint: str | None = None) -> list[FinetuneResult]:
        """Stored results, newest first, optionally for one task name or base fingerprint."""
        query, args = "SELECT result FROM finetune_results WHERE 1=1", []
        if task is not None:
            query, args = query + " AND task_name = ?", [*args, task]
        if base_fingerprint is not None:
            query, args = query + " AND base_fingerprint = ?", [*args, base_fingerprint]
        rows = self._db.execute(query + " ORDER BY created_at DESC, key", args).fetchall()
        return [FinetuneResult.model_validate_json(row[0]) for row in rows]

    def result_rows(self, *, task: str | None = None) -> list[dict[str, Any]]:
        """Results joined with their checkpoint names and their tasks' sources (where a task was loaded from, so
        two tasks of one name stay apart; None when the task was never registered): tidy rows for tables and
        exports. ``task``: only the results of tasks of this name or whose fingerprint starts with it (8+ hex
        characters, as a zoo fingerprint prefix)."""
        rows = self._db.execute(
            """SELECT r.key, COALESCE(c.name, substr(r.base_fingerprint, 1, 12)), r.base_fingerprint, r.task_name,
                      r.task_fingerprint, t.source, r.seed, r.protocol, r.metric, r.score, r.result
               FROM finetune_results r LEFT JOIN checkpoints c ON c.fingerprint = r.base_fingerprint
                    LEFT JOIN tasks t ON t.fingerprint = r.task_fingerprint
               ORDER BY r.task_name, t.source, 2, r.seed"""
        ).fetchall()
        names = ("key", "base", "base_fingerprint", "task", "task_fingerprint", "task_source", "seed", "protocol",
                 "metric", "score")
        if task is not None:
            prefix = task.lower() if len(task) >= 8 else None
            rows = [row for row in rows if row[3] == task or (prefix and row[4].startswith(prefix))]
        return [dict(zip(names, row[:-1]), result=FinetuneResult.model_validate_json(row[-1])) for row in rows]

    def measured_elsewhere(self, keys: list[str]) -> dict[str, str]:
        """``{key: fingerprint}`` for the stored keys among ``keys`` whose result was measured on another build of
        the same checkpoint recipe and adopted (:meth:`merge_from` with ``adopt_rebuilds``)."""
        build = "json_extract(result, '$.measured_on')"
        return dict(self._rows_by_key(f"key, {build}", keys, and_where=f"{build} IS NOT NULL"))

    def scores(self, keys: list[str]) -> dict[str, tuple[str, float]]:
        """``{key: (metric, score)}`` for the stored keys among ``keys``."""
        return {key: (metric, score) for key, metric, score in self._rows_by_key("key, metric, score", keys)}

    def _rows_by_key(self, columns: str, keys: list[str], *, and_where: str = "1") -> Iterator[tuple[Any, ...]]:
        """``columns`` of the stored results among ``keys`` that satisfy ``and_where``."""
        for start in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
            chunk = keys[start:start + 500]
            yield from self._db.execute(f"SELECT {columns} FROM finetune_results WHERE key IN "
                                        f"({','.join('?' * len(chunk))}) AND {and_where}", chunk)

    def results_for(self, fingerprint: str) -> list[dict[str, Any]]:
        """Tidy rows (task, seed, protocol, metric, score, spec JSON) of finetunes that started from ``fingerprint``."""
        rows = self._db.execute(
            "SELECT task_name, seed, protocol, metric, score, spec FROM finetune_results "
            "WHERE base_fingerprint = ? ORDER BY task_name, seed", (fingerprint,)
        ).fetchall()
        names = ("task", "seed", "protocol", "metric", "score", "spec")
        return [dict(zip(names, row)) for row in rows]

    # ---------------------------------------------------------------- benches

    def put_bench(self, name: str, arch: str, definition: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO benches VALUES (?,?,?,?)", (name, arch, definition, _now()))

    def get_bench(self, name: str) -> str | None:
        row = self._db.execute("SELECT definition FROM benches WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def benches(self) -> list[tuple[str, str, str]]:
        """``(name, arch, definition)`` of every saved bench, most recently updated first."""
        return self._db.execute("SELECT name, arch, definition FROM benches ORDER BY updated_at DESC, name").fetchall()

    # ---------------------------------------------------------------- imported gains

    def put_imported_gains(self, source: str, license: str, sets: list[tuple[str, str, str]]) -> int:
        """Store the sets ``(base key, arch, set JSON)`` of one gains file from ``source``, replacing every set a
        previous import of ``source`` stored; returns how many sets were replaced."""
        with self._transaction() as db:
            replaced = db.execute("DELETE FROM imported_gains WHERE source = ?", (source,)).rowcount
            added = _now()
            db.executemany("INSERT INTO imported_gains VALUES (?,?,?,?,?,?)",
                           [(source, base, arch, license, body, added) for base, arch, body in sets])
        return replaced

    def imported_gains(self, arches: set[str] | None = None) -> list[dict[str, str]]:
        """Imported sets (``source``, ``base``, ``arch``, ``license``, ``gain_set`` JSON, ``imported_at``), most
        recent import first; only those of ``arches`` when given."""
        names = ("source", "base", "arch", "license", "gain_set", "imported_at")
        rows = self._db.execute(f"SELECT {', '.join(names)} FROM imported_gains "
                                "ORDER BY imported_at DESC, source, base").fetchall()
        return [dict(zip(names, row)) for row in rows if arches is None or row[2] in arches]

    # ---------------------------------------------------------------- features

    def get_features(self, checkpoint: str, task: str, sample: str) -> tuple[np.ndarray, float] | None:
        """Cached ``(features (n, dim) float32, cpu_seconds it cost)``; None if absent or unreadable."""
        row = self._db.execute(
            "SELECT n, dim, data, cpu_seconds FROM features "
            "WHERE checkpoint_fingerprint = ? AND task_fingerprint = ? AND sample = ?", (checkpoint, task, sample)
        ).fetchone()
        if row is None:
            return None
        n, dim, data, seconds = row
        if len(data) != n * dim * 4:  # a damaged row is recomputed, never served
            return None
        return np.frombuffer(data, dtype=np.float32).reshape(n, dim).copy(), seconds

    def put_features(self, checkpoint: str, task: str, sample: str, features: np.ndarray, cpu_seconds: float) -> None:
        array = np.ascontiguousarray(features, dtype=np.float32)
        if array.ndim != 2:
            raise StoreError(f"Features must be a 2-d array (n, dim); got shape {array.shape}.")
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO features VALUES (?,?,?,?,?,?,?,?)",
                (checkpoint, task, sample, array.shape[0], array.shape[1], array.tobytes(), cpu_seconds, _now()),
            )

    # ---------------------------------------------------------------- zero-shot scores

    def get_zero_shot(self, key: str) -> tuple[dict[str, Any], np.ndarray] | None:
        """The stored ``(result, option scores (n, K) float64)`` of a scoring spec key; None if absent or damaged."""
        row = self._db.execute("SELECT result, option_scores FROM zero_shot_scores WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        result = json.loads(row[0])
        n, width = result["n"], result["num_options"]
        if len(row[1]) != n * width * 8:  # a damaged row is recomputed, never served
            return None
        return result, np.frombuffer(row[1], dtype=np.float64).reshape(n, width).copy()

    def put_zero_shot(self, key: str, spec: dict[str, Any], result: dict[str, Any], scores: np.ndarray) -> None:
        array = np.ascontiguousarray(scores, dtype=np.float64)
        if array.shape != (result["n"], result["num_options"]):
            raise StoreError(f"Option scores of shape {array.shape} do not match n={result['n']} and "
                             f"{result['num_options']} options.")
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO zero_shot_scores VALUES (?,?,?,?,?,?,?,?,?)",
                       (key, spec["model_fingerprint"], spec["task_fingerprint"], result["task"], spec["method"],
                        json.dumps(spec, sort_keys=True), json.dumps(result, sort_keys=True), array.tobytes(), _now()))

    def zero_shot_results(self, *, task: str | None = None) -> list[dict[str, Any]]:
        """Stored zero-shot results (the result objects), newest first, optionally for one task name."""
        query, args = "SELECT result FROM zero_shot_scores", ()
        if task is not None:
            query, args = query + " WHERE task_name = ?", (task,)
        return [json.loads(row[0]) for row in self._db.execute(query + " ORDER BY created_at DESC", args)]

    # ---------------------------------------------------------------- zoo

    def put_checkpoint(
        self, *, fingerprint: str, name: str, path: str, arch: str, model_type: str,
        source_task: str | None = None, base_fingerprint: str | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> ZooEntry:
        """Register a checkpoint; registering the same weights again updates its name, path and lineage (the
        rules for names are :func:`upcycle.zoo.register`'s)."""
        added = _now()
        with self._transaction() as db:
            db.execute(
                """INSERT INTO checkpoints VALUES (?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(fingerprint) DO UPDATE SET name=excluded.name, path=excluded.path,
                     source_task=COALESCE(excluded.source_task, source_task),
                     base_fingerprint=COALESCE(excluded.base_fingerprint, base_fingerprint),
                     provenance=COALESCE(excluded.provenance, provenance)""",
                (fingerprint, name, path, arch, model_type, source_task, base_fingerprint,
                 json.dumps(provenance) if provenance else None, added),
            )
        entry = self.get_checkpoint(fingerprint)
        assert entry is not None
        return entry

    def checkpoint_named(self, name: str) -> ZooEntry | None:
        row = self._db.execute(
            "SELECT fingerprint, name, path, arch, model_type, source_task, base_fingerprint, added_at "
            "FROM checkpoints WHERE name = ? ORDER BY added_at LIMIT 1", (name,)
        ).fetchone()
        return None if row is None else ZooEntry(*row)

    def rename_checkpoint(self, fingerprint: str, name: str) -> ZooEntry:
        with self._transaction() as db:
            db.execute("UPDATE checkpoints SET name = ? WHERE fingerprint = ?", (name, fingerprint))
        entry = self.get_checkpoint(fingerprint)
        assert entry is not None
        return entry

    def remove_checkpoint(self, fingerprint: str) -> None:
        """Forget a zoo entry; results computed from it stay (they are keyed by fingerprint)."""
        with self._transaction() as db:
            db.execute("DELETE FROM checkpoints WHERE fingerprint = ?", (fingerprint,))

    def get_checkpoint(self, fingerprint: str) -> ZooEntry | None:
        row = self._db.execute(
            "SELECT fingerprint, name, path, arch, model_type, source_task, base_fingerprint, added_at "
            "FROM checkpoints WHERE fingerprint = ?", (fingerprint,)
        ).fetchone()
        return None if row is None else ZooEntry(*row)

    def checkpoints(self) -> list[ZooEntry]:
        rows = self._db.execute(
            "SELECT fingerprint, name, path, arch, model_type, source_task, base_fingerprint, added_at "
            "FROM checkpoints ORDER BY arch, name"
        ).fetchall()
        return [ZooEntry(*row) for row in rows]

    def provenance(self, fingerprint: str) -> dict[str, Any]:
        """The provenance recorded with a checkpoint (``upcycle.json``), or ``{}``."""
        row = self._db.execute("SELECT provenance FROM checkpoints WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return json.loads(row[0]) if row and row[0] else {}

    def task_source(self, fingerprint: str) -> str | None:
        """Where a registered task was loaded from."""
        row = self._db.execute("SELECT source FROM tasks WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return None if row is None else row[0]

    def put_task(self, *, fingerprint: str, name: str, source: str, kind: str, num_labels: int,
                 sizes: dict[str, int]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO tasks VALUES (?,?,?,?,?,?,?)",
                (fingerprint, name, source, kind, num_labels, json.dumps(sizes), _now()),
            )


EXPORT_FORMAT = "upcycle-store-export"
# The fields of a saved bench definition that say where a checkpoint or a dataset was, not what it is.
WHERE_KEYS = frozenset({"reference", "source"})


def _is_export(path: Path) -> bool:
    """True when ``path`` starts like JSON (an export) rather than like a database."""
    with path.open("rb") as handle:
        return handle.read(1) == b"{"


def _same_definition(here: str, there: str) -> bool:
    """True when two saved bench definitions name the same grid: equal once the paths that only say where a
    checkpoint or a dataset was (``reference``, ``source``) are set aside, since their fingerprints say what."""
    def identity(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: identity(item) for key, item in value.items() if key not in WHERE_KEYS}
        if isinstance(value, list):
            return [identity(item) for item in value]
        return value
    try:
        return identity(json.loads(here)) == identity(json.loads(there))
    except ValueError:
        return here == there


def _relative_paths(directory: Path) -> Callable[[str], str]:
    """A rewrite of text that makes the absolute paths under ``directory``, or under its ancestors below the root,
    relative to ``directory`` (``/w/repo/runs/x`` -> ``runs/x``, ``/w/shared/y`` -> ``../shared/y``)."""
    directory = directory.resolve()
    prefixes = [(f"{ancestor}/", "../" * depth) for depth, ancestor in enumerate([directory, *directory.parents])
                if ancestor.parent != ancestor]  # the root itself is never rewritten
    if not prefixes:
        return lambda text: text
    pattern = re.compile(r"(?<![\w./-])(" + "|".join(re.escape(prefix) for prefix, _ in prefixes) + ")")
    replacement = dict(prefixes)
    return lambda text: pattern.sub(lambda match: replacement[match.group(1)], text)


def _to_json(value: Any) -> Any:
    return {"base64": base64.b64encode(value).decode("ascii")} if isinstance(value, bytes) else value


def _from_json(value: Any) -> Any:
    return base64.b64decode(value["base64"], validate=True) if isinstance(value, dict) else value


def _recipe(provenance: str | None) -> str | None:
    """The key of the finetune spec a checkpoint was trained by, from its stored provenance, or None."""
    try:
        recipe = json.loads(provenance).get("spec_key") if provenance else None
    except (ValueError, AttributeError):
        return None
    return recipe if isinstance(recipe, str) else None


def _adopt_results(rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]],
                   rebuilds: dict[str, ZooEntry]) -> list[str]:
    """Re-key, in place, the result rows of ``rows`` measured on a checkpoint of ``rebuilds`` as results of its
    rebuild (the spec's base becomes the rebuild; the result keeps the fingerprint it ran on as ``measured_on``).
    Returns one line per checkpoint whose results were adopted."""
    if not rebuilds or "finetune_results" not in rows:
        return []
    columns, records = rows["finetune_results"]
    counts = dict.fromkeys(rebuilds, 0)
    for index, record in enumerate(records):
        row = dict(zip(columns, record))
        there = row["base_fingerprint"]
        if there not in rebuilds:
            continue
        spec = FinetuneSpec.model_validate_json(row["spec"])
        spec = spec.model_copy(update={"base": rebuilds[there].ref()})
        result = FinetuneResult.model_validate_json(row["result"])
        result = result.model_copy(update={"key": spec.key(), "measured_on": result.measured_on or there})
        row.update(key=result.key, base_fingerprint=spec.base.fingerprint, spec=spec.model_dump_json(),
                   result=result.model_dump_json())
        records[index] = tuple(row[column] for column in columns)
        counts[there] += 1
    return [f"{entry.name}: {counts[there]} result(s) measured on {there[:12]}, a build of the same recipe, "
            f"adopted for {entry.fingerprint[:12]} here" for there, entry in rebuilds.items()]


def _check_results(rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]], source_path: Path) -> None:
    """Refuse a source whose result rows cannot be trusted (a non-finite score, a record that disagrees)."""
    columns, records = rows["finetune_results"]
    bad = [problem for record in records if (problem := _result_problem(dict(zip(columns, record))))]
    if bad:
        raise StoreError(f"{source_path}: {len(bad)} stored result(s) are damaged, nothing merged: "
                         + "; ".join(bad[:3]))


def _result_problem(row: dict[str, Any]) -> str | None:
    """Why a stored result row cannot be trusted, or None."""
    label = f"{row.get('task_name')} seed {row.get('seed')} ({str(row.get('key'))[:12]})"
    score = row.get("score")
    if not isinstance(score, (int, float)) or not math.isfinite(score):
        return f"{label}: score {score!r} is not a finite number"
    try:
        FinetuneSpec.model_validate_json(row["spec"])
        result = FinetuneResult.model_validate_json(row["result"])
    except ValueError as error:
        return f"{label}: its record does not parse ({str(error).splitlines()[0]})"
    if result.key != row["key"] or result.score != score:
        return f"{label}: its record disagrees with its row (key or score)"
    return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
