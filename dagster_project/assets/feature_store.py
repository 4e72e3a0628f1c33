"""Group feature_store: apply the Feast definitions and materialize features to the online store."""

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from dagster_project.assets._common import OWNERS
from dagster_project.resources import FeastResource, PlatformStorage

USER_VIEW = "user_behaviour"
ITEM_VIEW = "item_stats"
TEXT_VIEW = "item_text_embedding"
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
    group_name="feature_store",
    owners=OWNERS,
    kinds={"feast"},
    deps=["user_features", "item_features", "item_text_embeddings"],
    description="`feast apply` of feature_repo/: entities, sources, feature views and services in the registry.",
)
def feast_registry(context: AssetExecutionContext, feast: FeastResource) -> MaterializeResult:
    output = feast.apply()
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


@asset(
    group_name="feature_store",
    owners=OWNERS,
    kinds={"feast", "sqlite"},
    deps=["feast_registry"],
    description="Latest feature values of every user and item materialized into the online store.",
)
def feast_online(
    context: AssetExecutionContext, feast: FeastResource, storage: PlatformStorage
) -> MaterializeResult:
    out = storage.layout()
    stamps = pd.concat(
        [
            pd.read_parquet(out.feature_table(t), columns=["event_timestamp"])
            for t in ("user_features", "item_features", "item_text_embedding")
        ]
    )["event_timestamp"]
    start, end = (
        stamps.min().to_pydatetime(),
        (stamps.max() + pd.Timedelta(seconds=1)).to_pydatetime(),
    )
    store = feast.store()
    views = [USER_VIEW, ITEM_VIEW, TEXT_VIEW]
    store.materialize(start_date=start, end_date=end, feature_views=views)
    context.log.info(f"materialized {', '.join(views)} for {start:%Y-%m-%d} .. {end:%Y-%m-%d}")
    return MaterializeResult(
        metadata={
            "start": start.isoformat(),
            "end": end.isoformat(),
            "online_store": store.config.online_store.type,
        }
    )


@asset_check(
    asset=feast_online,
    blocking=True,
    description="For a sample of users, the online value equals the latest offline snapshot.",
)
def online_matches_offline(feast: FeastResource, storage: PlatformStorage) -> AssetCheckResult:
    offline = pd.read_parquet(storage.layout().feature_table("user_features"))
    latest = offline.sort_values("event_timestamp").groupby("user_id").tail(1).set_index("user_id")
    sample = latest.sample(min(50, len(latest)), random_state=0)
    store = feast.store()
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
    texts = pd.read_parquet(storage.layout().feature_table("item_text_embedding"))
    texts = texts.sample(min(20, len(texts)), random_state=0).set_index("item_id")
    online_texts = store.get_online_features(
        features=[f"{TEXT_VIEW}:embedding"], entity_rows=[{"item_id": i} for i in texts.index]
    ).to_dict()
    for item, vector in zip(online_texts["item_id"], online_texts["embedding"], strict=True):
        if vector is None or not np.allclose(vector, texts.loc[item, "embedding"], atol=1e-6):
            mismatches.append(f"{item}.embedding: online vector differs from the offline one")
    return AssetCheckResult(
        passed=not mismatches,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "entities_sampled": len(sample) + len(texts),
            "mismatches": len(mismatches),
            "examples": MetadataValue.text("\n".join(mismatches[:10]) or "none"),
        },
    )
