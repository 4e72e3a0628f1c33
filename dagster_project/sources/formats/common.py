"""What every export format shares: the `SourceExport` it returns, canonical values (content
ids, trimmed text, ISO times from epoch or local wall-clock text), windows, per-item summaries
of the records, and `export`, the closing step that maps both frames onto the raw contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path

import pandas as pd
import polars as pl

from dagster_project.contracts import (
    EVENT_COLUMNS,
    ITEM_COLUMNS,
    QUARANTINE_REASONS,
    RAW_LINEAGE_COLUMNS,
)
from dagster_project.sources.records import ISO_WITH_OFFSET, LandingFileError

# Columns of the raw record frames before they are mapped onto the contract.
_LINEAGE = ["source_file", "source_line", "raw", "parse_error"]


@dataclass
class SourceExport:
    """One export mapped onto the raw contract, with its declared window and measured facts."""

    source: str
    window_start: pd.Timestamp
    window_end: pd.Timestamp
    events: pl.DataFrame
    items: pl.DataFrame
    findings: dict[str, int] = field(default_factory=dict)


def content_ids(keys: pl.Series) -> pl.Series:
    """Stable event ids from record content: equal content, equal id; null content, null id."""
    return pl.Series(
        "event_id",
        [
            None if key is None else "h" + blake2b(key.encode(), digest_size=8).hexdigest()
            for key in keys.to_list()
        ],
        dtype=pl.String,
    )


def _trimmed(col: str) -> pl.Expr:
    value = pl.col(col).str.strip_chars()
    return pl.when(value != "").then(value)


# Largest magnitude per unit that is still a calendar date (year 9999), so that absurd
# numbers are reported as bad timestamps instead of wrapping around.
_EPOCH_LIMIT = {"s": 253_402_300_799, "ms": 253_402_300_799_999, "us": 253_402_300_799_999_999}


def _epoch_text(col: str, unit: str, time_zone: str = "UTC") -> pl.Expr:
    """Unix time text -> ISO 8601 with the offset of `time_zone`; text that is no date stays."""
    number = pl.col(col).str.strip_chars().cast(pl.Int64, strict=False)
    if unit in _EPOCH_LIMIT:
        number = pl.when(number.abs() <= _EPOCH_LIMIT[unit]).then(number)
    iso = (
        pl.from_epoch(number, time_unit=unit)
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone(time_zone)
        .dt.strftime(ISO_WITH_OFFSET)
    )
    return pl.coalesce(iso, pl.col(col))


def _local_time_text(col: str, fmt: str, time_zone: str) -> pl.Expr:
    """Local wall-clock text in `fmt` -> ISO 8601 with the zone's offset at that time.

    Text that does not parse (or falls in a daylight-saving gap) stays as it was, so the
    cleaning reports it as `bad_timestamp` with the original value.
    """
    local = pl.col(col).str.strip_chars().str.to_datetime(fmt, strict=False)
    iso = local.dt.replace_time_zone(
        time_zone, ambiguous="earliest", non_existent="null"
    ).dt.strftime(ISO_WITH_OFFSET)
    return pl.coalesce(iso, pl.col(col))


def _best_format(values: pl.Series, formats: list[str]) -> str:
    """The format that parses most of `values` (the first on ties)."""
    text = values.drop_nulls().str.strip_chars()
    counts = [text.str.to_datetime(f, strict=False).is_not_null().sum() for f in formats]
    return formats[counts.index(max(counts))]


def _utc(value: str | pd.Timestamp, time_zone: str = "UTC") -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(time_zone)
    return stamp.tz_convert("UTC")


def _window(
    mapping: dict, default: tuple[pd.Timestamp, pd.Timestamp] | None, source: str
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The declared window: the mapping's `window` {start, end[, timezone]} or the default."""
    declared = mapping.get("window")
    if declared is None:
        if default is None:
            raise LandingFileError(f"{source}: no declared window and no events to derive one from")
        return default
    if "start" not in declared or "end" not in declared:
        raise LandingFileError(
            f"{source}: mapping window needs 'start' and 'end', got {sorted(declared)}"
        )
    zone = declared.get("timezone", "UTC")
    start, end = _utc(declared["start"], zone), _utc(declared["end"], zone)
    if end <= start:
        raise LandingFileError(f"{source}: mapping window end {end} is not after its start {start}")
    return start, end


