"""Group quality: raw -> clean tables and the quarantine; GX suites as blocking checks."""

import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import polars as pl
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    BackfillPolicy,
    Failure,
    MetadataValue,
    Output,
    TimeWindowPartitionMapping,
    asset,
    asset_check,
    multi_asset,
)

from dagster_project.assets._common import EVENT_DAYS, OWNERS, suite_check_result
from dagster_project.plots import figure_markdown
from dagster_project.pseudonyms import PseudonymKeyError, check_pseudonym_key
from dagster_project.quality.accounting import accounting_by_day, accounting_by_table
from dagster_project.quality.cleaning import (
    EVENT_ID_HASHES,
    LOOK_BACK_DAYS,
    QUARANTINE_COLUMNS,
    Cleaned,
    clean_events,
    clean_items,
    ids_on_later_days,
    index_is_current,
    write_event_id_hashes,
)
from dagster_project.quality.drift import REFERENCE_DAYS, drift_figures
from dagster_project.resources import PlatformStorage, QualityResource
from dagster_project.serving.landing import read_intake_quarantine
from dagster_project.settings import DataLayout, first_event_day
from dagster_project.sources.manifest import source_window
from dagster_project.sources.raw_table import raw_rows, read_raw
from dagster_project.sources.synthetic.generator import generated_landing
from dagster_project.storage import (
    parquet_rows,
    publish_to_shared,
    shared_storage,
    write_text_atomic,
)


def _reason_counts(quarantine: pl.DataFrame) -> MetadataValue:
    counts = quarantine.group_by("reason").len("rows").sort("rows", descending=True)
    return MetadataValue.md(
        counts.to_pandas().to_markdown(index=False) if counts.height else "none"
    )


def _reason_plot(quarantine: pl.DataFrame) -> MetadataValue:
    """Quarantined rows per reason and table, as a bar chart."""
    counts = quarantine.group_by("table", "reason").len("rows").to_pandas()
    if counts.empty:
        return MetadataValue.md("nothing quarantined")
    wide = counts.pivot_table(index="reason", columns="table", values="rows", fill_value=0)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(wide) + 1.2))
    wide.loc[wide.sum(axis=1).sort_values().index].plot.barh(stacked=True, ax=ax)
    ax.set_xlabel("rows quarantined")
    ax.set_ylabel("")
    return MetadataValue.md(figure_markdown(fig, "quarantined rows by reason"))


def _rule_hits(hits: dict[str, int]) -> MetadataValue:
    rows = [{"rule": k, "rows_breaking_it": v} for k, v in hits.items() if v]
    return MetadataValue.md(pd.DataFrame(rows).to_markdown(index=False) if rows else "none")


def _cleaning_figures(table: str, run_id: str, cleaned: Cleaned, raw: Path) -> dict:
    """What one cleaning run read, kept and quarantined, and its rule hits."""
    return {
        "table": table,
        "run_id": run_id,
        "rows_read": raw_rows(raw),
        "rows_clean": cleaned.clean_rows,
        "rows_quarantined": cleaned.quarantine.height,
        "rule_hits": cleaned.rule_hits,
    }


def _save_figures(out: DataLayout, figures: dict, path: Path) -> None:
    write_text_atomic(json.dumps(figures, indent=2), path)
    publish_to_shared(out.root, path)  # the quality report reads them, on any machine


def _summed_figures(days: list[dict]) -> dict:
    """The cleaning figures of several days as one: counts and rule hits summed."""
    total = {"table": days[-1]["table"], "run_id": days[-1]["run_id"], "days": len(days)}
    for key in ("rows_read", "rows_clean", "rows_quarantined"):
        total[key] = sum(day[key] for day in days)
    total["rule_hits"] = {
        rule: sum(day["rule_hits"].get(rule, 0) for day in days)
        for rule in dict.fromkeys(rule for day in days for rule in day["rule_hits"])
    }
    return total


def _save_events_figures(out: DataLayout, figures: dict[str, dict]) -> None:
    """Save the cleaning figures of each event day cleaned (`figures`, by day), and the
    table's (`cleaning_behaviour_events.json`, which the report reads): the sum over every
    day cleaned so far."""
    folder = out.reports / "quality" / "cleaning_behaviour_events"
    for day, one in figures.items():
        _save_figures(out, one, folder / f"{day}.json")
    every_day = [
        json.loads(path.read_text())
        for path in sorted(folder.glob("*.json"))
        if path.stem >= first_event_day()  # a day of the partitions, not one left before them
    ]
    _save_figures(out, _summed_figures(every_day), folder.with_suffix(".json"))


