"""Metadata and check helpers shared by the asset modules."""

from pathlib import Path

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from dagster_project.quality.validation import SuiteOutcome

OWNERS = ["team:data-platform"]


def table_metadata(frame: pd.DataFrame, path: Path, preview_rows: int = 5) -> dict:
    """Row count, file path, a preview and the column schema of a written table."""
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
        "columns": MetadataValue.md(
            ", ".join(f"`{c}` {t}" for c, t in frame.dtypes.astype(str).items())
        ),
    }


def suite_check_result(outcome: SuiteOutcome, docs_page: Path | None) -> AssetCheckResult:
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
    if docs_page is not None:
        metadata["data_docs"] = MetadataValue.path(str(docs_page))
    return AssetCheckResult(
        passed=outcome.success,
        severity=AssetCheckSeverity.ERROR if errors else AssetCheckSeverity.WARN,
        metadata=metadata,
    )
