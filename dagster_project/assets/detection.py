"""Group detection: bot scores per user and session, and item outliers, with reasons in words."""

import matplotlib.pyplot as plt
import pandas as pd
import polars as pl
from dagster import MaterializeResult, MetadataValue, asset

from dagster_project.assets._common import OWNERS, table_metadata
from dagster_project.detection.bots import (
    BOT_THRESHOLD,
    DETECTOR_VERSION,
    score_sessions,
    score_users,
    traffic_features,
)
from dagster_project.detection.items import item_outliers as find_item_outliers
from dagster_project.plots import figure_markdown
from dagster_project.resources import PlatformStorage
from dagster_project.storage import write_parquet_atomic


def _score_histogram(scores: pd.DataFrame) -> str:
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.hist(scores["bot_score"], bins=50, log=True, color="#4c72b0")
    ax.axvline(BOT_THRESHOLD, color="#c44e52", linestyle="--", label="threshold")
    ax.set_xlabel("bot score")
    ax.set_ylabel("users (log)")
    ax.legend()
    return figure_markdown(fig, "bot score distribution")


@asset(
    group_name="detection",
    owners=OWNERS,
    kinds={"parquet", "polars", "scikitlearn"},
    deps=["events_clean", "items_clean"],
    description="Per user: traffic features, bot score in [0, 1] (robust z patterns + isolation "
    "forest), the flag, the pattern matched and the top reasons in words. Per session: "
    "tables/session_traffic_scores.parquet.",
)
def user_traffic_scores(storage: PlatformStorage) -> MaterializeResult:
    out = storage.layout()
    events = pl.scan_parquet(out.table("events_clean")).select(
        "user_id", "item_id", "event_type", "event_time", "query"
    )
    categories = pl.read_parquet(out.table("items_clean"), columns=["item_id", "category"])
    users, sessions = traffic_features(events, categories)
    scores = score_users(users)
    path = write_parquet_atomic(scores, out.table("user_traffic_scores"))
    session_scores = score_sessions(sessions, scores)
    write_parquet_atomic(session_scores, out.table("session_traffic_scores"))
    flagged = scores[scores["is_bot"]].sort_values("bot_score", ascending=False)
    return MaterializeResult(
        metadata={
            **table_metadata(scores, path),
            "detector_version": DETECTOR_VERSION,
            "threshold": BOT_THRESHOLD,
            "flagged_users": len(flagged),
            "flagged_share_of_users": float(len(flagged) / max(len(scores), 1)),
            "flagged_share_of_events": float(
                flagged["events"].sum() / max(scores["events"].sum(), 1)
            ),
            "flagged_by_pattern": MetadataValue.json(flagged["pattern"].value_counts().to_dict()),
            "sessions_scored": len(session_scores),
            "sessions_flagged": int(session_scores["is_bot_session"].sum()),
            "score_distribution": MetadataValue.md(_score_histogram(scores)),
            "top_flagged": MetadataValue.md(
                flagged.head(15)[
                    ["user_id", "bot_score", "events", "pattern", "reasons"]
                ].to_markdown(index=False)
                if len(flagged)
                else "none"
            ),
        }
    )


@asset(
    group_name="detection",
    owners=OWNERS,
    kinds={"parquet", "polars"},
    deps=["events_clean", "items_clean", "user_traffic_scores"],
    description="Per catalog item: price against its category (robust z), its busiest day "
    "against its usual share (popularity spike), and the share of its traffic from flagged "
    "users; the flags and reasons in words.",
)
def item_outliers(storage: PlatformStorage) -> MaterializeResult:
    out = storage.layout()
    events = pl.scan_parquet(out.table("events_clean")).select("user_id", "item_id", "event_time")
    catalog = pl.read_parquet(out.table("items_clean"), columns=["item_id", "category", "price"])
    scores = pl.read_parquet(out.table("user_traffic_scores"), columns=["user_id", "is_bot"])
    frame = find_item_outliers(events, catalog, scores.filter(pl.col("is_bot"))["user_id"])
    path = write_parquet_atomic(frame, out.table("item_outliers"))
    flagged = frame[frame["is_outlier"]].sort_values("events", ascending=False)
    return MaterializeResult(
        metadata={
            **table_metadata(frame, path),
            "price_outliers": int(frame["price_outlier"].sum()),
            "popularity_spikes": int(frame["popularity_spike"].sum()),
            "bot_driven_items": int(frame["bot_driven"].sum()),
            "top_outliers": MetadataValue.md(
                flagged.head(15)[["item_id", "category", "events", "reasons"]].to_markdown(
                    index=False
                )
                if len(flagged)
                else "none"
            ),
        }
    )