def _cleaning_metadata(figures: dict, quarantine: pl.DataFrame) -> dict:
    return {
        "rows_read": figures["rows_read"],
        "rows_quarantined": quarantine.height,
        "quarantined_by_reason": _reason_counts(quarantine),
        "rule_hits": _rule_hits(figures["rule_hits"]),
    }


def _now() -> datetime:
    return datetime.now(UTC)


def _quarantine_part(table: str) -> AssetOut:
    return AssetOut(
        owners=OWNERS,
        kinds={"parquet", "polars"},
        description=f"The {table} rows the cleaning rejected, each with its reason (the "
        "quarantine asset gathers every part).",
    )


@multi_asset(
    group_name="quality",
    outs={
        "items_clean": AssetOut(
            owners=OWNERS,
            kinds={"parquet", "duckdb"},
            description="The validated item catalog: typed, one row per item id, positive prices.",
        ),
        "quarantine_items": _quarantine_part("catalog"),
    },
)
def items_clean(
    context: AssetExecutionContext, raw_items: Path, storage: PlatformStorage
) -> Iterator[Output]:
    out = storage.layout()
    cleaned = clean_items(raw_items, context.run.run_id, _now())
    figures = _cleaning_figures("items", context.run.run_id, cleaned, raw_items)
    _save_figures(out, figures, out.reports / "quality" / "cleaning_items.json")
    yield Output(
        cleaned.clean, "items_clean", metadata=_cleaning_metadata(figures, cleaned.quarantine)
    )
    yield Output(cleaned.quarantine, "quarantine_items")


def _check_pseudonym_key(context: AssetExecutionContext, out: DataLayout) -> None:
    """Real users' ids need a secret pseudonym key: fail the step without one, warn on a weak one."""
    try:
        warning = check_pseudonym_key(generated_landing(out))
    except PseudonymKeyError as error:
        raise Failure(str(error)) from None
    if warning:
        context.log.warning(warning)


# The event days a day's cleaning reads the clean events of (`_look_back`).
LOOK_BACK = TimeWindowPartitionMapping(start_offset=-LOOK_BACK_DAYS, end_offset=-1)


def _event_id_hashes(out: DataLayout, clean_file: Path) -> Path:
    """The event-id index of a clean day file, written (again) where it is missing or was
    written from another version of its file (a day cleaned again, a customer's rows
    deleted, an index fetched beside an older copy), and published. An index fetched before
    its file (the shared store's copies are dated when fetched) is kept: what decides is the
    file's fingerprint in the index (`index_is_current`), not their dates."""
    index = out.tables / EVENT_ID_HASHES / clean_file.name
    if not index_is_current(index, clean_file):
        write_event_id_hashes(clean_file, index)
        publish_to_shared(out.root, index)
    return index


def _drop_other_versions_of_the_index(
    out: DataLayout, warn: Callable[[str], None] = print
) -> list[str]:
    """The event-id index folders of other DuckDB versions (`EVENT_ID_HASHES` names this
    one's), removed from the shared store and the data directory: no version reads another's
    hashes, and after an upgrade the old ones would stay forever. Returns their names. A
    folder that cannot be removed is left for the next run, with a `warn`ing: housekeeping
    never fails the cleaning. (The machines that share a store run one DuckDB version, the
    one the project pins; one with another writes its own index again.)"""
    current = out.tables / EVENT_ID_HASHES
    shared = shared_storage(out.root)
    removed = []
    for folder in sorted(current.parent.glob("duckdb-*")):
        if folder == current or not folder.is_dir():
            continue
        try:
            if shared:
                shared.remove(folder)
            shutil.rmtree(folder)
        except OSError as error:
            warn(f"the event-id index {folder} of another DuckDB version stays: {error}")
            continue
        removed.append(folder.name)
    return removed


def _look_back(out: DataLayout, day: str) -> tuple[list[Path], list[Path]]:
    """The clean files of the LOOK_BACK_DAYS before `day` (none before the first event day),
    and those of every earlier day (their event ids are never clean again, see
    `_event_id_hashes`); a missing recent day fails the step: days are cleaned in order."""
    first, recent = pd.Timestamp(first_event_day()), []
    for before in range(LOOK_BACK_DAYS, 0, -1):
        earlier = pd.Timestamp(day) - pd.Timedelta(days=before)
        if earlier < first:
            continue
        path = out.day_file("events_clean", f"{earlier:%Y-%m-%d}")
        if not path.exists():
            raise Failure(
                f"events_clean of {earlier:%Y-%m-%d} is missing: a day is cleaned after the "
                f"{LOOK_BACK_DAYS} days before it (their duplicates and sessions carry over). "
                f"Run the days from {earlier:%Y-%m-%d} on (one range run cleans them in order)."
            )
        recent.append(path)
    every_earlier_day = [
        path
        for path in sorted(out.table("events_clean").glob("*.parquet"))
        if f"{first:%Y-%m-%d}" <= path.stem < day
    ]
    return recent, every_earlier_day


