"""Group reports: what analysts read every day, the data-quality report, GX Data Docs and the
DuckDB warehouse of views over every table."""

import json
from pathlib import Path

import duckdb
from dagster import AssetExecutionContext, AssetIn, MaterializeResult, MetadataValue, asset

from dagster_project.assets._common import OWNERS
from dagster_project.quality.accounting import accounting_by_table
from dagster_project.quality.drift import drift_figures
from dagster_project.quality.report import collect_report_data, render_report
from dagster_project.resources import PlatformStorage, QualityResource
from dagster_project.sources.raw_table import table_relation
from dagster_project.storage import write_text_atomic

WAREHOUSE_TABLES = [
    "raw_events",
    "raw_items",
    "events_clean",
    "items_clean",
    "quarantine",
    "user_traffic_scores",
    "session_traffic_scores",
    "bot_groups",
    "item_outliers",
    "behaviour_events",
    "behaviour_exclusions",
    "items",
    "training_set",
    "recommendations",
    "user_features",
    "item_features",
]
# The tables the quality report reads.
REPORTED_TABLES = [
    "raw_events",
    "raw_items",
    "events_clean",
    "items_clean",
    "quarantine",
    "user_traffic_scores",
    "bot_groups",
    "behaviour_exclusions",
    "item_outliers",
]


@asset(
    group_name="reports",
    owners=OWNERS,
    kinds={"duckdb"},
    ins={t: AssetIn(dagster_type=Path) for t in WAREHOUSE_TABLES},
    description="A DuckDB file of views over the Parquet tables, for SQL by analysts (rebuilt; never the source of truth).",
)
def warehouse(storage: PlatformStorage, **tables: Path) -> MaterializeResult:
    out = storage.layout()
    tmp = out.duckdb_file.with_name(".warehouse.duckdb.tmp")
    tmp.unlink(missing_ok=True)
    with duckdb.connect(str(tmp)) as con:
        for name, path in tables.items():
            if path.exists():
                source = table_relation(path)
                con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {source}")
    tmp.replace(out.duckdb_file)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out.duckdb_file)),
            "views": ", ".join(sorted(t for t, path in tables.items() if path.exists())),
        }
    )


@asset(
    group_name="reports",
    owners=OWNERS,
    kinds={"great_expectations", "html"},
    deps=["events_clean", "items_clean", "user_features", "item_features", "training_set"],
    description="Great Expectations Data Docs: every suite and its latest validation results, as HTML (the analysts' quality report).",
)
def data_docs(storage: PlatformStorage, quality: QualityResource) -> MaterializeResult:
    index = quality.runner(storage).build_docs()
    return MaterializeResult(
        metadata={"index": MetadataValue.path(str(index)), "url": MetadataValue.url(index.as_uri())}
    )


@asset(
    group_name="reports",
    owners=OWNERS,
    kinds={"html", "duckdb"},
    ins={t: AssetIn(dagster_type=Path) for t in REPORTED_TABLES},
    deps=["data_docs"],
    description="The analysts' data-quality report for this run, one self-contained HTML page: "
    "rows in / clean / quarantined by reason and source, null rates, failing checks and since "
    "when, drift against the previous day, bot share, with plots.",
)
def quality_report(
    context: AssetExecutionContext,
    storage: PlatformStorage,
    quality: QualityResource,
    **tables: Path,
) -> MaterializeResult:
    out = storage.layout()
    stats = {
        table: json.loads((out.reports / "quality" / f"cleaning_{table}.json").read_text())
        for table in ("behaviour_events", "items")
    }
    days, verdicts = drift_figures(out)
    runner = quality.runner(storage)
    data = collect_report_data(
        tables,
        accounting_by_table(out),
        {t: s["rule_hits"] for t, s in stats.items()},
        runner.validations_dir,
        days,
        verdicts,
        context.run.run_id,
        traffic_labels=out.ground_truth / "traffic_labels.parquet",
    )
    page = render_report(data, runner.docs_index)
    latest = write_text_atomic(page, out.reports / "quality_report.html")
    write_text_atomic(page, out.reports / "quality" / f"report_{context.run.run_id}.html")
    failing = data.checks[data.checks["status"] == "FAILED"] if len(data.checks) else data.checks
    return MaterializeResult(
        metadata={
            "report": MetadataValue.path(str(latest)),
            "report_url": MetadataValue.url(latest.as_uri()),
            "failing_expectations": len(failing),
            "drift_warnings": int(verdicts["warn"].sum()),
            "quarantined_by_reason": MetadataValue.md(
                data.by_reason.to_markdown(index=False) if len(data.by_reason) else "none"
            ),
        }
    )
