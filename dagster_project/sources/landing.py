"""Read landing files (CSV or Parquet exports) into raw frames: every line kept, nothing typed yet.

A raw frame (polars) holds one row per record read: its file, line number and raw text, the
contract's columns as text, `parse_error` for records that could not be split into fields, and
`source_reason` / `source_detail` where a format adapter rejected the record. A landing file
that cannot be read as a whole (unreadable or empty, a required column missing or nested, an
unknown format, corrupt pages) raises `LandingFileError` naming the file and the problem;
`ingest_landing` reads every file in full before it swaps the raw table in, and keeps such a
file as one `bad_file` record with that reason, so the other files still land.

CSV files (optionally gzip-compressed, `.csv.gz`) are read as lines by polars and split on
commas in bulk; only lines with quotes go through Python's csv module, and only files with
invalid UTF-8 are read line by line. A quoted field with line breaks inside (RFC 4180) is one
record, numbered by its first line.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from dagster_project.contracts import (
    EVENT_COLUMNS,
    EVENT_REQUIRED,
    ITEM_COLUMNS,
    ITEM_REQUIRED,
    RAW_LINEAGE_COLUMNS,
)
from dagster_project.storage import connect, sql_text

SUPPORTED_SUFFIXES = {".csv", ".csv.gz", ".parquet"}
BAD_FILE = "bad_file"  # the quarantine reason of a landing file that cannot be read whole
CANONICAL_FORMAT = "canonical"


class LandingFileError(RuntimeError):
    """A landing file cannot be read as a whole; the run stops before writing anything."""


def contract_columns(kind: str) -> tuple[list[str], list[str]]:
    """(columns, required columns) of a raw frame of `kind` (`events` or `items`)."""
    if kind == "events":
        return EVENT_COLUMNS, EVENT_REQUIRED
    if kind == "items":
        return ITEM_COLUMNS, ITEM_REQUIRED
    raise ValueError(f"unknown landing kind {kind!r}; expected 'events' or 'items'")


def file_format(path: Path) -> str:
    """The landing format of `path` by its name: `.csv`, `.csv.gz`, `.parquet` or another
    suffix (unsupported)."""
    name = path.name.lower()
    return ".csv.gz" if name.endswith(".csv.gz") else path.suffix.lower()


def _check_header(path: Path, header: list[str], required: list[str]) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise LandingFileError(
            f"{path}: required column(s) {', '.join(missing)} missing; the file has {header}"
        )


def _split_quoted(line: str, sep: str = ",") -> list[str] | str:
    """One line with quotes -> its fields, or why it cannot be split. One line at a time, so
    an unterminated quote never swallows the following lines."""
    try:
        return next(csv.reader([line], delimiter=sep, strict=True), [])
    except csv.Error as exc:
        return f"the quoting is broken ({exc})"


def _split_quoted_lines(lines: list[str], sep: str) -> list[list[str] | str]:
    """`_split_quoted` for many lines: one csv reader over all of them when that gives one
    record per line without an error (the usual case), else line by line."""
    try:
        records = list(csv.reader(lines, delimiter=sep, strict=True))
    except csv.Error:
        records = []
    if len(records) == len(lines):
        return records
    return [_split_quoted(line, sep) for line in lines]


def _lines_exact(data: bytes) -> tuple[list[str], dict[int, str]]:
    """Decode line by line (slow, exact for any bytes): (lines, errors by line index)."""
    lines, errors = [], {}
    for i, chunk in enumerate(data.split(b"\n")):
        try:
            lines.append(chunk.decode("utf-8-sig" if i == 0 else "utf-8"))
        except UnicodeDecodeError:
            lines.append(chunk.decode("utf-8", errors="replace"))
            errors[i] = "the line is not valid UTF-8"
    if lines and lines[-1] == "" and data.endswith(b"\n"):
        lines.pop()
    return [line.removesuffix("\r") for line in lines], errors


def _lines_fast(data: bytes) -> pl.Series | None:
    """Every line as one string (polars); None when that cannot be trusted to be exact."""
    if b"\x1f" in data or b"\r" in data.replace(b"\r\n", b"\n"):
        return None  # the unit separator is our column separator; a bare CR is not a line end
    try:
        lines = pl.read_csv(
            io.BytesIO(data),
            has_header=False,
            separator="\x1f",
            quote_char=None,
            new_columns=["raw"],
            schema={"raw": pl.String},
            encoding="utf8",
        )["raw"]
    except pl.exceptions.PolarsError:
        return None  # invalid UTF-8 among others: the exact reader says which lines
    expected = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    return lines if len(lines) == expected else None


def _split_record(text: str, sep: str) -> int:
    """Fields of `text` read as exactly one strict CSV record; -1 when it is not one."""
    try:
        records = list(csv.reader(io.StringIO(text), delimiter=sep, strict=True))
    except csv.Error:
        return -1
    return len(records[0]) if len(records) == 1 else -1


def _multi_line_records(body: pl.DataFrame, sep: str, width: int) -> pl.DataFrame:
    """Lines (i, raw) with records that span lines (a quoted field with line breaks inside,
    RFC 4180) joined into one, numbered by their first line. A line opens such a record when
    its quotes are unbalanced; the record closes at the line that balances them, and counts
    as one only if it then splits into one record of `width` fields, else every line stays
    its own."""
    odd = body["raw"].str.count_matches('"', literal=True).fill_null(0) % 2 == 1
    if not odd.any():
        return body
    index, raw, parities = body["i"].to_list(), body["raw"].to_list(), odd.to_list()
    out_i, out_raw, k = [], [], 0
    while k < len(raw):
        end = k + 1
        if parities[k]:
            balance = 1
            while end < len(raw) and balance:
                balance ^= parities[end]
                end += 1
            joined = "\n".join(line or "" for line in raw[k:end])
            if balance or _split_record(joined, sep) != width:
                end = k + 1  # unterminated or not one record: the line stands alone
        out_i.append(index[k])
        out_raw.append(raw[k] if end == k + 1 else "\n".join(line or "" for line in raw[k:end]))
        k = end
    return pl.DataFrame({"i": out_i, "raw": out_raw}, schema=body.schema)


def _header_names(path: Path, line: str | None, sep: str) -> list[str]:
    """Column names from a header line (a BOM dropped, blanks named by position); a header
    that cannot be split or repeats a name raises."""
    header = _split_quoted((line or "").removeprefix("\ufeff"), sep)
    if isinstance(header, str):
        raise LandingFileError(f"{path}: the header line cannot be read: {header}")
    names = [h.strip() or f"column_{i + 1}" for i, h in enumerate(header)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise LandingFileError(f"{path}: the header repeats column(s) {', '.join(repeated)}")
    return names


def read_delimited(
    path: Path,
    *,
    names: list[str] | None = None,
    sep: str = ",",
    required: list[str] | tuple[str, ...] = (),
) -> pl.DataFrame:
    """Every physical line of a delimited text file as one record, exactly.

    Columns: `source_line` (the physical line; with a header, the header is line 1), `raw`
    (the line as read), `parse_error` (why the line cannot be split into the file's fields,
    else null) and one text column per field, as written ("" stays ""). `names=None` reads
    the names from the first line; a header-less file passes them. Lines are split on `sep`
    in bulk by polars; only lines with quotes go through Python's csv module, and only files
    with invalid UTF-8 (or a bare CR) are decoded line by line.
    """
    data = _file_bytes(path)
    if names is None and not data.strip():
        raise LandingFileError(f"{path}: the file is empty (no header line)")
    lines = _lines_fast(data)
    encoding_errors: dict[int, str] = {}
    if lines is None:
        decoded, encoding_errors = _lines_exact(data)
        lines = pl.Series("raw", decoded, dtype=pl.String)
    first = 0
    if names is None:
        names, first = _header_names(path, lines[0], sep), 1
    _check_header(path, names, list(required))
    body = lines[first:].to_frame("raw").with_row_index("i", offset=first)
    body = _multi_line_records(body, sep, len(names))
    body = body.with_columns(
        quoted=pl.col("raw").str.contains('"', literal=True).fill_null(False),
        fields=pl.col("raw").str.count_matches(sep, literal=True) + 1,
        blank=pl.col("raw").is_null() | (pl.col("raw").str.strip_chars() == ""),
    )
    plain, plain_errors = _split_plain_lines(body, sep, names)
    quoted, quoted_errors = _split_quoted_records(body, sep, names)
    encoding = pl.DataFrame(
        [(i, e) for i, e in encoding_errors.items() if i >= first],
        schema={"i": pl.UInt32, "encoding_error": pl.String},
        orient="row",
    )
    frame = (
        body.select("i", "raw")
        .join(
            pl.concat([plain, quoted.select(plain.columns)], how="vertical_relaxed"),
            on="i",
            how="left",
        )
        .join(pl.concat([plain_errors, quoted_errors], how="vertical_relaxed"), on="i", how="left")
        .join(encoding, on="i", how="left")
        .sort("i")
        .with_columns(parse_error=pl.coalesce("encoding_error", "parse_error"))
    )
    split_ok = pl.col("parse_error").is_null()
    return frame.select(
        (pl.col("i").cast(pl.Int64) + 1).alias("source_line"),
        "raw",
        "parse_error",
        *[pl.when(split_ok).then(pl.col(c)).alias(c) for c in names],
    )


def _file_bytes(path: Path) -> bytes:
    """A landing file's bytes, a `.csv.gz` unpacked; an unreadable file raises, named."""
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if file_format(path) == ".csv.gz" else data
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise LandingFileError(f"{path}: cannot be read ({exc})") from exc


