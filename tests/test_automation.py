"""Schedules, the landing-files sensor and the freshness checks, evaluated as the daemon would."""

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import (
    DagsterInstance,
    JobDefinition,
    RunRequest,
    SkipReason,
    build_reconstructable_job,
    build_schedule_context,
    build_sensor_context,
    execute_job,
    job,
    op,
)

from dagster_project.assets._common import EVENT_DAYS
from dagster_project.automation import (
    daily_model_refresh,
    daily_model_refresh_schedule,
    daily_refresh,
    freshness_checks,
    landing_files_sensor,
    weekly_retrain,
    weekly_retrain_schedule,
)
from dagster_project.definitions import defs
from dagster_project.executors import (
    CELERY_BROKER_ENV,
    CELERY_POLL_SECONDS,
    EXECUTOR_ENV,
    STEP_PRELOAD,
    platform_executor,
)
from dagster_project.resources import PlatformStorage
from dagster_project.settings import layout


def _tick(storage: PlatformStorage, cursor: str | None):
    context = build_sensor_context(cursor=cursor, resources={"storage": storage})
    return landing_files_sensor(context), context.cursor


def test_landing_sensor_leaves_the_real_time_intakes_files_to_the_daily_run(tmp_path):
    """The intake publishes a file a minute: none starts a run of its own."""
    storage = PlatformStorage(data_dir=str(tmp_path))
    folder = layout(tmp_path).landing / "events" / "date=2026-09-03"
    folder.mkdir(parents=True)
    (folder / "intake-123-1-1.csv").write_text("event_id\n1\n")
    (folder / ".intake-123-1-2.csv.open").write_text("event_id\n2\n")
    result, _ = _tick(storage, None)
    assert isinstance(result, SkipReason)
    (folder / "export.csv").write_text("event_id\n3\n")
    result, _ = _tick(storage, None)
    assert isinstance(result, RunRequest) and result.tags["recsys/new_files"] == "1"


