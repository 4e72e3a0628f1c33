"""Group ingest: landing files -> raw tables (every record kept, with its file and line)."""

import shutil
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, BackfillPolicy, MetadataValue, Output, asset

from dagster_project.assets._common import EVENT_DAYS, OWNERS
from dagster_project.io_managers import table_metadata
from dagster_project.resources import PlatformStorage
from dagster_project.settings import first_event_day
from dagster_project.sources.raw_table import (
    RAW_MANIFEST,
    LandingDay,
    RawSummary,
    files_still_to_come,
    ingest_landing,
    ingest_landing_day,
    raw_relation,
    raw_summary,
)
from dagster_project.sql import connect, query_pandas


def _landed(
    table: str, path: Path, summary: RawSummary, context: AssetExecutionContext, **extra: object
) -> Output[Path]:
    """The raw table's output: its folder (read downstream through `raw_relation`), with
    what landed in it."""
    with connect() as con:
        preview = query_pandas(con, f"SELECT * EXCLUDE (_row) FROM {raw_relation(path)} LIMIT 5")
    context.log.info(
        f"{table}: {summary.rows:,} records from {summary.files} file(s), "
        f"{summary.unparseable:,} could not be split into fields, "
        f"{summary.rejected_by_adapter:,} rejected by the format adapter, "
        f"{len(summary.bad_files)} bad file(s) quarantined whole"
    )
    for name, reason in summary.bad_files.items():
        context.log.warning(f"{table}: bad file {name} quarantined whole: {reason}")
    return Output(
        path,
        metadata={
            **table_metadata(preview, path),
            "dagster/row_count": summary.rows,
            "files": summary.files,
            "unparseable_records": summary.unparseable,
            "rejected_by_adapter": summary.rejected_by_adapter,
            "bad_files": len(summary.bad_files),
            **extra,
        },
    )


@asset(
    group_name="ingest",
    owners=OWNERS,
    kinds={"parquet", "duckdb"},
    description="Every record of the catalog export, as text, with source file and line.",
)
def raw_items(context: AssetExecutionContext, storage: PlatformStorage) -> Output[Path]:
    path = storage.layout().asset_table("raw_items")
    return _landed(
        "raw_items", path, ingest_landing(storage.layout().landing, "items", path), context
    )


@asset(
    group_name="ingest",
    owners=OWNERS,
    kinds={"parquet", "duckdb"},
    partitions_def=EVENT_DAYS,
    backfill_policy=BackfillPolicy.single_run(),
    description="Every record of the behaviour exports, as text, with source file and line, "
    "one folder per event day: a file under date=YYYY-MM-DD/ belongs to its day, a file that "
    "names none gives each record to its event time's day (sources.raw_table.LandingDay).",
)
def raw_events(context: AssetExecutionContext, storage: PlatformStorage) -> Output[Path]:
    out = storage.layout()
    path = out.asset_table("raw_events")
    if (path / RAW_MANIFEST).exists():  # kept whole by an earlier version: rebuilt by day
        shutil.rmtree(path)
    per_day = []
    for day in context.partition_keys:
        summary = ingest_landing_day(
            out.landing, "events", LandingDay(day, first_event_day()), path
        )
        per_day.append({"day": day, "records": summary.rows, "files": summary.files})
        context.log.info(f"raw_events {day}: {summary.rows:,} records from {summary.files} file(s)")
    waiting = files_still_to_come(out.landing, "events", EVENT_DAYS.get_last_partition_key())
    if waiting:
        context.log.warning(
            f"raw_events: {len(waiting)} landing file(s) name a day still to come and wait for "
            f"it, e.g. {waiting[0]}"
        )
    table = pd.DataFrame(per_day).tail(31).to_markdown(index=False)
    records = sum(d["records"] for d in per_day)
    extra = {
        "per_day": MetadataValue.md(table),
        "dagster/row_count": records,
        "files_waiting_for_their_day": len(waiting),
    }
    return _landed("raw_events", path, raw_summary(path), context, **extra)