_WRONG_WIDTH = " fields where {width} were expected"
_ERROR_SCHEMA = {"i": pl.UInt32, "parse_error": pl.String}


def _split_plain_lines(
    body: pl.DataFrame, sep: str, names: list[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Lines without quotes, split in bulk: (fields of those of the right width by line
    index `i`, why each blank or wrong-width line cannot be split)."""
    width = len(names)
    plain = body.filter(~pl.col("quoted") & ~pl.col("blank") & (pl.col("fields") == width))
    split = (
        plain.select(
            "i",
            pl.col("raw").str.split_exact(sep, width - 1).struct.rename_fields(names).alias("f"),
        ).unnest("f")
        if width > 1
        else plain.select("i", pl.col("raw").alias(names[0]))
    )
    wrong_width = _WRONG_WIDTH.format(width=width)
    errors = body.filter(~pl.col("quoted") & (pl.col("blank") | (pl.col("fields") != width)))
    return split, errors.select(
        "i",
        pl.when(pl.col("blank"))
        .then(pl.lit("blank line"))
        .otherwise(pl.concat_str([pl.col("fields").cast(pl.String), pl.lit(wrong_width)]))
        .alias("parse_error"),
    )


def _split_quoted_records(
    body: pl.DataFrame, sep: str, names: list[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Records with quotes, through Python's csv module one at a time (rare in behaviour
    exports): (fields of those that fit by line index `i`, why each other cannot be split)."""
    width = len(names)
    quoted = body.filter(pl.col("quoted")).select("i", "raw")
    results = _split_quoted_lines(quoted["raw"].to_list(), sep)
    fits = [isinstance(f, list) and len(f) == width for f in results]
    wrong_width = _WRONG_WIDTH.format(width=width)
    errors = [
        (i, f if isinstance(f, str) else f"{len(f)}{wrong_width}")
        for i, f, ok in zip(quoted["i"].to_list(), results, fits, strict=True)
        if not ok
    ]
    rows = [f for f, ok in zip(results, fits, strict=True) if ok]
    split = pl.DataFrame(rows, schema=dict.fromkeys(names, pl.String), orient="row").with_columns(
        quoted["i"].filter(pl.Series(fits, dtype=pl.Boolean))
    )
    return split, pl.DataFrame(errors, schema=_ERROR_SCHEMA, orient="row")


def _read_csv(path: Path, columns: list[str], required: list[str]) -> pl.DataFrame:
    frame = read_delimited(path, required=required)
    return frame.select(
        "source_line",
        "raw",
        "parse_error",
        *[
            pl.when(pl.col(c) != "").then(pl.col(c)).alias(c)
            if c in frame.columns
            else pl.lit(None, pl.String).alias(c)
            for c in columns
        ],
    )


def _parquet_columns(path: Path, required: list[str]) -> list[str]:
    """The file's column names (from its footer); unreadable files and missing columns raise."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise LandingFileError(f"{path}: not a readable Parquet file ({exc})") from exc
    _check_header(path, schema.names, required)
    nested = [f"{f.name} ({f.type})" for f in schema if pa.types.is_nested(f.type)]
    if nested:
        raise LandingFileError(
            f"{path}: nested column(s) {', '.join(nested)}; the contract's columns are flat values"
        )
    return schema.names


def _check_parquet_pages(path: Path, kind: str) -> int:
    """Read every page of a Parquet landing file as the raw table will (every contract column
    cast to text); corrupt pages raise naming the file. Returns its records."""
    _, required = contract_columns(kind)
    _parquet_columns(path, required)
    query = _parquet_select([path], kind, "check", None)
    try:
        with connect() as con:
            ((rows,),) = con.sql(
                f"SELECT count(*) FROM ({query}) t WHERE hash(COLUMNS(*)) IS NOT NULL"
            ).fetchall()
    except duckdb.Error as exc:
        raise LandingFileError(f"{path}: its data pages cannot be read ({exc})") from exc
    return int(rows)


def _parquet_select(files: list[Path], kind: str, source: str, root: Path | None) -> str:
    """DuckDB SELECT of the raw frame over Parquet files (one scan, every record kept)."""
    columns, required = contract_columns(kind)
    present = set().union(*(_parquet_columns(p, required) for p in files))
    listing = ", ".join(sql_text(str(p)) for p in files)
    prefix = f"{root}/" if root else None
    file_name = (
        f"replace(filename, {sql_text(prefix)}, '')" if prefix else "parse_filename(filename)"
    )
    text = [
        f'nullif(CAST("{c}" AS VARCHAR), \'\') AS "{c}"'
        if c in present
        else f'CAST(NULL AS VARCHAR) AS "{c}"'
        for c in columns
    ]
    return (
        f"SELECT {sql_text(source)} AS source, {file_name} AS source_file, "
        "CAST(file_row_number + 1 AS BIGINT) AS source_line, CAST(NULL AS VARCHAR) AS raw, "
        "CAST(NULL AS VARCHAR) AS parse_error, CAST(NULL AS VARCHAR) AS source_reason, "
        f"CAST(NULL AS VARCHAR) AS source_detail, {', '.join(text)} "
        f"FROM read_parquet([{listing}], union_by_name = true, filename = true, "
        "file_row_number = true)"
    )


def read_landing_file(path: Path, kind: str, source: str, root: Path | None = None) -> pl.DataFrame:
    """One landing file as a raw frame; `kind` is `events` or `items`."""
    columns, required = contract_columns(kind)
    if file_format(path) not in SUPPORTED_SUFFIXES:
        raise LandingFileError(
            f"{path}: unknown format {path.suffix!r}; expected one of {sorted(SUPPORTED_SUFFIXES)}"
        )
    if not path.is_file():
        raise LandingFileError(f"{path}: no such file")
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


def read_source_manifest(landing: Path) -> dict:
    """The export's declared name, format and time window (`source.json`).

    `format` is `canonical` (files in the contract's columns under events/ and items/, the
    default) or the name of a format adapter (see docs/format_adapters.md) with an optional
    `mapping`; adapters declare their own window.
    """
    path = landing / "source.json"
    if not path.is_file():
        raise LandingFileError(f"{path}: missing; it declares the source name and its time window")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LandingFileError(f"{path}: not valid JSON ({exc})") from exc
    manifest.setdefault("format", CANONICAL_FORMAT)
    needed = (
        ("source", "window_start", "window_end") if manifest["format"] == CANONICAL_FORMAT else ()
    )
    for key in needed:
        if key not in manifest:
            raise LandingFileError(f"{path}: key {key!r} missing")
    return manifest


def source_window(landing: Path) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The declared [start, end) window of the export in `landing`, in UTC."""
    manifest = read_source_manifest(landing)
    if manifest["format"] != CANONICAL_FORMAT:
        export = _read_export(landing, manifest)
        return export.window_start, export.window_end
    return (
        pd.Timestamp(manifest["window_start"]).tz_convert("UTC"),
        pd.Timestamp(manifest["window_end"]).tz_convert("UTC"),
    )


def _read_export(landing: Path, manifest: dict):
    from dagster_project.sources.adapters import read_export

    return read_export(landing, manifest["format"], manifest.get("mapping"))


def _duckdb_frame(query: str) -> pl.DataFrame:
    with connect() as con:
        return pl.from_arrow(con.sql(query).to_arrow_table())  # type: ignore[return-value]


RAW_MANIFEST = "_raw.json"
PARSED_DIR = "_parsed"


def ingest_landing(landing: Path, kind: str, target: Path) -> RawSummary:
    """Every record of one kind in the landing folder -> the raw table folder `target`.

    The raw table is an immutable snapshot of what landed: Parquet exports are copied as they
    are (their records are read through `raw_relation`, which adds the file, the line and the
    text casts); CSV files and format-adapter exports are stored parsed, one record per line,
    under `_parsed/`. `_raw.json` lists the files. Every file is read in full, and the folder
    built aside, before it is swapped in: a file that cannot be read whole lands as one
    `bad_file` record naming the reason (see `_land_files`), and when no file is good the
    run stops and the previous raw table stays. What a killed ingest left beside the table is
    put right first (`_recover_interrupted_swap`).
    """
    manifest = read_source_manifest(landing)
    target.parent.mkdir(parents=True, exist_ok=True)
    _recover_interrupted_swap(target)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    (tmp / PARSED_DIR).mkdir(parents=True)
    files: list[dict] = []
    try:
        if manifest["format"] != CANONICAL_FORMAT:
            frame = getattr(_read_export(landing, manifest), kind)
            frame.write_parquet(tmp / PARSED_DIR / "export.parquet")
            files.append(
                {
                    "path": f"{PARSED_DIR}/export.parquet",
                    "parsed": True,
                    "rows": frame.height,
                    "unparseable": frame["parse_error"].count(),
                    "rejected": frame["source_reason"].count(),
                    "source_files": frame["source_file"].unique(maintain_order=True).to_list(),
                }
            )
        else:
            files = _land_files(landing, kind, manifest["source"], tmp)
        (tmp / RAW_MANIFEST).write_text(
            json.dumps({"kind": kind, "source": manifest.get("source"), "files": files}, indent=1)
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
    columns, _ = contract_columns(kind)
    rel = path.relative_to(landing)
    record = {c: None for c in RAW_LINEAGE_COLUMNS + columns}
    record |= {
        "source": source,
        "source_file": str(rel),
        "source_line": 0,
        "source_reason": BAD_FILE,
        "source_detail": reason.replace(str(landing) + "/", ""),
    }
    schema = {c: pl.Int64 if c == "source_line" else pl.String for c in record}
    entry = _write_parsed(pl.DataFrame([record], schema=schema), rel, tmp)
    return entry | {"bad_file": record["source_detail"]}


def _write_parsed(frame: pl.DataFrame, rel: Path, tmp: Path) -> dict:
    name = f"{PARSED_DIR}/{rel}.parquet"
    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(tmp / name)
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


def raw_summary(raw: Path) -> RawSummary:
    """Records, source files, unparseable records, adapter rejections and bad files of a raw
    table."""
    files = json.loads((raw / RAW_MANIFEST).read_text())["files"]
    bad = {f["source_files"][0]: f["bad_file"] for f in files if "bad_file" in f}
    return RawSummary(
        rows=sum(f["rows"] for f in files),
        files=sum(len(f["source_files"]) for f in files),
        unparseable=sum(f.get("unparseable", 0) for f in files),
        rejected_by_adapter=sum(f.get("rejected", 0) for f in files) - len(bad),
        bad_files=bad,
    )


def raw_rows(raw: Path) -> int:
    """Records in the raw table folder `raw` (from its manifest)."""
    return raw_summary(raw).rows


def raw_relation(raw: Path) -> str:
    """SQL over the raw table folder `raw`: the raw frame's columns plus `_row`, a row key that
    orders records by file and line (self-contained, so it can back a view)."""
    manifest = json.loads((raw / RAW_MANIFEST).read_text())
    columns, _ = contract_columns(manifest["kind"])
    sources = [name for f in manifest["files"] for name in f["source_files"]]
    files_sql = (
        "SELECT * FROM (VALUES "
        + ", ".join(f"({sql_text(name)}, {i})" for i, name in enumerate(sources))
        + ") v(source_file, _file)"
        if sources
        else "SELECT NULL::VARCHAR AS source_file, NULL::INTEGER AS _file WHERE false"
    )
    order = ", ".join(f'"{c}"' for c in RAW_LINEAGE_COLUMNS + columns)
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
        return pl.from_arrow(con.sql(query).to_arrow_table())  # type: ignore[return-value]


def read_landing(landing: Path, kind: str) -> pl.DataFrame:
    """Every record of one kind (`events` or `items`) in the landing folder, as one raw frame."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"raw_{kind}"
        ingest_landing(landing, kind, path)
        return read_raw(path)
