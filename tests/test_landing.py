"""Landing files that are bad as a whole: each is quarantined by its own name, the others
land, and the raw table is only swapped once every file has been read in full."""

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dagster_project.quality.cleaning import clean_events, row_accounting
from dagster_project.sources import manifest
from dagster_project.sources.manifest import source_window
from dagster_project.sources.raw_table import (
    BAD_FILE,
    LandingDay,
    files_still_to_come,
    ingest_landing,
    ingest_landing_day,
    raw_summary,
    read_landing_file,
    read_raw,
    stored_raw_rows,
)
from dagster_project.sources.records import LandingFileError
from tests.test_quality import CATALOG, HEADER, NOW, WINDOW

ROW = "e{n},u1,s1,i1,view,2026-09-02T10:00:{n:02d}Z,,,"


def _landing(root: Path) -> Path:
    landing = root / "landing"
    (landing / "events").mkdir(parents=True)
    (landing / "source.json").write_text(
        json.dumps(
            {
                "source": "test",
                "window_start": "2026-09-01T00:00:00Z",
                "window_end": "2026-10-01T00:00:00Z",
            }
        )
    )
    (landing / "events" / "good.csv").write_text("\n".join([HEADER, ROW.format(n=1)]) + "\n")
    return landing


def _parquet(path: Path, rows: int = 2000, **columns) -> None:
    table = pa.table(
        {
            "event_id": [f"p{k}" for k in range(rows)],
            "user_id": [f"u{k % 7}" for k in range(rows)],
            "item_id": ["i1"] * rows,
            "event_type": ["view"] * rows,
            "event_time": [f"2026-09-03T10:{k // 60:02d}:{k % 60:02d}Z" for k in range(rows)],
            **columns,
        }
    )
    pq.write_table(table, path, compression="zstd")


