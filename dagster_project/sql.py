"""SQL plumbing, one way each: values, names and paths quoted into DuckDB's SQL text, the
DuckDB session with the platform's settings, and query results as polars or pandas frames."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl

from dagster_project.storage import S3_ENDPOINT_ENV, STORAGE_URL_ENV, atomic_file, shared_storage

DUCKDB_MEMORY_LIMIT = "2GB"  # DuckDB spills to disk beyond this


def sql_text(value: object) -> str:
    """A SQL string literal, single quotes doubled: the one way a path or a value is pasted
    into SQL text (a quote in a data directory's path must not break a query)."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_value(value: Any) -> str:
    """A SQL literal for a Python value: a timestamp as TIMESTAMPTZ in UTC, a bool, a number,
    anything else as text (`sql_text`)."""
    if isinstance(value, pd.Timestamp | datetime):
        stamp = pd.Timestamp(value)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        return f"TIMESTAMPTZ {sql_text(stamp.isoformat())}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(value)
    return sql_text(value)


def sql_identifier(name: str) -> str:
    """A quoted SQL identifier (a column or table name), double quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def parquet_relation(
    path: Path | str | Sequence[Path | str], filename: bool = False, file_row_number: bool = False
) -> str:
    """DuckDB's `read_parquet('<path>')` for a file, the path quoted; for a local folder (a
    table kept one file per event day), every Parquet file in it; for a list of files, all of
    them. `filename`: a column `filename` naming each row's file; `file_row_number`: a column
    `file_row_number`, each row's place in its file (together, the order the rows were read in,
    for a session that does not preserve it)."""
    if isinstance(path, Path) and path.is_dir():
        source = sql_text(str(path / "*.parquet"))
    elif isinstance(path, Path | str):
        source = sql_text(str(path))
    else:
        source = "[" + ", ".join(sql_text(str(p)) for p in path) + "]"
    options = [
        f"{name} = true"
        for name, on in [("filename", filename), ("file_row_number", file_row_number)]
        if on
    ]
    return f"read_parquet({', '.join([source, *options])})"


def _new_database(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB database with the platform's settings: bounded memory, spill to
    /tmp, the shared store's URLs readable and writable in SQL when one is configured."""
    con = duckdb.connect()
    con.execute(f"SET memory_limit = {sql_text(DUCKDB_MEMORY_LIMIT)}")
    spill = Path(tempfile.gettempdir()) / "recsys-duckdb"
    con.execute(f"SET temp_directory = {sql_text(spill)}")
    con.execute("SET preserve_insertion_order = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    shared = shared_storage()
    if shared:
        shared.attach(con)
    return con


# The process's own database, by (process id, shared store settings): a child process made
# by fork never uses its parent's, and a change of the configured store makes a new one.
_PROCESS_DATABASES: dict[tuple[int, str, str], duckdb.DuckDBPyConnection] = {}
_PROCESS_DATABASE_LOCK = threading.Lock()


def _process_database(renew: bool = False) -> duckdb.DuckDBPyConnection:
    """The database `connect()` opens cursors on, made on first use (or again with `renew`,
    after a fatal error invalidated it)."""
    key = (
        os.getpid(),
        os.environ.get(STORAGE_URL_ENV, "").strip(),
        os.environ.get(S3_ENDPOINT_ENV, "").strip(),
    )
    with _PROCESS_DATABASE_LOCK:
        database = _PROCESS_DATABASES.get(key)
        if database is None or renew:
            for stale in [k for k in _PROCESS_DATABASES if k[0] == key[0] and k != key]:
                _PROCESS_DATABASES.pop(stale).close()  # the store's settings changed
            database = _PROCESS_DATABASES[key] = _new_database()
        return database


def _session(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    con.execute("SET TimeZone = 'UTC'")  # per connection, a cursor's included
    con.execute("SET enable_progress_bar = false")
    return con


def connect(
    threads: int | None = None, database: duckdb.DuckDBPyConnection | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB session with the platform's settings: UTC, bounded memory, spill to /tmp.

    A cursor on the process's own in-memory database: opening a database costs about 25 ms,
    a cursor next to nothing, and a step may open hundreds (a check per landing file). A
    cursor's TEMP tables and views, and the frames it registers, are its own and go with it
    (so create nothing but TEMP objects); the database-wide settings (memory, spill) and its
    memory limit are shared by the process's sessions. `database`: a cursor on that
    connection's database instead. `threads`: a database of its own, with that many
    threads (a long-lived session that must not compete with the process's other work)."""
    if threads:
        return _session(_new_database(threads))
    if database is not None:
        return _session(database.cursor())
    try:
        return _session(_process_database().cursor())
    except duckdb.FatalException:  # a fatal error invalidated it: a new one, once
        return _session(_process_database(renew=True).cursor())


def copy_to_parquet(
    con: duckdb.DuckDBPyConnection, query: str, path: Path, metadata: dict[str, str] | None = None
) -> int:
    """COPY a query's rows to a Parquet file (snappy), atomically (`atomic_file`): the one way
    SQL writes a table; `metadata`, key-value pairs of the file's footer. Returns the rows
    written."""
    options = "FORMAT parquet, COMPRESSION snappy"
    if metadata:
        pairs = ", ".join(f"{key}: {sql_text(value)}" for key, value in metadata.items())
        options += f", KV_METADATA {{{pairs}}}"
    with atomic_file(path) as tmp:
        (rows,) = con.execute(f"COPY ({query}) TO {sql_text(str(tmp))} ({options})").fetchone()
    return int(rows)  # COPY answers with the rows it wrote


def query_polars(con: duckdb.DuckDBPyConnection, query: str) -> pl.DataFrame:
    """A query's result as a polars frame (through Arrow, no copy through pandas)."""
    return pl.from_arrow(con.sql(query).to_arrow_table())  # type: ignore[return-value]


def query_pandas(con: duckdb.DuckDBPyConnection, query: str) -> pd.DataFrame:
    """A query's result as a pandas frame."""
    return con.sql(query).df()
