"""SQL plumbing, one way each: values, names and paths quoted into DuckDB's SQL text, the
DuckDB session with the platform's settings, and query results as polars or pandas frames."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl

from dagster_project.storage import shared_storage

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


def parquet_relation(path: Path | str) -> str:
    """DuckDB's `read_parquet('<path>')` for a file, the path quoted; for a local folder (a
    table kept one file per event day), every Parquet file in it."""
    if isinstance(path, Path) and path.is_dir():
        return f"read_parquet({sql_text(str(path / '*.parquet'))})"
    return f"read_parquet({sql_text(path)})"


def connect(
    threads: int | None = None, database: duckdb.DuckDBPyConnection | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the platform's settings: UTC, bounded memory, spill to /tmp.

    With `database` (an open connection made here), a cursor on its database instead of a
    new one: opening an in-memory database costs about 13 ms, a cursor next to nothing. A
    cursor's TEMP tables and views, and the frames it registers, are its own and go with it;
    the database-wide settings (threads, memory, spill) stay the database's, so `threads`
    applies only to a new database."""
    if database is not None:
        con = database.cursor()
    else:
        con = duckdb.connect()
        con.execute(f"SET memory_limit = {sql_text(DUCKDB_MEMORY_LIMIT)}")
        spill = Path(tempfile.gettempdir()) / "recsys-duckdb"
        con.execute(f"SET temp_directory = {sql_text(spill)}")
        con.execute("SET preserve_insertion_order = false")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        shared = shared_storage()
        if shared:  # the shared store's URLs readable and writable in SQL
            shared.attach(con)
    con.execute("SET TimeZone = 'UTC'")  # per connection, a cursor's included
    con.execute("SET enable_progress_bar = false")
    return con


def query_polars(con: duckdb.DuckDBPyConnection, query: str) -> pl.DataFrame:
    """A query's result as a polars frame (through Arrow, no copy through pandas)."""
    return pl.from_arrow(con.sql(query).to_arrow_table())  # type: ignore[return-value]


def query_pandas(con: duckdb.DuckDBPyConnection, query: str) -> pd.DataFrame:
    """A query's result as a pandas frame."""
    return con.sql(query).df()
