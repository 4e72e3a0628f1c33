"""Metadata and check helpers shared by the asset modules."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetIn,
    DailyPartitionsDefinition,
    MetadataValue,
)

from dagster_project.recommender.inputs import CATALOG_COLUMNS, TEXT_COLUMNS
from dagster_project.settings import first_event_day

if TYPE_CHECKING:  # Great Expectations loads in seconds: imported where a suite runs
    from dagster_project.quality.validation import SuiteOutcome

OWNERS = ["team:data-platform"]
# The IO manager of the trained model (`io_managers.SavedModels`); tables use the default one.
MODEL_IO = "model_io"
# What the model reads of the catalog and of the text vectors (`recommender.inputs.model_items`).
MODEL_ITEM_INPUTS = {
    "items": AssetIn(metadata={"columns": CATALOG_COLUMNS}),
    "item_text_embedding": AssetIn(metadata={"columns": TEXT_COLUMNS}),
}
# Event-date partitions (UTC), one per complete day: from the first event day to yesterday.
EVENT_DAYS = DailyPartitionsDefinition(start_date=first_event_day(), end_offset=0)


def suite_check_result(outcome: SuiteOutcome, **more: object) -> AssetCheckResult:
    """A GX suite outcome as a Dagster check result: ERROR if a contract broke, WARN if only
    drift; `more` is added to its metadata."""
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
    metadata.update(more)
    return AssetCheckResult(
        passed=outcome.success,
        severity=AssetCheckSeverity.ERROR if errors else AssetCheckSeverity.WARN,
        metadata=metadata,
    )
