"""Group detection: a first bot score per user, with reasons in words."""

import pandas as pd
from dagster import MaterializeResult, MetadataValue, asset

from dagster_project.assets._common import OWNERS, table_metadata
from dagster_project.detection.bots import BOT_THRESHOLD, score_users, user_traffic_features
from dagster_project.resources import PlatformStorage
from dagster_project.storage import write_parquet_atomic


@asset(
    group_name="detection",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    deps=["events_clean"],
    description="Per user: traffic features, bot score in [0, 1], the bot flag and its top reasons.",
)
def user_traffic_scores(storage: PlatformStorage) -> MaterializeResult:
    out = storage.layout()
    events = pd.read_parquet(
        out.table("events_clean"), columns=["user_id", "item_id", "event_type", "event_time"]
    )
    scores = score_users(user_traffic_features(events))
    path = write_parquet_atomic(scores, out.table("user_traffic_scores"))
    flagged = scores[scores["is_bot"]].sort_values("bot_score", ascending=False)
    return MaterializeResult(
        metadata={
            **table_metadata(scores, path),
            "threshold": BOT_THRESHOLD,
            "flagged_users": len(flagged),
            "flagged_share_of_users": float(len(flagged) / max(len(scores), 1)),
            "flagged_share_of_events": float(
                flagged["events"].sum() / max(scores["events"].sum(), 1)
            ),
            "top_flagged": MetadataValue.md(
                flagged.head(10)[["user_id", "bot_score", "events", "reasons"]].to_markdown(
                    index=False
                )
                if len(flagged)
                else "none"
            ),
        }
    )
