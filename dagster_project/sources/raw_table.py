"""The raw tables: every record of one kind that landed, as an immutable snapshot on disk.

`ingest_landing` reads every file of the landing folder in full before it swaps the raw table
in; a file that cannot be read as a whole lands as one `bad_file` record with the reason
(`LandingFileError`), so the other files still land. A raw frame (polars) holds one row per
record read: its file, line number and raw text, the contract's columns as text,
`parse_error` for records that could not be split into fields, and `source_reason` /
`source_detail` where a format adapter rejected the record. `raw_relation` is the SQL over
a raw table, `read_raw` and `read_landing` read one as a frame.

A raw table kept by event day (`raw_events`) is a folder of such folders, one per day
(`ingest_landing_day`); `raw_relation`, `raw_summary` and `read_raw` read either kind whole.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import polars as pl

from dagster_project.contracts import RAW_LINEAGE_COLUMNS
from dagster_project.sources.manifest import (
    CANONICAL_FORMAT,
    read_declared_export,
    read_source_manifest,
    source_window,
)
from dagster_project.sources.records import (
    SUPPORTED_SUFFIXES,
    LandingFileError,
    _check_parquet_pages,
    _parquet_select,
    _read_csv,
    _require_file,
    contract_columns,
    file_format,
)
from dagster_project.sql import connect, parquet_relation, query_polars, sql_identifier, sql_text
from dagster_project.storage import parquet_rows

BAD_FILE = "bad_file"  # the quarantine reason of a landing file that cannot be read whole
RAW_MANIFEST = "_raw.json"
PARSED_DIR = "_parsed"
# A landing folder that names its files' event day: events/date=YYYY-MM-DD/...
DATED_FOLDER = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})(?:/|$)")


def read_landing_file(path: Path, kind: str, source: str, root: Path | None = None) -> pl.DataFrame:
    """One landing file as a raw frame; `kind` is `events` or `items`."""
    columns, required = contract_columns(kind)
    if file_format(path) not in SUPPORTED_SUFFIXES:
        raise LandingFileError(
            f"{path}: unknown format {path.suffix!r}; expected one of {sorted(SUPPORTED_SUFFIXES)}"
        )
    _require_file(path)
    if file_format(path) == ".parquet":
        return _duckdb_frame(_parquet_select([path], kind, source, root))
    frame = _read_csv(path, columns, required)
    return frame.with_columns(
        source=pl.lit(source, pl.String),
        source_file=pl.lit(str(path.relative_to(root)) if root else path.name, pl.String),
        source_reason=pl.lit(None, pl.String),
        source_detail=pl.lit(None, pl.String),
    ).select(RAW_LINEAGE_COLUMNS + columns)


def landing_files(folder: Path) -> list[Path]:
    """Every file under `folder` but hidden ones, in a stable order (files of an unknown
    format included: ingestion quarantines them as bad files)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def landing_paths(landing: Path) -> list[str]:
    """Relative paths of every events and items file in the landing folder."""
    files = [
        p
        for kind in ("events", "items")
        if (landing / kind).is_dir()
        for p in landing_files(landing / kind)
    ]
    return sorted(str(p.relative_to(landing)) for p in files)


def _duckdb_frame(query: str) -> pl.DataFrame:
    with connect() as con:
        return query_polars(con, query)


