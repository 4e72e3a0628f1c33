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
    deps=["behaviour_events", "user_traffic_scores", "items"],
    description="Per user and snapshot day: behaviour counts (all time, 1, 7, 30 days), "
    "conversion, recency, spend, tenure, distinct and top category, bot score. "
    "event_timestamp = end of the day summarised.",
)
def user_features(context: AssetExecutionContext, storage: PlatformStorage) -> MaterializeResult:
    out = storage.layout()
    events = pd.read_parquet(out.table("behaviour_events"))
    scores = pd.read_parquet(out.table("user_traffic_scores"), columns=["user_id", "bot_score"])
    categories = pd.read_parquet(out.table("items"), columns=["item_id", "category"])
    frame = build_user_features(events, scores, pd.Timestamp.now(tz="UTC"), categories)
    path = write_parquet_atomic(frame, out.feature_table("user_features"))
    return MaterializeResult(
        metadata={**table_metadata(frame, path), "users": frame["user_id"].nunique()}
    )


@asset(
    group_name="features",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    deps=["behaviour_events", "items", "item_outliers"],
    description="Per item and snapshot day: popularity (all time, 1, 7, 30 days), funnel rates, "
    "price, price bucket, price-outlier flag, category.",
)
def item_features(storage: PlatformStorage) -> MaterializeResult:
    out = storage.layout()
    events = pd.read_parquet(out.table("behaviour_events"))
    catalog = pd.read_parquet(out.table("items"))
    outliers = pd.read_parquet(out.table("item_outliers"), columns=["item_id", "price_outlier"])
    frame = build_item_features(events, catalog, pd.Timestamp.now(tz="UTC"), outliers)
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
