"""The one Definitions object: assets, checks, jobs, schedules, sensors and resources."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from dagster import (
    Definitions,
    ExecutorDefinition,
    define_asset_job,
    load_asset_checks_from_modules,
    load_assets_from_modules,
)

from dagster_project import automation
from dagster_project.assets import (
    behaviour,
    detection,
    evaluation,
    feature_store,
    features,
    ingest,
    quality,
    recommender,
    reports,
)
from dagster_project.assets._common import EVENT_DAYS, MODEL_IO
from dagster_project.executors import platform_executor
from dagster_project.io_managers import ParquetTables, SavedModels
from dagster_project.resources import (
    FeastResource,
    PlatformStorage,
    QualityResource,
    RecommenderSettings,
)
from dagster_project.settings import layout, use_private_umask
from dagster_project.sources.manifest import source_window

ASSET_MODULES = [
    ingest,
    quality,
    detection,
    behaviour,
    features,
    feature_store,
    recommender,
    evaluation,
    reports,
]

all_assets = automation.with_automation(load_assets_from_modules(ASSET_MODULES))
all_checks = [*load_asset_checks_from_modules(ASSET_MODULES), *automation.freshness_checks]

full_pipeline = define_asset_job(
    "full_pipeline",
    tags=automation.WRITES_DATA,
    selection="*",
    description="Ingest, clean, detect, build features, serve, train, evaluate.",
)


# Run config for scripted runs: each step's own messages, not Dagster's per-event DEBUG lines.
INFO_LOGGING = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def every_event_day(data_dir: str | Path) -> dict[str, str]:
    """Run tags that make one run cover every event day of the data in `data_dir`: a single-run
    backfill of the daily partitions, from the first to the export's last day (or yesterday)."""
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    _, end = source_window(layout(data_dir).landing)
    keys = EVENT_DAYS.get_partition_keys()
    last_data_day = f"{end - pd.Timedelta(1, 'ns'):%Y-%m-%d}"
    last = max(keys[0], min(last_data_day, keys[-1]))
    return {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: last}


def platform_resources(data_dir: str = "", **settings: float | str) -> dict:
    """The resources for one data directory ('' = $RECSYS_DATA_DIR or ./data)."""
    storage = PlatformStorage(data_dir=data_dir)
    recommender = RecommenderSettings(**settings)
    return {
        "storage": storage,
        "quality": QualityResource(),
        "feast": FeastResource(data_dir=data_dir),
        "settings": recommender,
        "io_manager": ParquetTables(storage=storage),
        MODEL_IO: SavedModels(storage=storage, settings=recommender),
    }


def platform_definitions(
    data_dir: str = "", executor: ExecutorDefinition | None = None, **settings: float | str
) -> Definitions:
    """Every asset, check, job, schedule and sensor, with the resources for one data
    directory (`platform_resources`), on `executor` (None: Dagster's default)."""
    return Definitions(
        assets=all_assets,
        asset_checks=all_checks,
        jobs=[full_pipeline, *automation.all_jobs],
        schedules=automation.all_schedules,
        sensors=automation.all_sensors,
        resources=platform_resources(data_dir, **settings),
        executor=executor,
    )


# The code server, the daemon and `dagster dev` load this module: their files are private.
use_private_umask()
# $RECSYS_EXECUTOR: multiprocess (also when unset), in_process or celery
defs = platform_definitions(executor=platform_executor())