@multi_asset(
    group_name="quality",
    partitions_def=EVENT_DAYS,
    backfill_policy=BackfillPolicy.single_run(),
    outs={
        "events_clean": AssetOut(
            owners=OWNERS,
            kinds={"parquet", "duckdb"},
            description="Typed behaviour events that passed every rule (ids, types, time "
            "window, prices, duplicates, known items), one file per event day, each day "
            "cleaned after the two before it; the rest went to the quarantine.",
        ),
        "quarantine_events": _quarantine_part("behaviour event"),
    },
    ins={"items_clean": AssetIn(metadata={"columns": ["item_id"]})},
    deps=[AssetDep("events_clean", partition_mapping=LOOK_BACK)],
)
def events_clean(
    context: AssetExecutionContext,
    raw_events: Path,
    raw_items: Path,
    items_clean: pl.DataFrame,
    storage: PlatformStorage,
) -> Iterator[Output]:
    out = storage.layout()
    _check_pseudonym_key(context, out)
    raw_item_ids = read_raw(raw_items)["item_id"]
    items = items_clean["item_id"]
    held = raw_item_ids.filter(~raw_item_ids.is_in(items.implode()))
    window, run_id = source_window(out.landing), context.run.run_id
    quarantined, figures, indexes = [], {}, {}
    if dropped := _drop_other_versions_of_the_index(out, context.log.warning):
        context.log.info(f"event-id index of other DuckDB versions removed: {', '.join(dropped)}")
    for day in context.partition_keys:
        recent, earlier_files = _look_back(out, day)
        for path in earlier_files:  # each day's index checked once a run, not once a day
            if path not in indexes:
                indexes[path] = _event_id_hashes(out, path)
        cleaned = clean_events(
            raw_events / day,
            items,
            window,
            run_id,
            _now(),
            quarantined_item_ids=held,
            write_to=(out.day_file("events_clean", day), out.day_file("quarantine_events", day)),
            earlier=recent,
            earlier_files=earlier_files,
            earlier_id_hashes=[indexes[path] for path in earlier_files],
        )
        figures[day] = _cleaning_figures("behaviour_events", run_id, cleaned, raw_events / day)
        quarantined.append(cleaned.quarantine.select("table", "reason"))
        context.log.info(
            f"events_clean {day}: {cleaned.clean_rows:,} of {figures[day]['rows_read']:,} rows "
            f"clean, {cleaned.quarantine.height:,} quarantined"
        )
    _save_events_figures(out, figures)
    metadata = _cleaning_metadata(_summed_figures(list(figures.values())), pl.concat(quarantined))
    yield Output(out.table("events_clean"), "events_clean", metadata=metadata)
    yield Output(out.table("quarantine_events"), "quarantine_events")


@asset(
    group_name="quality",
    owners=OWNERS,
    kinds={"parquet", "polars"},
    deps=["items_clean", "events_clean"],  # waits for their blocking suites, as before
    description="Every rejected input row: table, source file and line, raw text, reason code, "
    "a sentence saying what was wrong, and the run id; with the events the real-time intake "
    "(POST /events) rejected, source_file intake/<batch>.",
)
def quarantine(
    quarantine_items: pl.DataFrame, quarantine_events: pl.DataFrame, storage: PlatformStorage
) -> Output:
    intake = read_intake_quarantine(storage.layout().tables)
    frame = pl.concat([quarantine_items, quarantine_events, intake], how="vertical_relaxed").select(
        QUARANTINE_COLUMNS
    )
    return Output(
        frame, metadata={"by_reason": _reason_counts(frame), "by_reason_plot": _reason_plot(frame)}
    )


@asset_check(
    asset="quarantine",
    blocking=True,
    description="Per file, and per event day of the behaviour events: rows read = rows clean "
    "+ rows quarantined.",
)
def rows_accounted_for(storage: PlatformStorage) -> AssetCheckResult:
    accounting = accounting_by_table(storage.layout())
    unbalanced = accounting[~accounting["balanced"]]
    days = accounting_by_day(storage.layout())
    unbalanced_days = days[~days["balanced"]]
    return AssetCheckResult(
        passed=unbalanced.empty and unbalanced_days.empty,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "event_days": len(days),
            "unbalanced_days": MetadataValue.md(
                unbalanced_days.to_markdown(index=False) if len(unbalanced_days) else "none"
            ),
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
    asset="items_clean",
    blocking=True,
    description="GX suite expectations/items_clean.json (contract).",
)
def items_clean_suite(
    context: AssetCheckExecutionContext, storage: PlatformStorage, quality: QualityResource
) -> AssetCheckResult:
    outcome = quality.runner(storage).validate_table(
        "items_clean", storage.layout().table("items_clean"), run_name=context.run.run_id
    )
    return suite_check_result(outcome)


