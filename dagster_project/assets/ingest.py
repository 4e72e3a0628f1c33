"""Group ingest: landing files -> raw tables (every record kept, with its file and line)."""

from pathlib import Path

from dagster import AssetExecutionContext, Output, asset

from dagster_project.assets._common import OWNERS
from dagster_project.io_managers import table_metadata
from dagster_project.resources import PlatformStorage
from dagster_project.sources.raw_table import ingest_landing, raw_relation
from dagster_project.sql import connect, query_pandas


def _ingest(
    kind: str, table: str, storage: PlatformStorage, context: AssetExecutionContext
) -> Output[Path]:
    """Land the export's `kind` files in the raw table's folder (streamed: the folder is the
    output, read downstream through `raw_relation`)."""
    out = storage.layout()
    path = out.asset_table(table)
    summary = ingest_landing(out.landing, kind, path)
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
        },
    )


@asset(
    group_name="ingest",
    owners=OWNERS,
    kinds={"parquet", "duckdb"},
    description="Every record of the catalog export, as text, with source file and line.",
)
def raw_items(context: AssetExecutionContext, storage: PlatformStorage) -> Output[Path]:
    return _ingest("items", "raw_items", storage, context)


@asset(
    group_name="ingest",
    owners=OWNERS,
    kinds={"parquet", "duckdb"},
    description="Every record of the behaviour exports (events by day), as text, with source file and line.",
)
def raw_events(context: AssetExecutionContext, storage: PlatformStorage) -> Output[Path]:
    return _ingest("events", "raw_events", storage, context)
