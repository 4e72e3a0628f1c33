"""Metadata and check helpers shared by the asset modules."""

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    DailyPartitionsDefinition,
    MetadataValue,
    TableColumn,
    TableSchema,
)

from dagster_project.quality.validation import SuiteOutcome
from dagster_project.settings import first_event_day

OWNERS = ["team:data-platform"]
# Event-date partitions (UTC), one per complete day: from the first event day to yesterday.
EVENT_DAYS = DailyPartitionsDefinition(start_date=first_event_day(), end_offset=0)


def table_metadata(frame: pd.DataFrame, path: Path, preview_rows: int = 5) -> dict:
    """Row count, file path, a preview and the column schema (shown in the UI's Columns tab)
    of a written table."""
    preview = frame.head(preview_rows).copy()
    for col in preview.columns:
        if preview[col].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
            preview[col] = preview[col].map(lambda v: f"[{len(v)} values]")
    return {
        "dagster/row_count": len(frame),
        "path": MetadataValue.path(str(path)),
        "preview": MetadataValue.md(
            preview.to_markdown(index=False) if len(preview) else "(empty)"
        ),
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(str(c), t) for c, t in frame.dtypes.astype(str).items()]
        ),
    }


def parquet_table_metadata(path: Path, preview_rows: int = 5) -> dict:
    """Row count, path, a preview and the schema of a Parquet table, without loading it."""
    file = pq.ParquetFile(path)
    preview = next(file.iter_batches(batch_size=preview_rows), None)
    frame = preview.to_pandas() if preview is not None else pd.DataFrame()
    return {
        **table_metadata(frame, path, preview_rows),
        "dagster/row_count": file.metadata.num_rows,
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(f.name, str(f.type)) for f in file.schema_arrow]
        ),
    }


def suite_check_result(outcome: SuiteOutcome) -> AssetCheckResult:
    """A GX suite outcome as a Dagster check result: ERROR if a contract broke, WARN if only drift."""
    errors = [o for o in outcome.failed if o.severity != "warn"]
    failed = pd.DataFrame(
        [
            {
                "expectation": o.expectation,
                "column": o.column,
                "severity": o.severity,
                "failing_rows": o.unexpected_count,
                "failing_%": round(o.unexpected_percent, 4),
                "sample": str(o.sample[:5]),
                "error": o.error,
                "protects": o.notes,
            }
            for o in outcome.failed
        ]
    )
    metadata = {
        "rows": outcome.rows,
        "expectations": len(outcome.outcomes),
        "failed_expectations": len(outcome.failed),
        "failing_rows_total": sum(o.unexpected_count for o in outcome.failed),
        "summary": MetadataValue.text(outcome.summary()),
        "failures": MetadataValue.md(failed.to_markdown(index=False) if len(failed) else "none"),
    }
    if outcome.docs_page:
        metadata["data_docs"] = MetadataValue.path(outcome.docs_page)
        metadata["data_docs_url"] = MetadataValue.url(Path(outcome.docs_page).as_uri())
    return AssetCheckResult(
        passed=outcome.success,
        severity=AssetCheckSeverity.ERROR if errors else AssetCheckSeverity.WARN,
        metadata=metadata,
    )
