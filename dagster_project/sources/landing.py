"""Read landing files (CSV or Parquet exports) into raw frames: every line kept, nothing typed yet.

A raw frame holds one row per record read, with its file, line number and raw text, the
source's columns as strings, and `parse_error` for records that could not be split into
fields. Whole-file failures (unreadable file, a required column missing, an unknown format)
raise `LandingFileError` naming the file and the problem.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dagster_project.contracts import EVENT_COLUMNS, ITEM_COLUMNS

EVENT_REQUIRED = ["user_id", "item_id", "event_type", "event_time"]
ITEM_REQUIRED = ["item_id", "price"]
LINEAGE_COLUMNS = ["source", "source_file", "source_line", "raw", "parse_error"]
SUPPORTED_SUFFIXES = {".csv", ".parquet"}


class LandingFileError(RuntimeError):
    """A landing file cannot be read as a whole; the run stops before writing anything."""


def _decode_lines(path: Path) -> tuple[list[str], set[int]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
        bad_encoding: set[int] = set()
        lines = text.split("\n")
    except UnicodeDecodeError:
        lines, bad_encoding = [], set()
        for i, chunk in enumerate(data.split(b"\n")):
            try:
                lines.append(chunk.decode("utf-8-sig" if i == 0 else "utf-8"))
            except UnicodeDecodeError:
                lines.append(chunk.decode("utf-8", errors="replace"))
                bad_encoding.add(i)
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines], bad_encoding


def _split_line(line: str) -> list[str]:
    # Fast path for lines without quotes; csv only where quoting needs it (one line at a time,
    # so an unterminated quote never swallows the following lines).
    if '"' not in line:
        return line.split(",")
    return next(csv.reader([line]), [])


def _split_with_csv_module(
    lines: list[str], header: list[str], bad_encoding: set[int]
) -> tuple[pd.DataFrame, dict[int, str]]:
    """Line by line (slow, exact for any input): (fields by line index, errors by line index)."""
    width = len(header)
    good_rows, good_idx, errors = [], [], {}
    for i, line in enumerate(lines[1:], start=1):
        if i in bad_encoding:
            errors[i] = "the line is not valid UTF-8"
            continue
        fields = _split_line(line)
        if len(fields) != width:
            errors[i] = (
                f"{len(fields)} fields where the header has {width}"
                if line.strip()
                else "blank line"
            )
            continue
        good_rows.append(fields)
        good_idx.append(i)
    return pd.DataFrame(good_rows, columns=header, index=good_idx, dtype=object), errors


class _NeedsLineReader(Exception):
    """pyarrow cannot say which line a rejected row was on."""


def _split_with_arrow(
    path: Path, lines: list[str], header: list[str]
) -> tuple[pd.DataFrame, dict[int, str]] | None:
    """pyarrow's CSV parser (fast); None when its rows cannot be mapped to lines exactly."""
    if any("\r" in line for line in lines):
        return None  # a bare carriage return splits a row for arrow but not for us
    errors: dict[int, str] = {}

    def on_invalid(row: pacsv.InvalidRow) -> str:
        if row.number is None:
            raise _NeedsLineReader
        errors[row.number - 1] = (
            f"{row.actual_columns} fields where the header has {row.expected_columns}"
        )
        return "skip"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(
                invalid_row_handler=on_invalid, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True
            ),
        )
    except (pa.ArrowInvalid, _NeedsLineReader):
        return None
    kept = [i for i in range(1, len(lines)) if i not in errors]
    if table.column_names != header or table.num_rows != len(kept):
        return None
    good = table.to_pandas().set_axis(kept)
    if len(header) > 1:  # a blank line is one empty field: wrong width, as the line reader says
        blank = [i for i in kept if not lines[i].strip()]
        errors.update(dict.fromkeys(blank, "blank line"))
        good = good.drop(index=blank)
    return good, errors


