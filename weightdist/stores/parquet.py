"""A Parquet store for `weightdist scan`: many models' layer tables in one folder, queryable with DuckDB.

Layout (the store owns every name in it)::

    DIR/weightdist-store.json                    marks the folder as a store (format, version)
    DIR/runs/<run_id>.json                       the options that change numbers, per run id
    DIR/layers/<model>/<run_id>/<unit>.parquet   one file per (model, layer): its layers.csv rows
    DIR/models/<model>/<run_id>.parquet          one row per (model, run): provenance, status, error

Partitioned by model: each model has its own folder (a slug of its spec plus a hash, so hostile
or colliding specs cannot reach outside). Every file is written under a temporary name and
renamed into place, so a kill leaves whole files only; a unit is done when its file exists.
The run id is a hash of the options that change numbers: other options, another run id, so
results of different options are never mixed in one run.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from ..errors import OutputError, WeightdistError
from ..escape import markdown_code
from ..untrusted import read_capped
from . import atomic

MARKER = "weightdist-store.json"
FORMAT = "weightdist parquet store"
VERSION = 1
KEY_COLUMNS = ("model", "spec", "run_id")  # put before the layers.csv columns in every layers row


class NotAStoreError(WeightdistError):
    """A folder given as a store that holds no weightdist store."""


def run_id(options: dict) -> str:
    """A short stable hash of the options that change numbers (key order and tuples do not matter)."""
    canonical = json.dumps(options, sort_keys=True, default=list, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _slug(text: str, limit: int = 48) -> str:
    """A file-name-safe, collision-free folder name for untrusted text (a spec or a layer name)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(text).name or text).strip("._")[:limit] or "x"
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def _unit_file(layer: str) -> str:
    return hashlib.sha256(layer.encode()).hexdigest()[:24] + ".parquet"


def is_store(folder: str | os.PathLike) -> bool:
    return (Path(folder) / MARKER).is_file()


