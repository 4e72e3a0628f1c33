"""Group feature_store: apply the Feast definitions and materialize features to the online store."""

from datetime import datetime

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    BackfillPolicy,
    Backoff,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    TimeWindow,
    asset,
    asset_check,
)

from dagster_project.assets._common import EVENT_DAYS, OWNERS
from dagster_project.features.recent import RECENT_VIEW
from dagster_project.privacy import delete_online_rows, opted_out_users
from dagster_project.resources import FeastResource, PlatformStorage
from dagster_project.settings import first_event_day

USER_VIEW = "user_behaviour"
ITEM_VIEW = "item_stats"
TEXT_VIEW = "item_text_embedding"
RECOMMENDATIONS_VIEW = "user_recommendations"
# A whole Feast step is retried twice (after 30 s, then 60 s) when it still fails after the
# in-step retries of FeastResource.materialize: a store that was restarting gets time.
FEAST_RETRIES = RetryPolicy(max_retries=2, delay=30, backoff=Backoff.EXPONENTIAL)
MODEL_VIEWS = ["user_embedding", "item_embedding", RECOMMENDATIONS_VIEW]
# The feature file behind each view (feature_repo/data_sources.py).
SOURCE_TABLE = {
    USER_VIEW: "user_features",
    ITEM_VIEW: "item_features",
    TEXT_VIEW: "item_text_embedding",
    RECENT_VIEW: RECENT_VIEW,
    **{v: v for v in MODEL_VIEWS},
}
CONSISTENCY_FEATURES = [
    "views",
    "carts",
    "purchases",
    "views_7d",
    "spend_30d",
    "recency_days",
    "bot_score",
]


@asset(
    retry_policy=FEAST_RETRIES,
    group_name="feature_store",
    owners=OWNERS,
    kinds={"feast"},
    deps=["user_features", "item_features", "item_text_embedding", "user_recent_activity"],
    description="`feast apply` of feature_repo/: entities, sources, feature views and services in the registry.",
)
def feast_registry(context: AssetExecutionContext, feast: FeastResource) -> MaterializeResult:
    output = feast.apply(log=context.log.info)
    summary = [
        line
        for line in output.splitlines()
        if line.startswith(("Applying", "Created", "Updated", "Deleted", "Deploying", "No changes"))
    ]
    context.log.info("feast apply: " + "; ".join(summary or ["done"]))
    store = feast.store()
    views = sorted(v.name for v in store.list_feature_views())
    services = sorted(s.name for s in store.list_feature_services())
    return MaterializeResult(
        metadata={
            "feature_views": ", ".join(views),
            "feature_services": ", ".join(services),
            "registry": MetadataValue.path(str(store.config.registry.path)),
            "apply_output": MetadataValue.text(output[-2000:]),
        }
    )


def _materialize(
    context: AssetExecutionContext,
    feast: FeastResource,
    storage: PlatformStorage,
    views: list[str],
    days: TimeWindow | None = None,
) -> MaterializeResult:
    """Materialize `views` (each backed by the feature file of the same name): the rows of the
    event `days` when given (the snapshots of day D are stamped D+1 00:00; Feast's window is
    inclusive), else over the whole span of their event timestamps. A window that starts on
    the first event day also takes every earlier row (catalog listings before it)."""
    out = storage.layout()
    stamps = {
        view: pd.read_parquet(out.feature_table(SOURCE_TABLE[view]), columns=["event_timestamp"])[
            "event_timestamp"
        ]
        for view in views
    }
    every = pd.concat(stamps.values())
    start = every.min().to_pydatetime()
    end = (every.max() + pd.Timedelta(seconds=1)).to_pydatetime()
    if days is not None:
        first_day = pd.Timestamp(first_event_day(), tz="UTC")
        if pd.Timestamp(days.start) > first_day:
            start = (pd.Timestamp(days.start) + pd.Timedelta(microseconds=1)).to_pydatetime()
        end = pd.Timestamp(days.end).to_pydatetime()
    context.log.info(f"materializing {', '.join(views)} for {start:%Y-%m-%d} .. {end:%Y-%m-%d} ...")
    store = feast.materialize(views, start, end, log=context.log.warning)
    context.log.info(f"materialized {', '.join(views)} for {start:%Y-%m-%d} .. {end:%Y-%m-%d}")
    if days is not None and TEXT_VIEW in views:
        _push_later_text_vectors(context, feast, stamps[TEXT_VIEW].max(), end)
    return MaterializeResult(
        metadata={
            "feature_views": ", ".join(views),
            "start": start.isoformat(),
            "end": end.isoformat(),
            "online_store": store.config.online_store.type,
        }
    )


