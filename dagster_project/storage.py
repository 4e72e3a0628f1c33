"""Atomic writes (a killed run never leaves a half-written table behind) and retries with
backoff for calls to servers. SQL and the DuckDB session: `dagster_project.sql`."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pandas as pd
import polars as pl

T = TypeVar("T")


@contextmanager
def atomic_file(path: Path, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write; renamed onto `path` when the
    block ends without an error (with permission bits `mode`, if given), removed otherwise:
    the one way the platform writes a file, so a killed run never leaves half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet_atomic(frame: pd.DataFrame | pl.DataFrame, path: Path) -> Path:
    """Write `frame` (pandas or polars) to `path` atomically (`atomic_file`)."""
    with atomic_file(path) as tmp:
        if isinstance(frame, pl.DataFrame):
            frame.write_parquet(tmp, compression="zstd", compression_level=1, statistics=True)
        else:
            frame.to_parquet(tmp, index=False)
    return path


def write_text_atomic(text: str, path: Path) -> Path:
    """Write a text file (report, JSON) atomically (`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def retry_with_backoff(
    action: Callable[[], T],
    retry_on: tuple[type[BaseException], ...],
    what: str,
    attempts: int = 4,
    first_wait_s: float = 2.0,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`action()`, tried up to `attempts` times on the `retry_on` errors with waits of
    first_wait_s, 2x, 4x ... between; then a RuntimeError that says what failed and why."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except retry_on as error:
            if attempt == attempts:
                raise RuntimeError(
                    f"{what} failed {attempts} times; the last error was "
                    f"{type(error).__name__}: {error}"
                ) from error
            wait = first_wait_s * 2 ** (attempt - 1)
            log(
                f"{what}: attempt {attempt} of {attempts} failed ({type(error).__name__}: "
                f"{error}); retrying in {wait:g} s"
            )
            sleep(wait)
    raise AssertionError("unreachable")