def _corrupt_pages(path: Path) -> None:
    """Zero a stretch of the data pages, leaving the footer (schema, row counts) intact."""
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    body = len(data) - footer
    data[body // 4 : body // 4 * 3] = bytes(body // 4 * 3 - body // 4)
    path.write_bytes(bytes(data))


def test_each_bad_file_is_quarantined_whole_by_its_name_and_the_others_land(tmp_path):
    landing = _landing(tmp_path)
    events = landing / "events"
    _parquet(events / "day2.parquet")
    _parquet(events / "nested.parquet", user_id=[{"id": k} for k in range(2000)])
    _parquet(events / "corrupt.parquet")
    _corrupt_pages(events / "corrupt.parquet")
    (events / "empty.csv").write_bytes(b"")
    (events / "notes.json").write_text("{}")
    (events / "broken.csv.gz").write_bytes(b"\x1f\x8b not really gzip")
    with gzip.open(events / "day3.csv.gz", "wt") as handle:
        handle.write("\n".join([HEADER, ROW.format(n=20), ROW.format(n=40)]) + "\n")
    summary = ingest_landing(landing, "events", tmp_path / "raw_events")
    assert set(summary.bad_files) == {
        "events/nested.parquet",
        "events/corrupt.parquet",
        "events/empty.csv",
        "events/notes.json",
        "events/broken.csv.gz",
    }
    assert "nested column(s) user_id" in summary.bad_files["events/nested.parquet"]
    assert "pages cannot be read" in summary.bad_files["events/corrupt.parquet"]
    assert "empty" in summary.bad_files["events/empty.csv"]
    assert "unknown format" in summary.bad_files["events/notes.json"]
    raw = read_raw(tmp_path / "raw_events")
    per_file = raw.group_by("source_file").len().sort("source_file")
    assert dict(per_file.iter_rows()) == {
        "events/broken.csv.gz": 1,
        "events/corrupt.parquet": 1,
        "events/day2.parquet": 2000,
        "events/day3.csv.gz": 2,
        "events/empty.csv": 1,
        "events/good.csv": 1,
        "events/nested.parquet": 1,
        "events/notes.json": 1,
    }
    assert summary.rows == len(raw) == 2008
    # Every record is clean or quarantined; each bad file is one quarantine row with why.
    cleaned = clean_events(raw, CATALOG, WINDOW, "run-1", NOW)
    assert row_accounting(raw, cleaned.clean, cleaned.quarantine)["balanced"].all()
    assert len(cleaned.clean) == 2003
    bad = cleaned.quarantine.filter(pl.col("reason") == BAD_FILE)
    assert sorted(bad["source_file"].to_list()) == sorted(summary.bad_files)
    assert bad["detail"].null_count() == 0


def test_when_no_file_is_good_the_previous_raw_table_stays(tmp_path):
    landing = _landing(tmp_path)
    target = tmp_path / "raw_events"
    ingest_landing(landing, "events", target)
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    (landing / "events" / "good.csv").write_bytes(b"")
    _parquet(landing / "events" / "corrupt.parquet")
    _corrupt_pages(landing / "events" / "corrupt.parquet")
    with pytest.raises(
        LandingFileError, match=r"good\.csv.*empty.*corrupt\.parquet|corrupt\.parquet.*good\.csv"
    ):
        ingest_landing(landing, "events", target)
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert raw_summary(target).rows == 1


def test_an_ingest_killed_between_its_renames_is_put_right_by_the_next(tmp_path):
    landing = _landing(tmp_path)
    target = tmp_path / "raw_events"
    ingest_landing(landing, "events", target)
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    # Killed after the old table was moved aside and before the new one took its place.
    target.rename(tmp_path / ".raw_events.0a.old")
    (tmp_path / ".raw_events.0b.tmp" / "_parsed").mkdir(parents=True)
    (landing / "events" / "good.csv").write_bytes(b"")  # this time nothing can land
    with pytest.raises(LandingFileError):
        ingest_landing(landing, "events", target)
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before  # the previous table, back in its place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["landing", "raw_events"]


def test_a_quoted_field_over_several_lines_is_one_record(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text(
        "item_id,title,description,category,brand,price,available,listed_at\n"
        'i1,Mug,"A mug,\nblue and\n""big""",Home/Kitchen/Mug,Acme,4.5,True,2026-09-01T00:00:00Z\n'
        'i2,"Never closed,x,Home/Kitchen/Mug,Acme,4.5,True,2026-09-01T00:00:00Z\n'
        "i3,Cup,plain,Home/Kitchen/Mug,Acme,2.5,True,2026-09-01T00:00:00Z\n"
    )
    raw = read_landing_file(path, "items", "test")
    assert raw["source_line"].to_list() == [2, 5, 6]  # the record of lines 2-4 counts once
    assert raw["description"][0] == 'A mug,\nblue and\n"big"'
    assert raw["parse_error"][0] is None and raw["parse_error"][1] is not None
    assert raw["item_id"][2] == "i3"  # the unterminated quote swallowed nothing


def test_an_adapter_window_is_read_once_per_state_of_the_export(tmp_path, monkeypatch):
    """An adapter declares its window by reading its export: `source_window` reads it once
    (ingest counts), and again only when a file in the landing folder changes."""
    landing = tmp_path / "landing"
    shutil.copytree(Path(__file__).parent / "fixtures" / "retailrocket", landing)
    (landing / "source.json").write_text(json.dumps({"format": "retailrocket"}))
    reads = []
    read_export = manifest.read_export
    monkeypatch.setattr(manifest, "read_export", lambda *a: reads.append(a) or read_export(*a))
    ingest_landing(landing, "events", tmp_path / "raw_events")
    window = source_window(landing)
    assert source_window(landing) == window and len(reads) == 1
    declared = {"window": {"start": "2015-05-01", "end": "2015-06-01"}}
    (landing / "source.json").write_text(
        json.dumps({"format": "retailrocket", "mapping": declared})
    )
    assert source_window(landing) == (
        pd.Timestamp("2015-05-01", tz="UTC"),
        pd.Timestamp("2015-06-01", tz="UTC"),
    )
    assert source_window(landing) != window and len(reads) == 2


def test_each_landing_record_lands_in_exactly_one_event_day(tmp_path):
    """Dated files go to their day (before the first partition: the first), a file that names
    no day gives each record to its event day within the window (no readable time: the
    window's first day), a folder named after no real date names no day, a bad file lands as
    one `bad_file` record in its day, and a file of a day still to come waits for it."""
    landing = _landing(tmp_path)  # events/good.csv: undated, one record of 2026-09-02
    events = landing / "events"
    lines = {
        "date=2026-08-30/early.csv": [ROW.format(n=2)],
        "date=2026-09-03/a.csv": [ROW.format(n=3), ROW.format(n=4)],
        "date=2026-02-30/odd.csv": [ROW.format(n=5)],  # no such day: by event time
        "late.csv": ["e6,u1,s1,i1,view,2026-09-05T10:00:00Z,,,", "e7,u1,s1,i1,view,never,,,"],
        "date=2026-12-24/future.csv": [ROW.format(n=8)],
    }
    for name, rows in lines.items():
        (events / name).parent.mkdir(parents=True, exist_ok=True)
        (events / name).write_text("\n".join([HEADER, *rows]) + "\n")
    (events / "date=2026-09-04").mkdir()
    (events / "date=2026-09-04" / "broken.parquet").write_bytes(b"not parquet")
    raw = tmp_path / "raw_events"
    landed = {}
    for day in pd.date_range("2026-09-01", "2026-09-06").strftime("%Y-%m-%d"):
        ingest_landing_day(landing, "events", LandingDay(day, "2026-09-01"), raw)
        landed[day] = read_raw(raw / day)["event_id"].to_list()
    assert landed == {
        "2026-09-01": ["e2", "e7"],  # folded into the first day; no readable time
        "2026-09-02": ["e5", "e1"],
        "2026-09-03": ["e3", "e4"],
        "2026-09-04": [None],  # the bad file, as one record
        "2026-09-05": ["e6"],
        "2026-09-06": [],
    }
    assert read_raw(raw / "2026-09-04")["source_reason"].to_list() == [BAD_FILE]
    assert raw_summary(raw).rows == 8 and stored_raw_rows(raw) == 8
    assert files_still_to_come(landing, "events", "2026-09-06") == [
        "events/date=2026-12-24/future.csv"
    ]
    # Files that cannot be read land as bad_file records in their day and the day goes on:
    # two unreadable files of one day, and two stray files at the top (the window's first day).
    (events / "date=2026-09-04" / "broken2.parquet").write_bytes(b"not parquet either")
    (events / "README.md").write_text("about these files")
    (events / "schema.txt").write_text("event_id, ...")
    for day in ("2026-09-01", "2026-09-04"):
        ingest_landing_day(landing, "events", LandingDay(day, "2026-09-01"), raw)
    assert read_raw(raw / "2026-09-04")["source_reason"].to_list() == [BAD_FILE, BAD_FILE]
    first_day = read_raw(raw / "2026-09-01")
    assert first_day["source_reason"].to_list().count(BAD_FILE) == 2
    assert first_day["event_id"].drop_nulls().to_list() == ["e2", "e7"]
    assert len(raw_summary(raw).bad_files) == 4
