"""What runs with no person watching: jobs, schedules, the landing-files sensor, declarative
automation of the downstream assets, and freshness checks.

- `landing_files_sensor` starts `daily_refresh` when files land (or change) in the landing
  folder. Its cursor records each file's size and modification time (on its first tick, the
  files the raw tables already hold count as handled), and each run's key is a digest of
  exactly the files it was started for, so a file is handled once and a repeated evaluation
  starts nothing new.
- `daily_refresh_schedule` runs `daily_refresh` every morning at 06:00 UTC for the previous
  day's partition (event-date partitions, `assets._common.EVENT_DAYS`); a new file for an
  older day makes the sensor's run cover that day through yesterday. `weekly_retrain_schedule` retrains, scores, evaluates and pushes
  the model outputs to Feast every Monday at 04:00 UTC.
- Between those, the feature and feature-store assets follow their inputs by declarative
  automation (`AutomationCondition.eager()`), evaluated by `platform_automation`.
- Freshness checks warn when the online features are older than 26 hours, or the
  recommendations older than 8 days.
- `failed_runs_report` writes every failed run (job, failed steps, the error) to
  `reports/failed_runs.jsonl` and the log; Feast steps retry on their own first.
- `dead_runs_sensor` marks runs whose process died (`kill -9`, a crash) as failed every
  30 s, so the writing runs queued behind them start (see `run_recovery.py`).
- `forget_user` (run on request, with a filed request's id as config) removes one user from every
  file, landing exports included, and from the online store (see `privacy.py`).
"""

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import (
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    Config,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    OpExecutionContext,
    RunFailureSensorContext,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    build_last_update_freshness_checks,
    build_schedule_from_partitioned_job,
    build_sensor_for_freshness_checks,
    define_asset_job,
    job,
    op,
    run_failure_sensor,
    schedule,
    sensor,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from dagster_project.assets._common import EVENT_DAYS
from dagster_project.privacy import (
    close_deletion_request,
    delete_online_rows,
    forget_user_files,
    read_deletion_request,
    record_deletion,
    redact_user,
    user_views,
)
from dagster_project.pseudonyms import pseudonymise
from dagster_project.resources import FeastResource, PlatformStorage
from dagster_project.run_recovery import fail_dead_runs
from dagster_project.sources.raw_table import RAW_MANIFEST, landing_files

# The analysts' reports and SQL views are rebuilt daily too; the model evaluation weekly.
DAILY_GROUPS = (
    "ingest",
    "quality",
    "detection",
    "behaviour",
    "features",
    "feature_store",
    "reports",
)
RETRAIN_GROUPS = ("recommender", "evaluation")
# Assets that follow their inputs on their own: everything the daily job builds after ingest.
AUTOMATED_GROUPS = DAILY_GROUPS[1:]
MODEL_OUTPUTS = ("feast_model_outputs",)
LANDING_KINDS = ("events", "items")  # the landing sub-folders ingestion reads
# Every job that writes the data directory carries this tag; the instance (dagster.yaml, see
# cli.prepare_dagster_home) runs one such run at a time and queues the rest.
WRITES_DATA = {"recsys/writes": "data_dir"}
DATED_PATH = re.compile(r"date=(\d{4}-\d{2}-\d{2})")

daily_selection = AssetSelection.groups(*DAILY_GROUPS) - AssetSelection.assets(*MODEL_OUTPUTS)
daily_refresh = define_asset_job(
    "daily_refresh",
    selection=daily_selection,
    tags=WRITES_DATA,
    description="Ingest new landing files, clean, detect bots, rebuild features, materialize "
    "the online store.",
)
weekly_retrain = define_asset_job(
    "weekly_retrain",
    tags=WRITES_DATA,
    selection=AssetSelection.groups(*RETRAIN_GROUPS) | AssetSelection.assets(*MODEL_OUTPUTS),
    description="Train the recommender on a fresh Feast training set, score, evaluate, and "
    "push embeddings and recommendations to Feast.",
)


daily_model_refresh = define_asset_job(
    "daily_model_refresh",
    tags=WRITES_DATA,
    selection=AssetSelection.groups("recommender") | AssetSelection.assets(*MODEL_OUTPUTS),
    config={"ops": {"embedding_model": {"config": {"warm_start": True}}}},
    description="Between weekly retrains: a fresh Feast training set, the saved model "
    "warm-started on it, new recommendations and vectors pushed to Feast.",
)


def landing_fingerprints(storage: PlatformStorage) -> dict[str, str]:
    """`relative path -> "size:mtime_ns"` of every events and items file in the landing folder
    (what ingestion reads; a missing folder has none)."""
    landing = storage.layout().landing
    files = [
        p
        for kind in LANDING_KINDS
        if (landing / kind).is_dir()
        for p in landing_files(landing / kind)
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
        manifest = out.raw_table(table) / RAW_MANIFEST
        if manifest.exists():
            for entry in json.loads(manifest.read_text())["files"]:
                names.update(entry["source_files"])
    return names


def days_to_refresh(new_files: list[str]) -> tuple[str, str]:
    """The event days a run must cover for `new_files` (relative landing paths): from the
    earliest day a file names (`date=YYYY-MM-DD` in its path; a file without one, such as a
    catalog export, touches only the latest day) through the latest day, since every later
    day's running totals build on the earliest one's."""
    keys = EVENT_DAYS.get_partition_keys()
    named = [m.group(1) for f in new_files if (m := DATED_PATH.search(f))]
    first = min(named, default=keys[-1])
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


daily_refresh_schedule = build_schedule_from_partitioned_job(
    daily_refresh,
    name="daily_refresh_schedule",
    hour_of_day=6,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every morning at 06:00 UTC: the previous event day's partition into features "
    "and Feast.",
)


@schedule(
    job=weekly_retrain,
    cron_schedule="0 4 * * 1",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every Monday at 04:00 UTC: retrain, score, evaluate, push to Feast.",
)
def weekly_retrain_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    week = context.scheduled_execution_time.strftime("%G-W%V")
    return RunRequest(run_key=f"retrain-{week}", tags={"recsys/week": week})


@schedule(
    job=daily_model_refresh,
    cron_schedule="0 7 * * 0,2-6",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every morning but Monday's (the weekly retrain) at 07:00 UTC, after the daily "
    "refresh: warm-start the model on the new data and push its outputs to Feast.",
)
def daily_model_refresh_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    return RunRequest(run_key=f"warm-{context.scheduled_execution_time:%Y-%m-%d}")


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


freshness_checks = [
    *build_last_update_freshness_checks(
        assets=["feast_online", "user_features", "item_features"],
        lower_bound_delta=timedelta(hours=26),
    ),
    *build_last_update_freshness_checks(
        assets=["recommendations", "feast_model_outputs"],
        lower_bound_delta=timedelta(days=8),
    ),
]
freshness_sensor = build_sensor_for_freshness_checks(
    freshness_checks=freshness_checks,
    name="freshness_checks_sensor",
    default_status=DefaultSensorStatus.RUNNING,
)


class ForgetUserConfig(Config):
    # A filed deletion request (`python -m dagster_project.cli deletion-request USER_ID`):
    # the customer's id stays in an owner-only file that the job deletes when done, so it
    # never lands in the run config Dagster stores.
    request_id: str


def _instance_home(instance: DagsterInstance) -> Path | None:
    """The folder a Dagster instance keeps its runs, event logs and captured output in."""
    root = getattr(instance, "root_directory", None)
    return Path(root) if root and Path(root).is_dir() else None


@op(
    description="Remove one user from every file (landing exports, raw, clean and derived "
    "tables, quarantine, features, model outputs) and from the online store; redact their ids "
    "in event logs, captured output and reports; log the deletion by a digest of the id."
)
def forget_user_everywhere(
    context: OpExecutionContext,
    config: ForgetUserConfig,
    storage: PlatformStorage,
    feast: FeastResource,
) -> None:
    out = storage.layout()
    user_id = read_deletion_request(out, config.request_id)
    removed = forget_user_files(out, user_id)
    store = feast.store()
    views = user_views(store)
    online = delete_online_rows(store, views, pseudonymise([user_id]))
    close_deletion_request(out, config.request_id)
    redacted, left = redact_user(out, user_id, _instance_home(context.instance))
    log = record_deletion(out, user_id, removed, online, len(redacted))
    for name, rows in removed.items():
        context.log.info(f"forget_user: {rows:,} row(s) removed from {name}")
    context.log.info(
        f"forget_user: mentions redacted in {len(redacted)} file(s): {', '.join(redacted)}"
    )
    if left:
        context.log.warning(
            "forget_user: still mentioned (not text or SQLite: remove at the next rebuild) in "
            + ", ".join(f"{name} ({count})" for name, count in left.items())
        )
    context.log.info(
        f"forget_user: {sum(removed.values()):,} rows in {len(removed)} file(s); online rows of "
        f"{', '.join(views)}: {'removed' if online else 'none held'}; logged in {log}"
    )
    context.add_output_metadata(
        {
            "rows_removed": sum(removed.values()),
            "files": len(removed),
            "online": online,
            "files_redacted": len(redacted),
            "files_still_mentioning": len(left),
        }
    )


@job(
    tags=WRITES_DATA,
    description="A deletion request: forget one user everywhere (config: request_id, from "
    "`python -m dagster_project.cli deletion-request USER_ID`). The next "
    "training set cannot contain them: their events are gone from the landing exports too.",
)
def forget_user() -> None:
    forget_user_everywhere()


jobs = [daily_refresh, weekly_retrain, daily_model_refresh, forget_user]
schedules = [daily_refresh_schedule, weekly_retrain_schedule, daily_model_refresh_schedule]


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


sensors = [
    landing_files_sensor,
    platform_automation,
    freshness_sensor,
    failed_runs_report,
    dead_runs_sensor,
]
