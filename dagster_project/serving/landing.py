"""Where the real-time intake puts accepted events: CSV files in the landing area that the
daily run ingests like any export file, and the intake's quarantine beside the tables.

Each process appends to one open file per event day, hidden while it is being written
(`.intake-<pid>-<n>.csv.open` under `events/date=YYYY-MM-DD/`, which ingestion skips), one
write and fsync per batch, so an accepted event is on disk before it is acknowledged. An
open file is published (renamed to `intake-<pid>-<n>.csv`) when it is `PUBLISH_AFTER_S`
old, holds `PUBLISH_AFTER_ROWS` rows, on `flush()` and at shutdown; a file a killed process
left open is published by the next intake that starts on the same landing area. The daily
run reads every published file whole, and event ids (given, or the content hash the batch
would derive) make a replayed event a `duplicate_event` there, never a second clean row.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import polars as pl

from dagster_project.contracts import EVENT_COLUMNS
from dagster_project.quality.cleaning import QUARANTINE_COLUMNS, QUARANTINE_SCHEMA
from dagster_project.sources.manifest import read_source_manifest
from dagster_project.storage import write_parquet_atomic, write_text_atomic

PUBLISH_AFTER_S = 60.0
PUBLISH_AFTER_ROWS = 100_000
OPEN_SUFFIX = ".csv.open"
INTAKE_FILE_PREFIX = "intake-"  # published files; `landing_files_sensor` leaves them alone
INTAKE_QUARANTINE_DIR = "intake_quarantine"


@dataclass
class _OpenFile:
    path: Path
    opened: float
    rows: int = 0


@dataclass
class LandingWriter:
    """Appends accepted raw events to the landing area (see the module's docstring)."""

    landing: Path
    publish_after_s: float = PUBLISH_AFTER_S
    publish_after_rows: int = PUBLISH_AFTER_ROWS
    _open: dict[str, _OpenFile] = field(default_factory=dict)
    _serial: int = 0
    # appends (the intake's thread) and timed publishing (another) take turns
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        manifest = read_source_manifest(self.landing)
        if manifest["format"] != "canonical":
            raise ValueError(
                f"{self.landing}: the real-time intake appends files in the contract's "
                f"columns; this landing area holds a {manifest['format']!r} export"
            )
        self.source = str(manifest["source"])
        publish_abandoned(self.landing)

    def append(self, day: str, rows: pd.DataFrame) -> None:
        """Append `rows` (EVENT_COLUMNS, as text) to the open file of event `day` (YYYY-MM-DD),
        durably."""
        with self._lock:
            self._append(day, rows)

    def _append(self, day: str, rows: pd.DataFrame) -> None:
        handle = self._open.get(day) or self._start(day)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        if handle.rows == 0:
            writer.writerow(EVENT_COLUMNS)
        writer.writerows(rows[EVENT_COLUMNS].itertuples(index=False, name=None))
        with open(handle.path, "a", encoding="utf-8") as f:
            f.write(text.getvalue())
            f.flush()
            os.fsync(f.fileno())
        handle.rows += len(rows)
        if handle.rows >= self.publish_after_rows:
            self._publish(day)

    def publish_due(self) -> None:
        """Publish the open files that are old enough."""
        now = time.monotonic()
        with self._lock:
            for day, handle in list(self._open.items()):
                if now - handle.opened >= self.publish_after_s:
                    self._publish(day)

    def flush(self) -> None:
        """Publish every open file now (the daily run sees everything accepted so far)."""
        with self._lock:
            for day in list(self._open):
                self._publish(day)

    def _start(self, day: str) -> _OpenFile:
        self._serial += 1
        folder = self.landing / "events" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = f"{os.getpid()}-{int(time.time() * 1000)}-{self._serial}"
        name = f".{INTAKE_FILE_PREFIX}{stamp}{OPEN_SUFFIX}"
        handle = self._open[day] = _OpenFile(folder / name, time.monotonic())
        return handle

    def _publish(self, day: str) -> None:
        handle = self._open.pop(day)
        if handle.path.exists():
            os.replace(handle.path, _published_name(handle.path))


def _published_name(open_path: Path) -> Path:
    return open_path.with_name(open_path.name[1 : -len(".open")])


def publish_abandoned(landing: Path) -> int:
    """Publish open intake files whose process is gone (a crash or a kill); returns how many."""
    published = 0
    for path in (landing / "events").glob(f"date=*/.{INTAKE_FILE_PREFIX}*{OPEN_SUFFIX}"):
        pid = int(path.name.split("-")[1])
        if pid != os.getpid() and not _alive(pid):
            os.replace(path, _published_name(path))
            published += 1
    return published


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def extend_window(landing: Path, day_after: pd.Timestamp) -> None:
    """Move the landing manifest's window end to `day_after` (00:00 UTC) when it ends earlier:
    events the intake accepted are inside the window the daily run checks them against."""
    with _locked(landing / ".source.json.lock"):
        manifest = json.loads((landing / "source.json").read_text())
        if pd.Timestamp(manifest["window_end"]).tz_convert("UTC") >= day_after:
            return
        manifest["window_end"] = day_after.isoformat()
        write_text_atomic(json.dumps(manifest, indent=2), landing / "source.json")


def intake_quarantine_dir(tables: Path) -> Path:
    return tables / INTAKE_QUARANTINE_DIR


def write_intake_quarantine(tables: Path, batch_id: str, rows: pl.DataFrame) -> Path | None:
    """The intake's rejected events, in the quarantine's columns, one file per batch."""
    if rows.is_empty():
        return None
    path = intake_quarantine_dir(tables) / f"{batch_id}.parquet"
    return write_parquet_atomic(rows.select(QUARANTINE_COLUMNS).cast(QUARANTINE_SCHEMA), path)


def read_intake_quarantine(tables: Path) -> pl.DataFrame:
    """Every event the intake rejected so far (the quarantine asset adds them)."""
    folder = intake_quarantine_dir(tables)
    if not any(folder.glob("*.parquet")):
        return pl.DataFrame(schema=QUARANTINE_SCHEMA)
    return pl.read_parquet(folder / "*.parquet")  # written in QUARANTINE_SCHEMA