def _day_window(iso_times: pl.Series) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """[first day 00:00 UTC, day after the last day) of the parseable times, or None."""
    text = iso_times.str.strip_chars()
    times = pl.select(
        pl.coalesce(
            text.str.to_datetime(fmt, time_zone="UTC", time_unit="us", strict=False)
            for fmt in ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%dT%H:%M:%S%.f")
        )
    ).to_series()
    times = times.drop_nulls()
    if times.is_empty():
        return None
    start = pd.Timestamp(times.min()).floor("D")
    return start, pd.Timestamp(times.max()).floor("D") + pd.Timedelta(days=1)


def _most_frequent(records: pl.DataFrame, key: str, value: str) -> pl.DataFrame:
    """Per key: the most frequent non-null value (ties: first seen) and how many distinct ones.

    `records` must be in reading order (its `seq` column).
    """
    counted = (
        records.filter(pl.col(key).is_not_null() & pl.col(value).is_not_null())
        .group_by(key, value)
        .agg(pl.len().alias("n"), pl.col("seq").min().alias("first"))
        .sort([key, "n", "first"], descending=[False, True, False])
    )
    return counted.group_by(key, maintain_order=True).agg(
        pl.col(value).first(), pl.col(value).n_unique().alias("distinct_values")
    )


def _first_seen(records: pl.DataFrame, key: str) -> pl.DataFrame:
    """Per key, the lineage of the record where it first appears."""
    return (
        records.filter(pl.col(key).is_not_null())
        .sort("seq")
        .group_by(key, maintain_order=True)
        .agg(pl.col("source_file", "source_line", "raw").first())
    )


def _contract(frame: pl.DataFrame, source: str, columns: list[str]) -> pl.DataFrame:
    """Lineage + contract columns in contract order and types; values of unparseable rows null."""
    parsed = pl.col("parse_error").is_null()
    out = []
    for col in RAW_LINEAGE_COLUMNS + columns:
        if col == "source":
            out.append(pl.lit(source, pl.String).alias(col))
        elif col == "source_line":
            out.append(pl.col(col).cast(pl.Int64))
        elif col not in frame.columns:
            out.append(pl.lit(None, pl.String).alias(col))
        elif col in ("source_file", "raw", "parse_error"):
            out.append(pl.col(col).cast(pl.String))
        else:
            out.append(pl.when(parsed).then(pl.col(col).cast(pl.String)).alias(col))
    return frame.select(out)


def _with_seq(records: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(records, how="diagonal").with_row_index("seq")


def _require_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise LandingFileError(f"{folder}: no such export folder")


def _csv_files(folder: Path, mapping: dict, pattern: str = "*.csv") -> list[str]:
    _require_folder(folder)
    names = mapping.get("files") or sorted(p.name for p in folder.glob(pattern) if p.is_file())
    if not names:
        raise LandingFileError(f"{folder}: no {pattern} file in the export folder")
    return list(names)


def _check_options(source: str, mapping: dict, allowed: set[str]) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise LandingFileError(
            f"{source}: unknown mapping key(s) {unknown}; this format accepts {sorted(allowed)}"
        )


def _reason(code: str) -> str:
    assert code in QUARANTINE_REASONS, code
    return code


def _raw_ids(records: pl.DataFrame) -> pl.Series:
    """`content_ids` of each record's raw text; null for records that could not be split."""
    return content_ids(records["raw"].set(records["parse_error"].is_not_null(), None))


def export(
    source: str,
    mapping: dict,
    *,
    events: pl.DataFrame,
    items: pl.DataFrame,
    findings: dict[str, int],
    default_window: tuple[pd.Timestamp, pd.Timestamp] | None,
) -> SourceExport:
    """The closing step of every format: the window (the mapping's `window`, else
    `default_window`, the format's own), both frames in the contract's columns, findings."""
    start, end = _window(mapping, default_window, source)
    return SourceExport(
        source=source,
        window_start=start,
        window_end=end,
        events=_contract(events, source, EVENT_COLUMNS),
        items=_contract(items, source, ITEM_COLUMNS),
        findings=findings,
    )
