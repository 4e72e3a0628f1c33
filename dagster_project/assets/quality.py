"""Group quality: raw -> clean tables and the quarantine; GX suites as blocking checks."""

from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from dagster_project.assets._common import OWNERS, suite_check_result, table_metadata
from dagster_project.quality.cleaning import (
    QUARANTINE_COLUMNS,
    clean_events,
    clean_items,
    row_accounting,
)
from dagster_project.resources import PlatformStorage, QualityResource
from dagster_project.sources.landing import read_source_manifest
from dagster_project.storage import write_parquet_atomic


def _cleaning_metadata(
    clean: pd.DataFrame, path: Path, raw: pd.DataFrame, quarantine: pd.DataFrame
) -> dict:
    return {
        **table_metadata(clean, path),
        "rows_read": len(raw),
        "rows_quarantined": len(quarantine),
        "quarantined_by_reason": _reason_counts(quarantine),
    }


def _reason_counts(quarantine: pd.DataFrame) -> MetadataValue:
    counts = quarantine.groupby("reason").size().sort_values(ascending=False)
    return MetadataValue.md(
        counts.rename("rows").to_frame().to_markdown() if len(counts) else "none"
    )


@asset(
    group_name="quality",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    deps=["raw_items"],
    description="The validated item catalog: typed, one row per item id, positive prices.",
)
def items_clean(context: AssetExecutionContext, storage: PlatformStorage) -> MaterializeResult:
    out = storage.layout()
    raw = pd.read_parquet(out.table("raw_items"))
    items, quarantine = clean_items(raw, context.run_id, pd.Timestamp.now(tz="UTC"))
    write_parquet_atomic(quarantine, out.table("quarantine_items"))
    path = write_parquet_atomic(items, out.table("items_clean"))
    return MaterializeResult(metadata=_cleaning_metadata(items, path, raw, quarantine))


@asset(
    group_name="quality",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    deps=["raw_events", "items_clean"],
    description="Typed behaviour events that passed every rule (ids, types, time window, prices, "
    "duplicates, known items); the rest went to the quarantine.",
)
def events_clean(context: AssetExecutionContext, storage: PlatformStorage) -> MaterializeResult:
    out = storage.layout()
    manifest = read_source_manifest(out.landing)
    window = (pd.Timestamp(manifest["window_start"]), pd.Timestamp(manifest["window_end"]))
    raw = pd.read_parquet(out.table("raw_events"))
    raw_items = pd.read_parquet(out.table("raw_items"), columns=["item_id"])
    items = pd.read_parquet(out.table("items_clean"), columns=["item_id"])
    quarantined_items = raw_items["item_id"][~raw_items["item_id"].isin(items["item_id"])]
    events, quarantine = clean_events(
        raw, items, window, context.run_id, pd.Timestamp.now(tz="UTC"), quarantined_items
    )
    write_parquet_atomic(quarantine, out.table("quarantine_events"))
    path = write_parquet_atomic(events, out.table("events_clean"))
    context.log.info(
        f"events_clean: {len(events):,} of {len(raw):,} rows clean, {len(quarantine):,} quarantined"
    )
    return MaterializeResult(metadata=_cleaning_metadata(events, path, raw, quarantine))


@asset(
    group_name="quality",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    deps=["items_clean", "events_clean"],
    description="Every rejected input row: table, source file and line, raw text, reason code, "
    "a sentence saying what was wrong, and the run id.",
)
def quarantine(storage: PlatformStorage) -> MaterializeResult:
    out = storage.layout()
    frame = pd.concat(
        [
            pd.read_parquet(out.table("quarantine_items")),
            pd.read_parquet(out.table("quarantine_events")),
        ],
        ignore_index=True,
    )[QUARANTINE_COLUMNS]
    path = write_parquet_atomic(frame, out.table("quarantine"))
    return MaterializeResult(
        metadata={**table_metadata(frame, path), "by_reason": _reason_counts(frame)}
    )


@asset_check(
    asset=quarantine,
    blocking=True,
    description="Per file: rows read = rows clean + rows quarantined.",
)
def rows_accounted_for(storage: PlatformStorage) -> AssetCheckResult:
    out = storage.layout()
    quarantined = pd.read_parquet(out.table("quarantine"), columns=["table", "source_file"])
    frames = []
    for raw_name, clean_name, table in [
        ("raw_events", "events_clean", "behaviour_events"),
        ("raw_items", "items_clean", "items"),
    ]:
        raw = pd.read_parquet(out.table(raw_name), columns=["source_file"])
        clean = pd.read_parquet(out.table(clean_name), columns=["source_file"])
        frames.append(row_accounting(raw, clean, quarantined[quarantined["table"] == table]))
    accounting = pd.concat(frames, ignore_index=True)
    unbalanced = accounting[~accounting["balanced"]]
    return AssetCheckResult(
        passed=unbalanced.empty,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "files": len(accounting),
            "unbalanced_files": len(unbalanced),
            "rows_read": int(accounting["rows_read"].sum()),
            "rows_clean": int(accounting["rows_clean"].sum()),
            "rows_quarantined": int(accounting["rows_quarantined"].sum()),
            "unbalanced": MetadataValue.md(
                unbalanced.to_markdown(index=False) if len(unbalanced) else "none"
            ),
        },
    )


@asset_check(
    asset=items_clean,
    blocking=True,
    description="GX suite expectations/items_clean.json (contract).",
)
def items_clean_suite(storage: PlatformStorage, quality: QualityResource) -> AssetCheckResult:
    runner = quality.runner(storage)
    outcome = runner.validate("items_clean", pd.read_parquet(storage.layout().table("items_clean")))
    runner.build_docs()
    return suite_check_result(outcome, runner.latest_docs_page("items_clean"))


@asset_check(
    asset=events_clean,
    blocking=True,
    description="GX suite expectations/events_clean.json (contract).",
)
def events_clean_suite(storage: PlatformStorage, quality: QualityResource) -> AssetCheckResult:
    out = storage.layout()
    manifest = read_source_manifest(out.landing)
    events = pd.read_parquet(out.table("events_clean"))
    parameters = {
        "known_item_ids": pd.read_parquet(out.table("items_clean"), columns=["item_id"])[
            "item_id"
        ].tolist(),
        "window_start": pd.Timestamp(manifest["window_start"]),
        "window_end": pd.Timestamp(manifest["window_end"]),
        "now": pd.Timestamp.now(tz="UTC"),
    }
    runner = quality.runner(storage)
    outcome = runner.validate("events_clean", events, parameters)
    runner.build_docs()
    return suite_check_result(outcome, runner.latest_docs_page("events_clean"))