def _push_later_text_vectors(
    context: AssetExecutionContext, feast: FeastResource, newest: pd.Timestamp, end: datetime
) -> None:
    """Text vectors stamped after the window `end` (up to the `newest` stamp), pushed as well:
    a new or changed vector (an edited text) is stamped when it was computed
    (`features.text.vector_stamps`), after the windows of the event days already run, which
    the next days' runs never cover."""
    if pd.isna(newest) or newest <= pd.Timestamp(end):
        return
    later = (newest + pd.Timedelta(seconds=1)).to_pydatetime()
    context.log.info(f"materializing {TEXT_VIEW} stamped after {end:%Y-%m-%d} (edited texts)")
    feast.materialize([TEXT_VIEW], end, later, log=context.log.warning)


@asset(
    retry_policy=FEAST_RETRIES,
    group_name="feature_store",
    owners=OWNERS,
    kinds={"feast", "sqlite"},
    partitions_def=EVENT_DAYS,
    backfill_policy=BackfillPolicy.single_run(),
    deps=["feast_registry"],
    description="Per event day: that day's user and item snapshots (and the text vectors "
    "stamped in it or since: new or edited item texts) materialized into the online store, "
    "which so holds the latest values of every user and item. Run the days in order (a "
    "backfill does).",
)
def feast_online(
    context: AssetExecutionContext, feast: FeastResource, storage: PlatformStorage
) -> MaterializeResult:
    return _materialize(
        context,
        feast,
        storage,
        [USER_VIEW, ITEM_VIEW, TEXT_VIEW, RECENT_VIEW],
        context.partition_time_window,
    )


@asset(
    retry_policy=FEAST_RETRIES,
    group_name="feature_store",
    owners=OWNERS,
    kinds={"feast", "sqlite"},
    deps=["feast_registry", "recommendations", "model_vectors"],
    description="The trained model's outputs in the online store: user and item vectors and "
    "top-K recommendations per user (service `recommendations`).",
)
def feast_model_outputs(
    context: AssetExecutionContext, feast: FeastResource, storage: PlatformStorage
) -> MaterializeResult:
    result = _materialize(context, feast, storage, MODEL_VIEWS)
    # Recommendations an earlier run served to users who have since opted out.
    removed = delete_online_rows(
        feast.store(), [RECOMMENDATIONS_VIEW], opted_out_users(storage.layout())
    )
    context.log.info(f"opt-out: removed online recommendations of {removed} user(s)")
    return MaterializeResult(metadata={**result.metadata, "opted_out_users_removed": removed})


def _list_mismatches(
    store, view: str, field: str, key: str, offline: pd.DataFrame, sample: int
) -> list[str]:
    """Entities of a sample whose online list feature (a vector or top-K list) differs from the
    offline one."""
    rows = offline.sample(min(sample, len(offline)), random_state=0).set_index(key)
    online = store.get_online_features(
        features=[f"{view}:{field}"], entity_rows=[{key: k} for k in rows.index]
    ).to_dict()
    mismatches = []
    for entity, got in zip(online[key], online[field], strict=True):
        want = rows.loc[entity, field]
        same = got is not None and len(got) == len(want)
        if same and np.asarray(want).dtype.kind == "f":
            same = np.allclose(got, want, atol=1e-6)
        elif same:
            same = list(got) == list(want)
        if not same:
            mismatches.append(f"{entity}.{view}.{field}: online differs from offline")
    return mismatches


