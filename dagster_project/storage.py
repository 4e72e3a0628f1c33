"""Atomic writes (a killed run never leaves a half-written table behind) and the DuckDB session."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl


def write_parquet_atomic(frame: pd.DataFrame | pl.DataFrame, path: Path) -> Path:
    """Write `frame` (pandas or polars) to `path` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if isinstance(frame, pl.DataFrame):
            frame.write_parquet(tmp, compression="zstd", compression_level=1, statistics=True)
        else:
            frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(text: str, path: Path) -> Path:
    """Write a text file (report, JSON) through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


DUCKDB_MEMORY_LIMIT = "2GB"  # DuckDB spills to disk beyond this


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the platform's settings: UTC, bounded memory, spill to /tmp."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
    con.execute(f"SET temp_directory = '{tempfile.gettempdir()}/recsys-duckdb'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")
    if threads:
        con.execute(f"SET threads = {threads}")
    return con