def _read_csv(path: Path, columns: list[str], required: list[str]) -> pd.DataFrame:
    lines, bad_encoding = _decode_lines(path)
    if not lines:
        raise LandingFileError(f"{path}: the file is empty (no header line)")
    header = [h.strip() for h in _split_line(lines[0])]
    _check_header(path, header, required)
    split = None if bad_encoding else _split_with_arrow(path, lines, header)
    good, errors = split or _split_with_csv_module(lines, header, bad_encoding)
    frame = good.reindex(range(1, len(lines))).reindex(columns=columns)
    frame = frame.mask(frame == "")
    frame["source_line"] = range(2, len(lines) + 1)  # physical line; line 1 is the header
    frame["raw"] = lines[1:]
    frame["parse_error"] = pd.Series(errors, dtype=object).reindex(frame.index)
    return frame.reset_index(drop=True)


def _read_parquet(path: Path, columns: list[str], required: list[str]) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise LandingFileError(f"{path}: not a readable Parquet file ({exc})") from exc
    _check_header(path, table.column_names, required)
    frame = table.to_pandas().astype(object).reindex(columns=columns)
    frame = frame.where(frame.notna(), None).map(lambda v: None if v is None or v == "" else str(v))
    frame["source_line"] = range(1, len(frame) + 1)  # record number inside the file
    frame["raw"] = None
    frame["parse_error"] = None
    return frame


def _check_header(path: Path, header: list[str], required: list[str]) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise LandingFileError(
            f"{path}: required column(s) {', '.join(missing)} missing; the file has {header}"
        )


def read_landing_file(path: Path, kind: str, source: str, root: Path | None = None) -> pd.DataFrame:
    """One landing file as a raw frame; `kind` is `events` or `items`."""
    columns, required = (
        (EVENT_COLUMNS, EVENT_REQUIRED) if kind == "events" else (ITEM_COLUMNS, ITEM_REQUIRED)
    )
    if path.suffix not in SUPPORTED_SUFFIXES:
        raise LandingFileError(
            f"{path}: unknown format {path.suffix!r}; expected one of {sorted(SUPPORTED_SUFFIXES)}"
        )
    if not path.is_file():
        raise LandingFileError(f"{path}: no such file")
    frame = (
        _read_csv(path, columns, required)
        if path.suffix == ".csv"
        else _read_parquet(path, columns, required)
    )
    frame["source"] = source
    frame["source_file"] = str(path.relative_to(root)) if root else path.name
    frame = frame[LINEAGE_COLUMNS + columns]
    text = [c for c in frame.columns if c != "source_line"]
    return frame.astype({c: "string[pyarrow]" for c in text})


def landing_files(folder: Path) -> list[Path]:
    """Every data file under `folder`, in a stable order; other files are an error."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    unknown = [p for p in files if p.suffix not in SUPPORTED_SUFFIXES]
    if unknown:
        raise LandingFileError(
            f"{unknown[0]}: unknown format {unknown[0].suffix!r} in the landing folder"
        )
    return files


def read_source_manifest(landing: Path) -> dict:
    """The export's declared name and time window (`source.json`)."""
    path = landing / "source.json"
    if not path.is_file():
        raise LandingFileError(f"{path}: missing; it declares the source name and its time window")
    manifest = json.loads(path.read_text())
    for key in ("source", "window_start", "window_end"):
        if key not in manifest:
            raise LandingFileError(f"{path}: key {key!r} missing")
    return manifest


def read_landing(landing: Path, kind: str) -> pd.DataFrame:
    """Every file of one kind (`events` or `items`) under the landing folder, concatenated."""
    manifest = read_source_manifest(landing)
    files = landing_files(landing / kind)
    if not files:
        raise LandingFileError(f"{landing / kind}: no landing files")
    return pd.concat(
        [read_landing_file(p, kind, manifest["source"], landing) for p in files], ignore_index=True
    )