def ingest_landing(
    landing: Path, kind: str, target: Path, day: LandingDay | None = None
) -> RawSummary:
    """Every record of one kind in the landing folder -> the raw table folder `target`.

    The raw table is an immutable snapshot of what landed: Parquet exports are copied as they
    are (their records are read through `raw_relation`, which adds the file, the line and the
    text casts); CSV files and format-adapter exports are stored parsed, one record per line,
    under `_parsed/`. `_raw.json` lists the files. Every file is read in full, and the folder
    built aside, before it is swapped in: a file that cannot be read whole lands as one
    `bad_file` record naming the reason (see `_land_files`), and when no file is good the
    run stops and the previous raw table stays. What a killed ingest left beside the table is
    put right first (`_recover_interrupted_swap`).

    `day`: only the records of that event day (`LandingDay`), for a raw table kept by day;
    a day with no records gets an empty table, and a day whose files all fail does not stop
    (`_land_day`).
    """
    manifest = read_source_manifest(landing)
    target.parent.mkdir(parents=True, exist_ok=True)
    _recover_interrupted_swap(target)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    (tmp / PARSED_DIR).mkdir(parents=True)
    try:
        if day is not None:
            files = _land_day(landing, manifest, kind, day, tmp)
        elif manifest["format"] != CANONICAL_FORMAT:
            files = _land_export(landing, manifest, kind, tmp)
        else:
            files = _land_files(landing, kind, manifest["source"], tmp)
        listing = {"kind": kind, "source": manifest.get("source"), "files": files}
        (tmp / RAW_MANIFEST).write_text(
            json.dumps(listing | ({"day": day.day} if day else {}), indent=1)
        )
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return raw_summary(target)


def _recover_interrupted_swap(target: Path) -> None:
    """Undo what a killed ingest left beside `target`: a table moved aside (`.old`) while
    no new one had taken its place is moved back, and half-built (`.tmp`) or superseded
    folders are removed."""
    aside = sorted(target.parent.glob(f".{target.name}.*.old"), key=lambda p: p.stat().st_mtime)
    if aside and not target.exists():
        aside.pop().rename(target)
    for stale in [*aside, *target.parent.glob(f".{target.name}.*.tmp")]:
        shutil.rmtree(stale, ignore_errors=True)


def _land_export(landing: Path, manifest: dict, kind: str, tmp: Path) -> list[dict]:
    """The frame of `kind` of a format adapter's export into the raw folder being built at
    `tmp`, parsed, as one file; the manifest's entry."""
    frame = getattr(read_declared_export(landing, manifest), kind)
    entry = _write_parsed(frame, Path("export"), tmp)
    return [entry | {"source_files": frame["source_file"].unique(maintain_order=True).to_list()}]


def _land_files(landing: Path, kind: str, source: str, tmp: Path) -> list[dict]:
    """Every landing file of `kind` into the raw folder being built at `tmp`, each read in
    full first; the manifest's entries. A bad file becomes one record with `source_reason`
    `bad_file` and the reason; all files bad (or none) raises, naming each."""
    found = landing_files(landing / kind)
    if not found:
        raise LandingFileError(f"{landing / kind}: no landing files")
    files, bad = [], []
    for path in found:
        try:
            files.append(_land_file(path, kind, source, landing, tmp))
        except LandingFileError as exc:
            bad.append(str(exc))
            files.append(_land_bad_file(path, str(exc), kind, source, landing, tmp))
    if len(bad) == len(found):
        raise LandingFileError("no landing file could be read: " + "; ".join(bad))
    return files


def named_day(landing_path: str) -> str | None:
    """The event day a landing path (relative) names by a folder `date=YYYY-MM-DD`, when that
    is a real date; None otherwise (the file names no day)."""
    named = DATED_FOLDER.search(landing_path)
    if named is None:
        return None
    try:
        return date.fromisoformat(named.group(1)).isoformat()
    except ValueError:
        return None


@dataclass(frozen=True)
class LandingDay:
    """One event day of the landing area, as a raw table kept by day reads it.

    A file under `date=YYYY-MM-DD/` (`named_day`) belongs to the day it names. A file that
    names no day (a file dropped at the top, a format adapter's export) gives each record to
    the day of its event time, kept within the declared window; a record without a readable
    time, or a file that cannot be read, to the window's first day. Days before `first_day`
    (the first partition) fold into it. So every record belongs to exactly one day, whichever
    day is ingested first; a file of a day still to come waits for its day
    (`files_still_to_come`)."""

    day: str  # YYYY-MM-DD
    first_day: str  # the first day kept

    def of_named(self, named: str) -> str:
        return max(named, self.first_day)


