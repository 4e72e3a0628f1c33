"""Any CSV/Parquet export whose columns a mapping names (see docs/format_adapters.md)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from dagster_project.contracts import EVENT_COLUMNS, ITEM_COLUMNS
from dagster_project.sources.formats.common import (
    _LINEAGE,
    SourceExport,
    _check_options,
    _day_window,
    _epoch_text,
    _first_seen,
    _local_time_text,
    _most_frequent,
    _trimmed,
    content_ids,
    export,
)
from dagster_project.sources.records import (
    LandingFileError,
    _require_file,
    read_parquet_records,
    read_records,
)


def read_generic(folder: Path, mapping: dict) -> SourceExport:
    """Any CSV/Parquet export whose columns a mapping names (see docs/format_adapters.md)."""
    _check_options("generic", mapping, {"source", "events", "items", "window"})
    if "events" not in mapping:
        raise LandingFileError("generic mapping: an 'events' section is required")
    source = mapping.get("source", folder.name)
    spec = mapping["events"]
    records, columns = _generic_records(
        folder,
        spec,
        "events",
        [*EVENT_COLUMNS, "category", "title"],
        ["user_id", "item_id", "event_type", "event_time"],
    )
    events = _generic_events(records, columns, spec)
    items = _generic_items(folder, mapping, events, columns)
    ok = events.filter(pl.col("parse_error").is_null())
    findings = {
        "events": ok.height,
        "users": ok["user_id"].drop_nulls().n_unique(),
        "items": items.filter(pl.col("parse_error").is_null()).height,
    }
    return export(
        source,
        mapping,
        events=events,
        items=items,
        findings=findings,
        default_window=_day_window(events["event_time"]),
    )


def _generic_events(records: pl.DataFrame, columns: dict[str, str], spec: dict) -> pl.DataFrame:
    """The mapped columns as contract columns, times and event types as the mapping says, and
    content ids where the file has no event id."""
    values = {dst: _trimmed(src) for dst, src in columns.items()}
    events = records.with_columns(**values)
    events = events.with_columns(
        _generic_time("event_time", spec.get("timestamp", {})),
        pl.col("event_type").replace(spec.get("event_types", {})),
    )
    if "event_id" not in columns:
        skip = set(spec.get("ignore_in_id", []))
        fields = [c for c in records.columns if c not in _LINEAGE and c not in skip]
        key = pl.when(pl.col("parse_error").is_null()).then(
            pl.concat_str([pl.col(c).fill_null("") for c in fields], separator="\x1f")
            if skip
            else pl.col("raw")
        )
        events = events.with_columns(content_ids(events.select(key).to_series()))
    return events


def _generic_items(
    folder: Path, mapping: dict, events: pl.DataFrame, columns: dict[str, str]
) -> pl.DataFrame:
    """The mapping's items file, or, without one, every item the events name."""
    if "items" in mapping:
        item_records, item_columns = _generic_records(
            folder, mapping["items"], "items", ITEM_COLUMNS, ["item_id"]
        )
        return item_records.with_columns(
            **{dst: _trimmed(src) for dst, src in item_columns.items()}
        )
    seq = events.with_row_index("seq")
    items = _first_seen(seq, "item_id").with_columns(parse_error=pl.lit(None, pl.String))
    for attr in ("category", "title"):
        if attr in columns:
            items = items.join(_most_frequent(seq, "item_id", attr), on="item_id", how="left")
    return items


def _generic_records(
    folder: Path, spec: dict, kind: str, allowed: list[str], required: list[str]
) -> tuple[pl.DataFrame, dict[str, str]]:
    """Read the file a mapping section names; resolve its column mapping against the file.

    A file column already named as a contract column is used when the mapping names none.
    """
    if "path" not in spec:
        raise LandingFileError(f"generic mapping: section {kind!r} needs a 'path'")
    mapped: dict[str, str] = dict(spec.get("columns", {}))
    unknown = sorted(set(mapped) - set(allowed))
    if unknown:
        raise LandingFileError(
            f"generic mapping: {kind}.columns maps unknown contract column(s) {unknown}; "
            f"expected some of {allowed}"
        )
    name = spec["path"]
    path = folder / name
    _require_file(path)
    if path.suffix == ".parquet":
        records = read_parquet_records(folder, name)
    else:
        records = read_records(folder, name, sep=spec.get("separator", ","))
    present = [c for c in records.columns if c not in _LINEAGE]
    missing = [f"{src!r} (for {dst})" for dst, src in mapped.items() if src not in present]
    if missing:
        raise LandingFileError(
            f"{path}: mapped column {', '.join(missing)} missing; the file has {present}"
        )
    columns = {c: c for c in allowed if c in present} | mapped
    unmapped = [c for c in required if c not in columns]
    if unmapped:
        raise LandingFileError(
            f"{path}: no column for {', '.join(unmapped)}; map one in {kind}.columns "
            f"(the file has {present})"
        )
    return records, columns


def _generic_time(col: str, spec: dict) -> pl.Expr:
    unit, fmt = spec.get("unit"), spec.get("format")
    zone = spec.get("timezone", "UTC")
    if unit is not None:
        if unit not in ("s", "ms", "us", "ns"):
            raise LandingFileError(
                f"generic mapping: timestamp unit {unit!r} is not one of s, ms, us, ns"
            )
        return _epoch_text(col, unit, zone)
    if fmt is not None:
        return _local_time_text(col, fmt, zone)
    return pl.col(col)
