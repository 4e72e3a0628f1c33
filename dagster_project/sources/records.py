"""Exact record reading: every record of a CSV or Parquet file, as text, nothing typed yet.

A record frame (polars) holds one row per record read: its line number and raw text,
`parse_error` for records that could not be split into fields, and one text column per
field. A file that cannot be read as a whole (unreadable or empty, a required column missing
or nested, an unknown format, corrupt pages) raises `LandingFileError` naming the file and
the problem.

CSV files (optionally gzip-compressed, `.csv.gz`) are read as lines by polars and split on
commas in bulk; only lines with quotes go through Python's csv module, and only files with
invalid UTF-8 are read line by line. A quoted field with line breaks inside (RFC 4180) is one
record, numbered by its first line. Landing Parquet files are read through DuckDB
(`_parquet_select`); an export's Parquet files through polars (`read_parquet_records`).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from dagster_project.contracts import (
    EVENT_COLUMNS,
    EVENT_REQUIRED,
    ITEM_COLUMNS,
    ITEM_REQUIRED,
)
from dagster_project.sql import connect, sql_identifier, sql_text

SUPPORTED_SUFFIXES = {".csv", ".csv.gz", ".parquet"}
ISO_WITH_OFFSET = "%Y-%m-%dT%H:%M:%S%.f%:z"  # fraction only where there is one
NULL_TOKENS = ("",)


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
    encoding = _encoding_errors(encoding_errors, first)
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


def _encoding_errors(errors: dict[int, str], first: int) -> pl.DataFrame:
    """The lines from `first` on that are not valid UTF-8, by line index `i`, as a frame."""
    return pl.DataFrame(
        [(i, e) for i, e in errors.items() if i >= first],
        schema={"i": pl.UInt32, "encoding_error": pl.String},
        orient="row",
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
    """Decode every page of the contract's columns of a Parquet landing file; corrupt pages
    raise naming the file. Returns its records. The raw table reads these columns cast to
    text, a cast that cannot fail, so the check does not cast (10M rows: 0.6 s, 1.3 s with
    the casts)."""
    columns, required = contract_columns(kind)
    present = [c for c in _parquet_columns(path, required) if c in columns]
    read = ", ".join(sql_identifier(c) for c in present)
    query = f"SELECT {read} FROM read_parquet({sql_text(str(path))})"
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
        f"nullif(CAST({sql_identifier(c)} AS VARCHAR), '') AS {sql_identifier(c)}"
        if c in present
        else f"CAST(NULL AS VARCHAR) AS {sql_identifier(c)}"
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


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise LandingFileError(f"{path}: no such file")


def read_records(
    folder: Path,
    name: str,
    columns: list[str] | None = None,
    *,
    header: bool = True,
    required: Iterable[str] = (),
    sep: str = ",",
    null_tokens: Iterable[str] = NULL_TOKENS,
) -> pl.DataFrame:
    """One delimited text file as records: lineage columns plus one text column per field.

    Every physical line becomes one row (`source_line` counts the header as line 1). A line
    that cannot be split into exactly the file's fields gets `parse_error` and null fields.
    Field values equal to a null token (after trimming spaces) become null.
    """
    path = folder / name
    _require_file(path)
    records = read_delimited(
        path, names=None if header else list(columns or []), sep=sep, required=tuple(required)
    )
    tokens = list(null_tokens)
    fields = [c for c in records.columns if c not in ("source_line", "raw", "parse_error")]
    return records.select(
        pl.lit(name).alias("source_file"),
        "source_line",
        "raw",
        "parse_error",
        *[
            pl.when(~pl.col(c).str.strip_chars().is_in(tokens)).then(pl.col(c)).alias(c)
            for c in fields
        ],
    )


def read_parquet_records(folder: Path, name: str, required: Iterable[str] = ()) -> pl.DataFrame:
    """A Parquet file as records: `source_line` is the 1-based row number, `raw` the row as JSON."""
    path = folder / name
    _require_file(path)
    try:
        table = pl.read_parquet(path)
    except Exception as exc:  # pyarrow/polars raise several kinds for a damaged file
        raise LandingFileError(f"{path}: not a readable Parquet file ({exc})") from exc
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise LandingFileError(
            f"{path}: column(s) {', '.join(missing)} missing; the file has {table.columns}"
        )
    return table.select(
        pl.lit(name).alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_line"),
        pl.struct(pl.all()).struct.json_encode().alias("raw"),
        pl.lit(None, pl.String).alias("parse_error"),
        *[_parquet_text(c, dtype) for c, dtype in table.schema.items()],
    )


def _parquet_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """A typed Parquet column as text; timestamps as ISO 8601 (with the offset if zoned)."""
    if isinstance(dtype, pl.Datetime):
        fmt = ISO_WITH_OFFSET if dtype.time_zone else "%Y-%m-%dT%H:%M:%S%.f"
        return pl.col(name).dt.strftime(fmt)
    return pl.col(name).cast(pl.String)