def _land_day(landing: Path, manifest: dict, kind: str, day: LandingDay, tmp: Path) -> list[dict]:
    """The records of `day` into the raw folder being built at `tmp`: the day's dated files
    whole and the day's records of the files that name no day. A file that cannot be read
    whole lands as one `bad_file` record in its day (the window's first day for a file that
    names no day), and the day goes on: whether every file of the whole landing area failed
    cannot be told from one day (re-run the days once it is readable again)."""
    if manifest["format"] != CANONICAL_FORMAT:
        frame = getattr(read_declared_export(landing, manifest), kind)
        return _land_day_records(frame, Path("export"), day, landing, tmp)
    files = []
    for path in landing_files(landing / kind):
        named = named_day(str(path.relative_to(landing / kind)))
        if named is not None and day.of_named(named) == day.day:
            try:
                files.append(_land_file(path, kind, manifest["source"], landing, tmp))
            except LandingFileError as exc:
                files.append(_land_bad_file(path, str(exc), kind, manifest["source"], landing, tmp))
        elif named is None:
            files.extend(_land_undated_file(path, kind, manifest["source"], day, landing, tmp))
    if not files:  # a day without records: an empty table, so that readers find the day
        empty = pl.DataFrame(schema=_raw_schema(kind))
        files.append(_write_parsed(empty, Path("none"), tmp) | {"source_files": []})
    return files


def _land_undated_file(
    path: Path, kind: str, source: str, day: LandingDay, landing: Path, tmp: Path
) -> list[dict]:
    """The records of `day` in a file that names no day (`_land_day_records`); a file that
    cannot be read whole is one `bad_file` record, on the window's first day."""
    try:
        frame, bad_file = read_landing_file(path, kind, source, landing), {}
    except LandingFileError as exc:
        frame = _bad_file_record(path, str(exc), kind, source, landing)
        bad_file = {"bad_file": frame["source_detail"][0]}
    entries = _land_day_records(frame, path.relative_to(landing), day, landing, tmp)
    return [entry | bad_file for entry in entries]


def _land_day_records(
    frame: pl.DataFrame, rel: Path, day: LandingDay, landing: Path, tmp: Path
) -> list[dict]:
    """The records of `frame` (a file that names no day) that belong to `day`, parsed into
    the raw folder at `tmp`; none when it has none."""
    mine = frame.filter(_record_days(frame, day, landing) == day.day)
    if not mine.height:
        return []
    entry = _write_parsed(mine, rel, tmp)
    sources = mine["source_file"].unique(maintain_order=True).to_list()
    return [entry | {"source_files": sources}]


def _record_days(frame: pl.DataFrame, day: LandingDay, landing: Path) -> pl.Series:
    """The day (YYYY-MM-DD) each record of a file that names no day belongs to (see
    `LandingDay`): its event time's UTC day within the declared window."""
    start, end = source_window(landing)
    first, last = f"{start:%Y-%m-%d}", f"{end - pd.Timedelta(1, 'us'):%Y-%m-%d}"
    low, high = day.of_named(first), day.of_named(last)
    if "event_time" not in frame.columns:
        return pl.Series([low] * frame.height, dtype=pl.String)
    with connect() as con:
        con.register("records", frame.select("event_time").to_arrow())
        return query_polars(
            con,
            f"""SELECT least(greatest(coalesce(strftime(timezone('UTC',
                    TRY_CAST(event_time AS TIMESTAMPTZ)), '%Y-%m-%d'), {sql_text(low)}),
                    {sql_text(low)}), {sql_text(high)}) AS day FROM records""",
        )["day"]


def _land_file(path: Path, kind: str, source: str, landing: Path, tmp: Path) -> dict:
    rel = path.relative_to(landing)
    if file_format(path) == ".parquet":
        rows = _check_parquet_pages(path, kind)
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, tmp / rel)
        return {"path": str(rel), "parsed": False, "rows": rows, "source_files": [str(rel)]}
    frame = read_landing_file(path, kind, source, landing)
    return _write_parsed(frame, rel, tmp)