def test_landing_sensor_handles_each_file_once(tmp_path):
    storage = PlatformStorage(data_dir=str(tmp_path))
    landing = layout(tmp_path).landing
    first, cursor = _tick(storage, None)
    assert isinstance(first, SkipReason)  # no landing folder yet: nothing to do
    (landing / "events").mkdir(parents=True)
    (landing / "source.json").write_text("{}")  # the export's manifest is not a data file
    (landing / "events" / "day1.csv").write_text("event_id\n1\n")
    (landing / "events" / "day2.csv").write_text("event_id\n2\n")
    request, cursor = _tick(storage, cursor)
    assert isinstance(request, RunRequest) and request.tags["recsys/new_files"] == "2"
    # The same files again: skipped, and re-evaluating from the old cursor repeats the run key
    # (Dagster starts one run per key), so a crash between tick and cursor commit is harmless.
    again, same_cursor = _tick(storage, cursor)
    assert isinstance(again, SkipReason) and same_cursor == cursor
    # A new day's file: a run for that file alone, with a new key, for its day through
    # yesterday (later days' running totals build on it).
    (landing / "events" / "date=2026-09-03").mkdir()
    (landing / "events" / "date=2026-09-03" / "day3.csv").write_text("event_id\n3\n")
    third, next_cursor = _tick(storage, cursor)
    assert third.tags["recsys/new_files"] == "1" and third.tags["recsys/first_file"].endswith(
        "day3.csv"
    )
    last_day = EVENT_DAYS.get_partition_keys()[-1]
    assert third.tags["dagster/asset_partition_range_start"] == "2026-09-03"
    assert third.tags["dagster/asset_partition_range_end"] == last_day
    # Events files without a date (day1.csv, day2.csv) give each record to its event day:
    # every day is covered. A catalog file touches only the latest day.
    assert request.tags["dagster/asset_partition_range_start"] == EVENT_DAYS.get_partition_keys()[0]
    assert third.run_key != request.run_key
    replay, _ = _tick(storage, cursor)
    assert replay.run_key == third.run_key
    # A file rewritten in place counts as new.
    path = landing / "events" / "day1.csv"
    path.write_text("event_id\n1\n4\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    changed, final_cursor = _tick(storage, next_cursor)
    assert changed.tags["recsys/first_file"].endswith("day1.csv")
    assert set(json.loads(final_cursor)) == {
        "events/day1.csv",
        "events/day2.csv",
        "events/date=2026-09-03/day3.csv",
    }
    (landing / "items").mkdir()
    (landing / "items" / "catalog.csv").write_text("item_id\ni1\n")
    catalog, _ = _tick(storage, final_cursor)
    assert catalog.tags["dagster/asset_partition_range_start"] == last_day


def test_landing_sensor_starts_with_what_the_raw_tables_already_hold(tmp_path):
    storage = PlatformStorage(data_dir=str(tmp_path))
    out = layout(tmp_path)
    (out.landing / "events").mkdir(parents=True)
    for day in ("day1", "day2"):
        (out.landing / "events" / f"{day}.csv").write_text("event_id\n1\n")
    raw = out.raw_table("raw_events")
    raw.mkdir(parents=True)
    (raw / "_raw.json").write_text(
        json.dumps({"files": [{"path": "x", "rows": 1, "source_files": ["events/day1.csv"]}]})
    )
    request, cursor = _tick(storage, None)
    assert request.tags["recsys/new_files"] == "1"
    assert request.tags["recsys/first_file"] == "events/day2.csv"
    assert set(json.loads(cursor)) == {"events/day1.csv", "events/day2.csv"}
    # Everything already ingested: no run, and the cursor is kept for the next tick.
    (out.landing / "events" / "day2.csv").unlink()
    skipped, cursor = _tick(storage, None)
    assert isinstance(skipped, SkipReason) and set(json.loads(cursor)) == {"events/day1.csv"}


def test_schedules_run_the_previous_day_and_the_weekly_retrain():
    morning = datetime(2026, 9, 10, 6, 0, tzinfo=UTC)
    schedule = defs.resolve_schedule_def("daily_refresh_schedule")
    with DagsterInstance.ephemeral() as instance:
        context = build_schedule_context(instance=instance, scheduled_execution_time=morning)
        (daily,) = schedule.evaluate_tick(context).run_requests
    assert daily.partition_key == "2026-09-09"
    monday = datetime(2026, 9, 7, 4, 0, tzinfo=UTC)
    weekly = weekly_retrain_schedule(build_schedule_context(scheduled_execution_time=monday))
    assert weekly.run_key == "retrain-2026-W37"
    assert schedule.cron_schedule == "0 6 * * *"
    warm = daily_model_refresh_schedule(build_schedule_context(scheduled_execution_time=morning))
    assert warm.run_key == "warm-2026-09-10"
    assert daily_model_refresh_schedule.cron_schedule == "0 7 * * 0,2-6"  # Mondays retrain
    assert weekly_retrain_schedule.cron_schedule == "0 4 * * 1"


def test_jobs_split_the_graph_into_daily_work_and_weekly_retraining():
    graph = defs.resolve_asset_graph()
    daily = {k.to_user_string() for k in daily_refresh.selection.resolve(graph)}
    weekly = {k.to_user_string() for k in weekly_retrain.selection.resolve(graph)}
    assert {"raw_events", "feast_online", "quality_report"} <= daily
    assert {"embedding_model", "recommendations", "feast_model_outputs"} <= weekly
    assert not daily & weekly
    # Between retrains, the model is warm-started daily: the retrain's assets, bar evaluation.
    warm = {k.to_user_string() for k in daily_model_refresh.selection.resolve(graph)}
    assert {"training_set", "embedding_model", "feast_model_outputs"} <= warm <= weekly
    assert "evaluation_report" not in warm
    assert daily_model_refresh.config["ops"]["embedding_model"]["config"]["warm_start"] is True
    everything = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert daily | weekly == everything
    # Features follow new clean data on their own; training waits for its schedule.
    automated = {
        k.to_user_string()
        for k in graph.get_all_asset_keys()
        if graph.get(k).automation_condition is not None
    }
    assert {"events_clean", "user_features", "feast_online"} <= automated
    assert not automated & {"embedding_model", "training_set", "raw_events"}
    checked = {key.asset_key.to_user_string() for c in freshness_checks for key in c.check_keys}
    assert checked == {
        "feast_online",
        "user_features",
        "item_features",
        "recommendations",
        "feast_model_outputs",
    }


def test_retry_with_backoff_waits_longer_each_time_then_names_the_failure():
    from dagster_project.storage import retry_with_backoff

    calls, waits = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("refused")
        return "done"

    assert (
        retry_with_backoff(flaky, (ConnectionError,), "writing", 4, 1.0, print, waits.append)
        == "done"
    )
    assert waits == [1.0, 2.0]
    with pytest.raises(RuntimeError, match="dividing failed 2 times") as failed:
        retry_with_backoff(
            lambda: 1 / 0, (ZeroDivisionError,), "dividing", 2, 0.5, print, waits.append
        )
    assert "ZeroDivisionError" in str(failed.value)
    # Errors that are not worth retrying go straight through, without a wait.
    with pytest.raises(KeyError):
        retry_with_backoff(
            lambda: {}["x"], (ConnectionError,), "reading", 3, 1.0, print, waits.append
        )
    assert waits == [1.0, 2.0, 0.5]


def test_every_asset_says_what_it_is_who_owns_it_and_how_it_is_stored():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description and len(node.description) > 20, name
        assert node.group_name and node.group_name != "default", name
        assert node.owners == ["team:data-platform"], name
        assert any(tag.startswith("dagster/kind/") for tag in node.tags), name


def test_a_write_killed_midway_leaves_the_previous_table_whole(tmp_path):
    """kill -9 during write_parquet_atomic: readers still see the old table, never a part."""
    import signal
    import subprocess
    import sys
    import time

    import pandas as pd

    from dagster_project.storage import write_parquet_atomic

    path = tmp_path / "events_clean.parquet"
    old = pd.DataFrame({"user_id": ["p1", "p2"], "n": [1, 2]})
    write_parquet_atomic(old, path)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import numpy as np, pandas as pd, sys\n"
            "from dagster_project.storage import write_parquet_atomic\n"
            "big = pd.DataFrame({'n': np.arange(30_000_000), 'x': np.random.rand(30_000_000)})\n"
            "print('writing', flush=True)\n"
            f"write_parquet_atomic(big, __import__('pathlib').Path({str(path)!r}))\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout.readline().strip() == "writing"
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".events_clean.parquet.*.tmp")):
        assert time.monotonic() < deadline and writer.poll() is None, "the write never started"
        time.sleep(0.01)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    pd.testing.assert_frame_equal(pd.read_parquet(path), old)
    # What the killed writer left is a hidden temporary file, which no reader globs for.
    assert all(p.name.startswith(".") for p in tmp_path.iterdir() if p != path)


