"""Group features: user and item feature snapshots as Parquet, the files Feast's sources read."""

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    MaterializeResult,
    asset,
    asset_check,
)

from dagster_project.assets._common import OWNERS, suite_check_result, table_metadata
from dagster_project.features.build import item_features as build_item_features
from dagster_project.features.build import user_features as build_user_features
from dagster_project.resources import PlatformStorage, QualityResource
from dagster_project.storage import write_parquet_atomic


@asset(
    group_name="features",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    deps=["behaviour_events", "user_traffic_scores"],
    description="Per user and active day: cumulative behaviour counts, conversion, spend, tenure, "
    "bot score. event_timestamp = end of the day summarised.",
)
def user_features(context: AssetExecutionContext, storage: PlatformStorage) -> MaterializeResult:
    out = storage.layout()
    events = pd.read_parquet(out.table("behaviour_events"))
    scores = pd.read_parquet(out.table("user_traffic_scores"), columns=["user_id", "bot_score"])
    frame = build_user_features(events, scores, pd.Timestamp.now(tz="UTC"))
    path = write_parquet_atomic(frame, out.feature_table("user_features"))
    return MaterializeResult(
        metadata={**table_metadata(frame, path), "users": frame["user_id"].nunique()}
    )


@asset(
    group_name="features",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    deps=["behaviour_events", "items"],
    description="Per item and active day: cumulative popularity, funnel rates, price, price bucket, category.",
)
def item_features(storage: PlatformStorage) -> MaterializeResult:
    out = storage.layout()
    events = pd.read_parquet(out.table("behaviour_events"))
    catalog = pd.read_parquet(out.table("items"))
    frame = build_item_features(events, catalog, pd.Timestamp.now(tz="UTC"))
    path = write_parquet_atomic(frame, out.feature_table("item_features"))
    return MaterializeResult(
        metadata={**table_metadata(frame, path), "items": frame["item_id"].nunique()}
    )


def _feature_suite(
    table: str, storage: PlatformStorage, quality: QualityResource, run_id: str
) -> AssetCheckResult:
    runner = quality.runner(storage)
    outcome = runner.validate_table(table, storage.layout().feature_table(table), run_name=run_id)
    return suite_check_result(outcome)


@asset_check(
    asset=user_features, blocking=True, description="GX suite expectations/user_features.json."
)
def user_features_suite(
    context: AssetCheckExecutionContext, storage: PlatformStorage, quality: QualityResource
) -> AssetCheckResult:
    return _feature_suite("user_features", storage, quality, context.run.run_id)


@asset_check(
    asset=item_features, blocking=True, description="GX suite expectations/item_features.json."
)
def item_features_suite(
    context: AssetCheckExecutionContext, storage: PlatformStorage, quality: QualityResource
) -> AssetCheckResult:
    return _feature_suite("item_features", storage, quality, context.run.run_id)