def table_bytes(table: pd.DataFrame, first: dict[str, str] | None = None) -> bytes:
    """One Parquet file's bytes for ``table``, with types that agree across files.

    A one-layer table types its columns from few values (an all-missing column, ints with a
    None); all-missing columns become Arrow's null type and mixed object columns numbers or
    strings, so DuckDB's union_by_name reads every part file as one table. ``first``: string
    columns of one value each, put before the table's (a scan unit's model, spec and run id),
    without the cost of inserting them into the DataFrame.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {name: pa.array([value] * len(table), pa.string()) for name, value in (first or {}).items()}
    missing = table.isna().to_numpy().all(axis=0)  # one pass over the frame, not one Series per column
    for (name, col), all_missing in zip(table.items(), missing):
        if all_missing:
            columns[name] = pa.nulls(len(col))
        elif col.dtype == object:
            present = [v for v in col if v is not None and not (isinstance(v, float) and math.isnan(v))]
            if all(isinstance(v, bool) for v in present):
                columns[name] = pa.array([None if pd.isna(v) else bool(v) for v in col], pa.bool_())
            elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
                columns[name] = pa.array(pd.to_numeric(col).to_numpy(dtype=float, na_value=math.nan), from_pandas=True)
            else:
                columns[name] = pa.array([None if pd.isna(v) else str(v) for v in col], pa.string())
        else:
            columns[name] = pa.array(col.to_numpy(), from_pandas=True) if col.dtype.kind in "biuf" else pa.array(
                [None if pd.isna(v) else str(v) for v in col], pa.string())
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


@dataclass(frozen=True)
class StoredModel:
    """One (model, run) read back from a store: its models-table row and its layers table."""

    model: str  # the model's name (plus its run id when the store holds several runs)
    spec: str
    run_id: str
    init: bool
    info: dict  # its models-table row: source, sha256, training_data, licence, status, ...
    table: pd.DataFrame

    @property
    def label(self) -> str:
        return f"{self.model} (init)" if self.init else self.model


class ParquetStore:
    """A store folder. ``create`` for writing (scan), ``open`` for reading (query, findings, compare)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # --- opening ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, root: str | os.PathLike) -> "ParquetStore":
        """The store at ``root``, made if the folder is new or empty; any other folder is refused."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise OutputError(f"--store {root} is a file, not a folder; pass a new folder or an existing weightdist store")
        if root.is_dir() and not is_store(root) and any(root.iterdir()):
            raise NotAStoreError(f"--store {root} is not a weightdist store (no {MARKER}) and is not empty; "
                                 "pass a new or empty folder, or a store an earlier 'weightdist scan' wrote")
        if not is_store(root):
            atomic.check_writable_dir(root)
            with atomic._as_output_error(root):
                root.mkdir(parents=True, exist_ok=True)
                atomic.write_text(root / MARKER, json.dumps({"format": FORMAT, "version": VERSION}) + "\n")
        return cls.open(root)

    @classmethod
    def open(cls, root: str | os.PathLike) -> "ParquetStore":
        """An existing store; a folder that is not one gets one line."""
        root = Path(root)
        if not root.is_dir():
            raise NotAStoreError(f"{root} is not a folder; pass a store written by 'weightdist scan --store {root}'")
        if not os.path.lexists(root / MARKER):
            raise NotAStoreError(f"{root} is not a weightdist store (no {MARKER}); pass a folder written by "
                                 "'weightdist scan --store DIR'")
        try:
            meta = json.loads(read_capped(root / MARKER, 4096, fix="pass a folder written by 'weightdist scan --store DIR'"))
        except ValueError as exc:
            raise NotAStoreError(f"{root / MARKER}: unreadable ({exc}); is {root} a weightdist store?") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise NotAStoreError(f"{root / MARKER} does not describe a weightdist store; pass a folder written by 'weightdist scan'")
        if meta.get("version") != VERSION:
            raise NotAStoreError(f"{root} is a version {meta.get('version')} store; this weightdist reads version {VERSION}: "
                                 "upgrade weightdist or scan into a new folder")
        return cls(root)

    @contextlib.contextmanager
    def writing(self) -> Iterator["ParquetStore"]:
        """Hold the store's lock (one scan writes at a time) and clear temp files a killed scan left."""
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise OutputError(f"another weightdist scan is writing to {self.root}; wait for it or pass another --store") from None
                raise
            for leftover in self.root.glob("**/.*.tmp"):
                leftover.unlink(missing_ok=True)
            yield self
        finally:
            os.close(fd)

    # --- writing ---------------------------------------------------------------------------------

    def _model_dir(self, kind: str, spec: str) -> Path:
        return self.root / kind / _slug(spec)

    def write_run(self, rid: str, options: dict, command: str = "") -> None:
        """The run's options (and the command that first made it), plus the store's README naming every run's command."""
        path = self.root / "runs" / f"{rid}.json"
        if not path.is_file():
            path.parent.mkdir(exist_ok=True)
            atomic.write_text(path, json.dumps({"run_id": rid, "options": options, "command": command}, sort_keys=True, indent=1) + "\n")
        runs = [json.loads(read_capped(p, 2**20, fix="rerun the scan into a new --store")) for p in sorted((self.root / "runs").glob("*.json"))]
        lines = ["# weightdist scan store", ""]
        lines += [f"Generated by {markdown_code(r.get('command') or 'weightdist scan (command not recorded)')} (run {markdown_code(r.get('run_id'))})"
                  for r in runs]
        lines += ["", "Read it with `weightdist query DIR \"SQL\"` (views `layers`, `models`, `runs`), "
                  "`weightdist findings`, or any Parquet reader (`layers/<model>/<run>/*.parquet`).", ""]
        atomic.write_text(self.root / "README.md", "\n".join(lines))

    def done_layers(self, rid: str, spec: str, layers: list[str]) -> set[str]:
        """Which of ``layers`` already have their rows committed in run ``rid``."""
        folder = self._model_dir("layers", spec) / rid
        present = {p.name for p in folder.glob("*.parquet")} if folder.is_dir() else set()
        return {name for name in layers if _unit_file(name) in present}

    def commit_unit(self, rid: str, spec: str, layer: str, parquet: bytes) -> None:
        """One unit's rows, whole or not at all (temp file + rename)."""
        folder = self._model_dir("layers", spec) / rid
        folder.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(folder / _unit_file(layer), parquet)

    def commit_model(self, rid: str, spec: str, row: dict[str, Any]) -> None:
        """The model's row in the models table (replaced as the scan of it progresses)."""
        folder = self._model_dir("models", spec)
        folder.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(folder / f"{rid}.parquet", table_bytes(pd.DataFrame([row])))

    # --- reading ---------------------------------------------------------------------------------

    def connect(self):
        """A DuckDB connection with views ``layers``, ``models`` and ``runs`` over the store."""
        import duckdb

        con = duckdb.connect()
        for view, pattern in (("layers", "layers/*/*/*.parquet"), ("models", "models/*/*.parquet")):
            if any(self.root.glob(pattern)):
                glob = str(self.root / pattern).replace("'", "''")
                con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{glob}', union_by_name=true, hive_partitioning=false)")
            else:  # an empty store still answers queries (with no rows)
                con.execute(f"CREATE VIEW {view} AS SELECT NULL::VARCHAR AS model, NULL::VARCHAR AS spec, NULL::VARCHAR AS run_id WHERE false")
        runs = [json.loads(read_capped(p, 2**20, fix="rerun the scan into a new --store")) for p in sorted((self.root / "runs").glob("*.json"))]
        con.execute("CREATE TABLE runs (run_id VARCHAR, options VARCHAR)")
        if runs:
            con.executemany("INSERT INTO runs VALUES (?, ?)", [(r["run_id"], json.dumps(r["options"], sort_keys=True)) for r in runs])
        return con

    def query(self, sql: str) -> pd.DataFrame:
        """Run ``sql`` over the views; a bad query is one line."""
        import duckdb

        con = self.connect()
        try:
            return con.sql(sql).df() if sql.strip() else pd.DataFrame()
        except duckdb.Error as exc:
            raise WeightdistError(f"query failed: {' '.join(str(exc).split())}; the views are layers, models and runs") from None
        finally:
            con.close()

    def read_models(self) -> Iterator[StoredModel]:
        """Every (model, run) with committed layers, each with its layers table in layers.csv order."""
        import pyarrow.parquet as pq

        models = self.query("SELECT * FROM models ORDER BY model, spec, run_id")
        if models.empty:
            return
        several_runs = models["run_id"].nunique() > 1
        for row in models.to_dict("records"):
            folder = self._model_dir("layers", row["spec"]) / row["run_id"]
            parts = sorted(folder.glob("*.parquet"))
            if not parts:
                continue
            table = pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)
            table = table.sort_values("index", kind="stable").drop(columns=[c for c in KEY_COLUMNS if c in table]).reset_index(drop=True)
            name = (row.get("name") or row["model"]) + (f" [{row['run_id']}]" if several_runs else "")
            yield StoredModel(name, row["spec"], row["run_id"], bool(row.get("init")), row, table)