# What to do when the online store differs from the offline tables (for instance a text vector
# that changed before changed vectors were stamped when computed, item_text_embedding). Redis
# keeps a row unless a newer one comes, so rows written again with the same stamps need the
# old ones gone first; SQLite overwrites them.
FEATURES_REMEDY = (
    "materialize the features again over every event day: `recsys backfill` (its first day "
    "takes every earlier row); on Redis, remove the project's keys first (`feast teardown`, "
    "then `feast apply`)"
)
MODEL_OUTPUTS_REMEDY = (
    "materialize feast_model_outputs again; on Redis, remove the project's keys first "
    "(`feast teardown`, then `feast apply`, then the features as well)"
)


def _check_result(sampled: int, mismatches: list[str], remedy: str) -> AssetCheckResult:
    metadata = {
        "entities_sampled": sampled,
        "mismatches": len(mismatches),
        "examples": MetadataValue.text("\n".join(mismatches[:10]) or "none"),
    }
    if mismatches:
        metadata["remedy"] = remedy
    return AssetCheckResult(
        passed=not mismatches, severity=AssetCheckSeverity.ERROR, metadata=metadata
    )


@asset_check(
    asset=feast_online,
    blocking=True,
    description="For a sample of users, the online value equals the latest offline snapshot.",
)
def online_matches_offline(feast: FeastResource, storage: PlatformStorage) -> AssetCheckResult:
    store = feast.store()
    # The online store holds the days materialized so far: compare with the offline rows then.
    materialized = max(
        end for _, end in store.get_feature_view(USER_VIEW).materialization_intervals
    )
    offline = pd.read_parquet(
        storage.layout().feature_table("user_features"),
        columns=["user_id", "event_timestamp", *CONSISTENCY_FEATURES],
    )
    offline = offline[offline["event_timestamp"] <= pd.Timestamp(materialized)]
    latest = offline.sort_values("event_timestamp").groupby("user_id").tail(1).set_index("user_id")
    sample = latest.sample(min(50, len(latest)), random_state=0)
    online = (
        store.get_online_features(
            features=[f"{USER_VIEW}:{f}" for f in CONSISTENCY_FEATURES],
            entity_rows=[{"user_id": u} for u in sample.index],
        )
        .to_df()
        .set_index("user_id")
    )
    mismatches = []
    for f in CONSISTENCY_FEATURES:
        got = online[f].reindex(sample.index).astype(float)
        diff = ~np.isclose(got.to_numpy(), sample[f].astype(float).to_numpy(), rtol=1e-5, atol=1e-6)
        mismatches += [
            f"{u}.{f}: online {g} vs offline {o}"
            for u, g, o in zip(sample.index[diff], got[diff], sample[f][diff], strict=True)
        ]
    texts = pd.read_parquet(
        storage.layout().feature_table("item_text_embedding"), columns=["item_id", "embedding"]
    )
    mismatches += _list_mismatches(store, TEXT_VIEW, "embedding", "item_id", texts, 20)
    return _check_result(len(sample) + min(20, len(texts)), mismatches, FEATURES_REMEDY)


@asset_check(
    asset=feast_model_outputs,
    blocking=True,
    description="For a sample of users and items, the online vectors and top-K lists equal the "
    "model's offline outputs.",
)
def model_outputs_online_match_offline(
    feast: FeastResource, storage: PlatformStorage
) -> AssetCheckResult:
    out, store = storage.layout(), feast.store()
    mismatches, sampled = [], 0
    for view, field, key in [
        ("user_recommendations", "item_ids", "user_id"),
        ("user_recommendations", "scores", "user_id"),
        ("user_embedding", "embedding", "user_id"),
        ("item_embedding", "embedding", "item_id"),
    ]:
        offline = pd.read_parquet(out.feature_table(SOURCE_TABLE[view]))
        mismatches += _list_mismatches(store, view, field, key, offline, 30)
        sampled += min(30, len(offline))
    return _check_result(sampled, mismatches, MODEL_OUTPUTS_REMEDY)