def events_suite_parameters(out: DataLayout) -> dict:
    """The run's values for the events_clean suite's $PARAMETERs."""
    window_start, window_end = source_window(out.landing)
    return {
        "known_item_ids": pl.read_parquet(out.table("items_clean"), columns=["item_id"])[
            "item_id"
        ].to_list(),
        "window_start": window_start,
        "window_end": window_end,
        "now": pd.Timestamp.now(tz="UTC"),
    }


def run_event_days(tags: Mapping[str, str]) -> list[str]:
    """The event days a run's tags name (one partition, or a range of them), in order; none
    for a run of no partition."""
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
        PARTITION_NAME_TAG,
    )

    if day := tags.get(PARTITION_NAME_TAG):
        return [day]
    first, last = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    if not (first and last):
        return []
    return [f"{day:%Y-%m-%d}" for day in pd.date_range(first, last, freq="D")]


def _days_label(days: list[str]) -> str:
    """`2026-11-01..2026-11-05 (5 days)`, or the one day."""
    return days[0] if len(days) == 1 else f"{days[0]}..{days[-1]} ({len(days)} days)"


def _later_repeats(out: DataLayout, files: list[Path]) -> tuple[list[Path], list[str]]:
    """The clean files of the days after the last of the clean day `files`, and the event
    ids of `files` that they hold too."""
    last = files[-1].stem
    later = [
        path for path in sorted(out.table("events_clean").glob("*.parquet")) if path.stem > last
    ]
    return later, ids_on_later_days(files, later, [_event_id_hashes(out, path) for path in later])


def _failed(summary: str, metadata: Mapping[str, object]) -> AssetCheckResult:
    """A failed blocking check whose summary says why (the demo prints it)."""
    return AssetCheckResult(passed=False, metadata={**metadata, "summary": summary})


@asset_check(
    asset="events_clean",
    blocking=True,
    description="GX suite expectations/events_clean.json (contract), over the event days the "
    "run cleaned (every day in a run of no partition), and their event ids against the days "
    "after them (a day cleaned again, the days after it not).",
)
def events_clean_suite(
    context: AssetCheckExecutionContext, storage: PlatformStorage, quality: QualityResource
) -> AssetCheckResult:
    out = storage.layout()
    named = run_event_days(context.run.tags)
    days = [day for day in named if out.day_file("events_clean", day).exists()]
    missing = sorted(set(named) - set(days))
    if named and not days:
        return _failed(
            f"events_clean has no file for the run's day(s) {', '.join(missing)}",
            {"event_days_without_a_file": ", ".join(missing)},
        )
    files = [out.day_file("events_clean", day) for day in days]
    label = _days_label(days) if days else "every day"
    if days and sum(parquet_rows(path) for path in files) == 0:
        return AssetCheckResult(
            passed=True,
            metadata={"summary": f"no clean events on {label}: nothing to validate", "rows": 0},
        )
    outcome = quality.runner(storage).validate_table(
        "events_clean",
        files or out.table("events_clean"),
        events_suite_parameters(out),
        context.run.run_id,
    )
    more: dict[str, object] = {"event_days": label}
    if missing:
        more["event_days_without_a_file"] = ", ".join(missing)
    result = suite_check_result(outcome, **more)
    later, repeated = _later_repeats(out, files) if files else ([], [])
    if not repeated:
        return result
    command = f"recsys backfill --from {later[0].stem} --to {later[-1].stem}"
    return _failed(
        f"{len(repeated):,} event id(s) of {label} also on later days, e.g. "
        f"{', '.join(repeated[:3])}: those days were cleaned before these were cleaned again. "
        f"Re-run them: {command}",
        {
            **result.metadata,
            "event_ids_on_later_days": len(repeated),
            "sample": ", ".join(repeated[:5]),
            "remedy": command,
        },
    )


@asset_check(
    asset="events_clean",
    blocking=False,
    description="Statistical (WARN): the latest event day against the day before and the "
    f"reference window (the {REFERENCE_DAYS} days before it): row count, event-type mix, "
    "price and events-per-user PSI, null-rate change (expectations/events_clean.drift.json).",
)
def events_clean_drift(storage: PlatformStorage) -> AssetCheckResult:
    days, verdicts = drift_figures(storage.layout())
    warned = verdicts[verdicts["warn"]]
    return AssetCheckResult(
        passed=warned.empty,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "warnings": len(warned),
            "checks": MetadataValue.md(verdicts.to_markdown(index=False)),
            "days_compared": len(days),
        },
    )