def _land_bad_file(
    path: Path, reason: str, kind: str, source: str, landing: Path, tmp: Path
) -> dict:
    """One record for a file that cannot be read whole: line 0, the reason in words."""
    record = _bad_file_record(path, reason, kind, source, landing)
    entry = _write_parsed(record, path.relative_to(landing), tmp)
    return entry | {"bad_file": record["source_detail"][0]}


def _bad_file_record(
    path: Path, reason: str, kind: str, source: str, landing: Path
) -> pl.DataFrame:
    """The raw frame of one `bad_file` record for `path` (line 0, the reason in words)."""
    schema = _raw_schema(kind)
    record = dict.fromkeys(schema) | {
        "source": source,
        "source_file": str(path.relative_to(landing)),
        "source_line": 0,
        "source_reason": BAD_FILE,
        "source_detail": reason.replace(str(landing) + "/", ""),
    }
    return pl.DataFrame([record], schema=schema)


def _raw_schema(kind: str) -> dict[str, pl.DataType]:
    """The raw frame's columns of `kind`: text, but the line number."""
    columns, _ = contract_columns(kind)
    return {c: pl.Int64 if c == "source_line" else pl.String for c in RAW_LINEAGE_COLUMNS + columns}


def _write_parsed(frame: pl.DataFrame, rel: Path, tmp: Path) -> dict:
    name = f"{PARSED_DIR}/{rel}.parquet"
    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
    # zstd at level 1: the same size as polars' default level on landing CSV, 30% faster
    # to write (2M lines: 1.7 s against 2.5 s)
    frame.write_parquet(tmp / name, compression="zstd", compression_level=1)
    return {
        "path": name,
        "parsed": True,
        "rows": frame.height,
        "unparseable": frame["parse_error"].count(),
        "rejected": frame["source_reason"].count(),
        "source_files": [str(rel)],
    }


@dataclass
class RawSummary:
    """What a raw table folder holds, from its manifest."""

    rows: int
    files: int
    unparseable: int
    rejected_by_adapter: int
    bad_files: dict[str, str]  # source file -> why it could not be read whole


def raw_tables(raw: Path) -> list[Path]:
    """The raw table folders `raw` holds: itself, or its days' (a raw table kept by event day,
    see `ingest_landing_day`), oldest first."""
    if (raw / RAW_MANIFEST).exists():
        return [raw]
    days = sorted(p for p in raw.glob(f"*/{RAW_MANIFEST}") if not p.parent.name.startswith("."))
    if not days:
        raise FileNotFoundError(f"raw table {raw} holds nothing: ingest the landing files first")
    return [p.parent for p in days]


def files_still_to_come(landing: Path, kind: str, last_day: str) -> list[str]:
    """Landing files (relative paths) that name a day after `last_day` (the latest day a run
    may ingest): they wait for their day."""
    waiting = []
    for path in landing_files(landing / kind) if (landing / kind).is_dir() else []:
        named = named_day(str(path.relative_to(landing / kind)))
        if named is not None and named > last_day:
            waiting.append(str(path.relative_to(landing)))
    return waiting


def stored_raw_rows(raw: Path) -> int:
    """Records stored in the raw table folder `raw` (every day of one kept by day), counted in
    its Parquet files: after a deletion request (privacy) it can be below the manifest's."""
    return sum(parquet_rows(table / entry["path"]) for table, entry in raw_manifest_entries(raw))


def table_relation(path: Path) -> str:
    """SQL over a stored table: a raw table folder (`raw_relation`) or Parquet (a file, or a
    folder of day files)."""
    if (path / RAW_MANIFEST).exists() or any(path.glob(f"*/{RAW_MANIFEST}")):
        return raw_relation(path)
    return parquet_relation(path)


def ingest_landing_day(landing: Path, kind: str, day: LandingDay, raw: Path) -> RawSummary:
    """The landing records of one event day (`LandingDay`) -> that day's folder of the raw
    table kept by day at `raw` (`ingest_landing` with `day`)."""
    return ingest_landing(landing, kind, raw / day.day, day)