def test_runs_that_write_the_data_directory_queue_one_at_a_time(tmp_path):
    from dagster import DagsterInstance

    from dagster_project.automation import WRITES_DATA
    from dagster_project.cli import prepare_dagster_home

    home = prepare_dagster_home(tmp_path)
    with DagsterInstance.from_config(str(home)) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert limits == [{"key": "recsys/writes", "limit": 1}]
    jobs = {j.name: j for j in defs.get_repository_def().get_all_jobs()}
    for name in ("daily_refresh", "weekly_retrain", "full_pipeline", "forget_user"):
        assert WRITES_DATA.items() <= jobs[name].tags.items(), name


def test_a_failed_run_is_reported_with_its_step_and_error(tmp_path):
    from dagster import DagsterInstance, build_run_status_sensor_context, job, op

    from dagster_project.automation import failed_runs_report

    @op
    def materialize_online_store():
        raise ConnectionError("the online store at 127.0.0.1:1 refused the connection")

    @job(tags={"recsys/day": "2026-09-09"})
    def daily_refresh_like():
        materialize_online_store()

    with DagsterInstance.ephemeral() as instance:
        result = daily_refresh_like.execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        context = build_run_status_sensor_context(
            sensor_name="failed_runs_report",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
            resources={"storage": PlatformStorage(data_dir=str(tmp_path))},
        ).for_run_failure()
        failed_runs_report(context)
    (line,) = (tmp_path / "reports" / "failed_runs.jsonl").read_text().splitlines()
    entry = json.loads(line)
    assert entry["job"] == "daily_refresh_like" and entry["run_id"] == result.run_id
    assert entry["failed_steps"] == ["materialize_online_store"]
    assert entry["tags"] == {"recsys/day": "2026-09-09"}
    assert "materialize_online_store" in entry["error"]


def test_feast_steps_retry_with_backoff():
    graph = defs.resolve_asset_graph()
    for name in ("feast_registry", "feast_online", "feast_model_outputs"):
        key = next(k for k in graph.get_all_asset_keys() if k.to_user_string() == name)
        policy = graph.get(key).assets_def.op.retry_policy
        assert policy.max_retries == 2 and policy.backoff is not None, name


