"""Row accounting of the ingest-clean-quarantine path: every raw row is clean or quarantined."""

from __future__ import annotations

import pandas as pd
import polars as pl

from dagster_project.quality.cleaning import row_accounting
from dagster_project.settings import DataLayout
from dagster_project.sources.raw_table import raw_relation, raw_tables, stored_raw_rows
from dagster_project.sql import parquet_relation, sql_text
from dagster_project.storage import parquet_rows

# The quarantine's source_file of events the real-time intake rejected: intake/<batch id>.
INTAKE_SOURCE_PREFIX = "intake/"


def accounting_by_day(out: DataLayout) -> pd.DataFrame:
    """Per event day of the behaviour events: rows read (the raw table's day), clean and
    quarantined (the day's files of events_clean and quarantine_events), and whether they add
    up. A day whose cleaning never ran counts nothing clean or quarantined."""
    rows = []
    for raw_day in raw_tables(out.raw_table("raw_events")):
        day = raw_day.name
        clean, held = (out.day_file(t, day) for t in ("events_clean", "quarantine_events"))
        rows.append(
            {
                "day": day,
                "rows_read": stored_raw_rows(raw_day),
                "rows_clean": parquet_rows(clean),
                "rows_quarantined": parquet_rows(held),
            }
        )
    frame = pd.DataFrame(rows, columns=["day", "rows_read", "rows_clean", "rows_quarantined"])
    frame["balanced"] = frame["rows_read"] == frame["rows_clean"] + frame["rows_quarantined"]
    return frame


def accounting_by_table(out: DataLayout) -> pd.DataFrame:
    """Per table and source file: rows read, clean, quarantined, and whether they add up.

    Events the real-time intake rejected never reached the landing area: the intake read
    them, so their batch (`INTAKE_SOURCE_PREFIX`) counts them as read there; the events it
    accepted are read, cleaned and counted with the landing file they were appended to."""
    frames = []
    quarantine = parquet_relation(out.table("quarantine"))
    for raw_name, clean_name, table in [
        ("raw_events", "events_clean", "behaviour_events"),
        ("raw_items", "items_clean", "items"),
    ]:
        held = f'(SELECT * FROM {quarantine} WHERE "table" = {sql_text(table)})'
        accounting = row_accounting(
            raw_relation(out.raw_table(raw_name)), parquet_relation(out.table(clean_name)), held
        )
        frames.append(accounting.select(pl.lit(table).alias("table"), pl.all()))
    intake = pl.col("source_file").str.starts_with(INTAKE_SOURCE_PREFIX)
    read = pl.when(intake).then(pl.col("rows_read") + pl.col("rows_quarantined"))
    return (
        pl.concat(frames)
        .with_columns(read.otherwise(pl.col("rows_read")).alias("rows_read"))
        .with_columns(
            (pl.col("rows_read") == pl.col("rows_clean") + pl.col("rows_quarantined")).alias(
                "balanced"
            )
        )
        .to_pandas()
    )
