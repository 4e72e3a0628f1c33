"""Group ingest: landing files -> raw tables (every record kept, with its file and line)."""

from dagster import AssetExecutionContext, MaterializeResult, asset

from dagster_project.assets._common import OWNERS, table_metadata
from dagster_project.resources import PlatformStorage
from dagster_project.sources.landing import ingest_landing, raw_relation
from dagster_project.storage import connect


def _ingest(
    kind: str, table: str, storage: PlatformStorage, context: AssetExecutionContext
) -> MaterializeResult:
    out = storage.layout()
    path = out.raw_table(table)
    rows = ingest_landing(out.landing, kind, path)
    with connect() as con:
        files, unparseable, rejected = con.execute(
            "SELECT count(DISTINCT source_file), count(parse_error), count(source_reason) "
            f"FROM {raw_relation(path)}"
        ).fetchall()[0]
        preview = con.sql(f"SELECT * EXCLUDE (_row) FROM {raw_relation(path)} LIMIT 5").df()
    context.log.info(
        f"{table}: {rows:,} records from {files} file(s), {unparseable:,} could not be split "
        f"into fields, {rejected:,} rejected by the format adapter"
    )
    return MaterializeResult(
        metadata={
            **table_metadata(preview, path),
            "dagster/row_count": rows,
            "files": files,
            "unparseable_records": unparseable,
            "rejected_by_adapter": rejected,
        }
    )


@asset(
    group_name="ingest",
    owners=OWNERS,
    kinds={"parquet", "duckdb"},
    description="Every record of the catalog export, as text, with source file and line.",
)
def raw_items(context: AssetExecutionContext, storage: PlatformStorage) -> MaterializeResult:
    return _ingest("items", "raw_items", storage, context)


@asset(
    group_name="ingest",
    owners=OWNERS,
    kinds={"parquet", "duckdb"},
    description="Every record of the behaviour exports (events by day), as text, with source file and line.",
)
def raw_events(context: AssetExecutionContext, storage: PlatformStorage) -> MaterializeResult:
    return _ingest("events", "raw_events", storage, context)