def test_recommender_settings_are_checked_in_code_and_from_run_config(monkeypatch):
    from dagster import DagsterResourceFunctionError, EnvVar, asset, materialize

    from dagster_project.resources import RecommenderSettings

    assert RecommenderSettings().test_days == 3
    with pytest.raises(ValueError) as error:  # pydantic's ValidationError is a ValueError
        RecommenderSettings(test_days=0, top_k=0, epochs=-1, device="gpu")
    assert (
        "RecommenderSettings: test_days must be at least 1, not 0; top_k must be at least 1, "
        "not 0; epochs must be at least 0, not -1; device must be auto, cpu, cuda, cuda:N or "
        "mps, not 'gpu'"
    ) in str(error.value)
    with pytest.raises(ValueError, match=r"dim must be divisible by heads \(2\), not 63"):
        RecommenderSettings(dim=63)  # the model's config for the settings is checked too

    @asset
    def days(settings: RecommenderSettings) -> int:
        return settings.test_days

    # From run config (the launchpad): refused as the run starts, before any step runs.
    bad = {"resources": {"settings": {"config": {"test_days": 0}}}}
    with pytest.raises(DagsterResourceFunctionError) as error:
        materialize([days], resources={"settings": RecommenderSettings()}, run_config=bad)
    assert "test_days must be at least 1, not 0" in str(error.value.__cause__)
    # An EnvVar is checked once the run has resolved it.
    monkeypatch.setenv("RECSYS_TEST_DAYS", "5")
    settings = RecommenderSettings(test_days=EnvVar.int("RECSYS_TEST_DAYS"))
    assert materialize([days], resources={"settings": settings}).output_for_node("days") == 5


@op
def step_process() -> dict:
    """The step's parent process, and which of the modules the fork server preloads this
    process had when the step ran (the job's module imports the definitions itself, but
    none of the libraries after them)."""
    return {
        "parent": os.getppid(),
        "preloaded": [name for name in STEP_PRELOAD if name in sys.modules],
    }


def step_parent_job() -> JobDefinition:
    """A one-step job on the platform's executor (rebuilt by name in the step's process)."""

    @job(executor_def=platform_executor())
    def step_parent() -> None:
        step_process()

    return step_parent


@pytest.mark.pipeline  # a real run, its step in a process of its own
def test_runs_fork_their_steps_from_a_preloaded_server_unless_told_otherwise(tmp_path):
    """With $RECSYS_EXECUTOR unset (this suite's environment) a run's step processes are
    children of a fork server, not of the run's process (Dagster's own default spawns them
    from the run: seconds of imports a step), and they start with the code and the libraries
    steps load on first use (GX, scikit-learn, Feast's engine and stores) already imported."""
    assert not os.environ.get(EXECUTOR_ENV)
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        job_def = build_reconstructable_job("tests.test_automation", "step_parent_job")
        with execute_job(job_def, instance=instance) as result:
            assert result.success
            step = result.output_for_node("step_process")
    assert step["parent"] != os.getpid()
    assert b"forkserver" in Path(f"/proc/{step['parent']}/cmdline").read_bytes()
    assert step["preloaded"] == list(STEP_PRELOAD)
    # the ones that cost a step seconds each stay on the list
    assert {"dagster_project.quality.validation", "sklearn.ensemble"} <= set(STEP_PRELOAD)


def test_the_celery_profile_needs_its_broker_and_looks_for_finished_steps_often(monkeypatch):
    from dagster_celery import core_execution_loop

    monkeypatch.setenv(EXECUTOR_ENV, "celery")
    monkeypatch.delenv(CELERY_BROKER_ENV, raising=False)
    with pytest.raises(ValueError, match=f"needs {CELERY_BROKER_ENV}"):
        platform_executor()
    monkeypatch.setenv(CELERY_BROKER_ENV, "redis://127.0.0.1:6379/0")
    monkeypatch.setattr(core_execution_loop, "TICK_SECONDS", 1)  # dagster-celery's own
    platform_executor()
    # a step waiting for another starts within 0.1 s of it, not up to a second later
    assert core_execution_loop.TICK_SECONDS == CELERY_POLL_SECONDS <= 0.1
