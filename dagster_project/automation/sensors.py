"""What reacts without a person: new landing files, the assets' automation conditions,
failed runs, runs whose process died, and the freshness checks' evaluation."""

import hashlib
import json
from datetime import UTC, datetime

from dagster import (
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    build_sensor_for_freshness_checks,
    run_failure_sensor,
    sensor,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from dagster_project.assets._common import EVENT_DAYS
from dagster_project.automation.checks import freshness_checks
from dagster_project.automation.jobs import (
    AUTOMATED_GROUPS,
    LANDING_KINDS,
    daily_refresh,
)
from dagster_project.resources import PlatformStorage
from dagster_project.run_recovery import fail_dead_runs
from dagster_project.serving.landing import INTAKE_FILE_PREFIX
from dagster_project.sources.raw_table import landing_files, named_day, raw_manifest_entries


def landing_fingerprints(storage: PlatformStorage) -> dict[str, str]:
    """`relative path -> "size:mtime_ns"` of every events and items file in the landing folder
    (what ingestion reads; a missing folder has none), but the real-time intake's: it
    publishes a file a minute, which the next scheduled daily run reads."""
    landing = storage.layout().landing
    files = [
        p
        for kind in LANDING_KINDS
        if (landing / kind).is_dir()
        for p in landing_files(landing / kind)
        if not p.name.startswith(INTAKE_FILE_PREFIX)
    ]
    return {
        str(path.relative_to(landing)): f"{path.stat().st_size}:{path.stat().st_mtime_ns}"
        for path in files
    }


def ingested_files(storage: PlatformStorage) -> set[str]:
    """Landing files (relative paths) that the raw tables already hold, from their manifests."""
    out = storage.layout()
    names: set[str] = set()
    for table in ("raw_events", "raw_items"):
        try:
            entries = raw_manifest_entries(out.raw_table(table))
        except FileNotFoundError:  # nothing ingested yet
            continue
        for _, entry in entries:
            names.update(entry["source_files"])
    return names


def days_to_refresh(new_files: list[str]) -> tuple[str, str]:
    """The event days a run must cover for `new_files` (relative landing paths): from the
    earliest day a file names (`date=YYYY-MM-DD` in its path) through the latest day, since
    every later day's running totals build on the earliest one's. An events file without a
    day gives its records to their event days (`sources.raw_table.LandingDay`), so it covers
    every day; a catalog export touches only the latest day."""
    keys = EVENT_DAYS.get_partition_keys()
    named = [day for f in new_files if (day := named_day(f))]
    undated_events = any(f.startswith("events/") and not named_day(f) for f in new_files)
    first = keys[0] if undated_events else min(named, default=keys[-1])
    first = min(max(first, keys[0]), keys[-1])
    return first, keys[-1]


@sensor(
    job=daily_refresh,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Starts daily_refresh when files land in (or change in) the landing folder, "
    "for the event days from the earliest the files name to yesterday; each file is handled "
    "once.",
)
def landing_files_sensor(context: SensorEvaluationContext, storage: PlatformStorage):
    current = landing_fingerprints(storage)
    if context.cursor:
        seen: dict[str, str] = json.loads(context.cursor)
    else:  # first tick: files the raw tables already hold (e.g. after `make demo`) are done
        held = ingested_files(storage)
        seen = {name: stamp for name, stamp in current.items() if name in held}
    new = {name: stamp for name, stamp in current.items() if seen.get(name) != stamp}
    if not new:
        if not context.cursor:
            context.update_cursor(json.dumps(seen, sort_keys=True))
        return SkipReason(f"no new landing files ({len(current)} already handled)")
    digest = hashlib.sha256(json.dumps(sorted(new.items())).encode()).hexdigest()[:16]
    context.update_cursor(json.dumps({**seen, **new}, sort_keys=True))
    names = sorted(new)
    first, last = days_to_refresh(names)
    return RunRequest(
        run_key=f"landing-{digest}",
        tags={
            ASSET_PARTITION_RANGE_START_TAG: first,
            ASSET_PARTITION_RANGE_END_TAG: last,
            "recsys/trigger": "landing_files",
            "recsys/new_files": str(len(names)),
            "recsys/first_file": names[0],
        },
    )


def with_automation(assets: list) -> list:
    """The assets, with `AutomationCondition.eager()` on those in AUTOMATED_GROUPS."""
    from dagster import map_asset_specs

    def follow_inputs(spec):
        follows = spec.group_name in AUTOMATED_GROUPS
        if follows and spec.automation_condition is None:
            return spec.replace_attributes(automation_condition=AutomationCondition.eager())
        return spec

    return list(map_asset_specs(follow_inputs, assets))


platform_automation = AutomationConditionSensorDefinition(
    "platform_automation",
    target=AssetSelection.groups(*AUTOMATED_GROUPS),
    default_status=DefaultSensorStatus.RUNNING,
    description="Evaluates the assets' automation conditions: clean data, features, the "
    "online store and the quality reports follow new raw data.",
)


@run_failure_sensor(
    monitor_all_code_locations=True,
    default_status=DefaultSensorStatus.RUNNING,
    description="Reports every failed run: job, failed steps and the error, appended to "
    "reports/failed_runs.jsonl (for alerting) and the daemon's log.",
)
def failed_runs_report(context: RunFailureSensorContext, storage: PlatformStorage) -> None:
    run = context.dagster_run
    failed_steps = sorted(
        {e.step_key for e in context.get_step_failure_events() if e.step_key is not None}
    )
    entry = {
        "run_id": run.run_id,
        "job": run.job_name,
        "tags": {k: v for k, v in run.tags.items() if k.startswith("recsys/")},
        "failed_steps": failed_steps,
        "error": context.failure_event.message,
        "reported_at": datetime.now(UTC).isoformat(),
    }
    path = storage.layout().reports / "failed_runs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as report:
        report.write(json.dumps(entry) + "\n")
    context.log.error(
        f"run {run.run_id} of {run.job_name} failed at {failed_steps}: {entry['error']}"
    )


freshness_sensor = build_sensor_for_freshness_checks(
    freshness_checks=freshness_checks,
    name="freshness_checks_sensor",
    default_status=DefaultSensorStatus.RUNNING,
)


@sensor(
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Marks runs whose process died (kill -9, out of memory, a crash) as failed, "
    "so that the writing runs queued behind them start.",
)
def dead_runs_sensor(context: SensorEvaluationContext) -> SkipReason:
    failed = fail_dead_runs(context.instance)
    for run_id in failed:
        context.log.warning(f"run {run_id}: its process is gone; marked failed")
    return SkipReason(f"{len(failed)} run(s) with a dead process marked failed")


all_sensors = [
    landing_files_sensor,
    platform_automation,
    freshness_sensor,
    failed_runs_report,
    dead_runs_sensor,
]