def raw_manifest_entries(raw: Path) -> list[tuple[Path, dict]]:
    """Every file entry of the raw table's manifests (every day's, of one kept by day), with
    the raw table folder it is in."""
    return [
        (table, entry)
        for table in raw_tables(raw)
        for entry in json.loads((table / RAW_MANIFEST).read_text())["files"]
    ]


def raw_summary(raw: Path) -> RawSummary:
    """Records, source files, unparseable records, adapter rejections and bad files of a raw
    table (every day of one kept by day)."""
    files = [entry for _, entry in raw_manifest_entries(raw)]
    bad = {f["source_files"][0]: f["bad_file"] for f in files if "bad_file" in f}
    return RawSummary(
        rows=sum(f["rows"] for f in files),
        files=len({name for f in files for name in f["source_files"]}),
        unparseable=sum(f.get("unparseable", 0) for f in files),
        rejected_by_adapter=sum(f.get("rejected", 0) for f in files) - len(bad),
        bad_files=bad,
    )


def raw_rows(raw: Path) -> int:
    """Records in the raw table folder `raw` (from its manifest)."""
    return raw_summary(raw).rows


def raw_relation(raw: Path) -> str:
    """SQL over the raw table folder `raw`: the raw frame's columns plus `_row`, a row key that
    orders records by day (of a table kept by day), file and line (self-contained, so it can
    back a view)."""
    parts, files = [], 0
    for table in raw_tables(raw):
        manifest = json.loads((table / RAW_MANIFEST).read_text())
        parts.append(_raw_table_relation(table, manifest, files))
        files += sum(len(f["source_files"]) for f in manifest["files"])
    if len(parts) == 1:
        return parts[0]
    return "(" + " UNION ALL ".join(f"SELECT * FROM {part}" for part in parts) + ")"


def _raw_table_relation(raw: Path, manifest: dict, first_file: int) -> str:
    """`raw_relation` of one raw table folder, its files numbered from `first_file` on."""
    columns, _ = contract_columns(manifest["kind"])
    sources = [name for f in manifest["files"] for name in f["source_files"]]
    files_sql = (
        "SELECT * FROM (VALUES "
        + ", ".join(f"({sql_text(name)}, {first_file + i})" for i, name in enumerate(sources))
        + ") v(source_file, _file)"
        if sources
        else "SELECT NULL::VARCHAR AS source_file, NULL::INTEGER AS _file WHERE false"
    )
    order = ", ".join(sql_identifier(c) for c in RAW_LINEAGE_COLUMNS + columns)
    parts = []
    parsed = [raw / f["path"] for f in manifest["files"] if f["parsed"]]
    if parsed:
        names = ", ".join(sql_text(str(p)) for p in parsed)
        parts.append(f"SELECT {order} FROM read_parquet([{names}], union_by_name = true)")
    copied = [raw / f["path"] for f in manifest["files"] if not f["parsed"]]
    if copied:
        parts.append(
            f"SELECT {order} FROM ({_parquet_select(copied, manifest['kind'], manifest['source'], raw)})"
        )
    union = " UNION ALL BY NAME ".join(f"({q})" for q in parts)
    # Every source file is listed by construction (ingest_landing writes the listing).
    return (
        f"(SELECT r.*, (f._file::BIGINT << 32) | r.source_line AS _row FROM ({union}) r "
        f"JOIN ({files_sql}) f USING (source_file))"
    )


def read_raw(raw: Path) -> pl.DataFrame:
    """The raw table folder as one frame, in file and line order (small tables and tests)."""
    with connect() as con:
        query = f"SELECT * EXCLUDE (_row) FROM {raw_relation(raw)} ORDER BY _row"
        return query_polars(con, query)


def read_landing(landing: Path, kind: str) -> pl.DataFrame:
    """Every record of one kind (`events` or `items`) in the landing folder, as one raw frame."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"raw_{kind}"
        ingest_landing(landing, kind, path)
        return read_raw(path)
