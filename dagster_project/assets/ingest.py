"""Group ingest: landing files -> raw tables (every record kept, with its file and line)."""

from dagster import AssetExecutionContext, MaterializeResult, asset

from dagster_project.assets._common import OWNERS, table_metadata
from dagster_project.resources import PlatformStorage
from dagster_project.sources.landing import read_landing
from dagster_project.storage import write_parquet_atomic


def _ingest(
    kind: str, table: str, storage: PlatformStorage, context: AssetExecutionContext
) -> MaterializeResult:
    out = storage.layout()
    raw = read_landing(out.landing, kind)
    path = write_parquet_atomic(raw, out.table(table))
    unparseable = int(raw["parse_error"].notna().sum())
    context.log.info(
        f"{table}: {len(raw):,} records from {raw['source_file'].nunique()} file(s), "
        f"{unparseable:,} could not be split into fields"
    )
    return MaterializeResult(
        metadata={
            **table_metadata(raw, path),
            "files": raw["source_file"].nunique(),
            "unparseable_records": unparseable,
        }
    )


@asset(
    group_name="ingest",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    description="Every record of the catalog export, as text, with source file and line.",
)
def raw_items(context: AssetExecutionContext, storage: PlatformStorage) -> MaterializeResult:
    return _ingest("items", "raw_items", storage, context)


@asset(
    group_name="ingest",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    description="Every record of the behaviour exports (events by day), as text, with source file and line.",
)
def raw_events(context: AssetExecutionContext, storage: PlatformStorage) -> MaterializeResult:
    return _ingest("events", "raw_events", storage, context)
