"""Group behaviour: validated tables without bot traffic, and an audit of what was excluded."""

import matplotlib.pyplot as plt
import pandas as pd
from dagster import Config, MaterializeResult, MetadataValue, asset

from dagster_project.assets._common import OWNERS, table_metadata
from dagster_project.detection.exclusion import exclude_flagged_users
from dagster_project.plots import figure_markdown
from dagster_project.resources import PlatformStorage
from dagster_project.storage import write_parquet_atomic


class BehaviourConfig(Config):
    exclude_bots: bool = True


def _events_per_day_plot(events: pd.DataFrame) -> MetadataValue:
    """Events per day by type (log scale: purchases are a few percent of views)."""
    daily = events.groupby([events["event_time"].dt.floor("D"), "event_type"]).size().unstack()
    fig, ax = plt.subplots(figsize=(8, 2.8))
    daily.plot(ax=ax, logy=True)
    ax.set_xlabel("")
    ax.set_ylabel("events")
    return MetadataValue.md(figure_markdown(fig, "events per day by type"))


@asset(
    group_name="behaviour",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    deps=["events_clean", "user_traffic_scores"],
    description="Validated behaviour events with flagged bot traffic removed (switchable); the "
    "exclusions are audited in tables/behaviour_exclusions.parquet.",
)
def behaviour_events(config: BehaviourConfig, storage: PlatformStorage) -> MaterializeResult:
    out = storage.layout()
    events = pd.read_parquet(out.table("events_clean"))
    scores = pd.read_parquet(out.table("user_traffic_scores"))
    split = exclude_flagged_users(events, scores, config.exclude_bots)
    write_parquet_atomic(split.audit, out.table("behaviour_exclusions"))
    kept = split.kept
    path = write_parquet_atomic(kept, out.table("behaviour_events"))
    return MaterializeResult(
        metadata={
            **table_metadata(kept, path),
            "events_per_day": _events_per_day_plot(kept),
            "bot_filter_on": config.exclude_bots,
            "events_excluded": split.events_excluded,
            "users_excluded": len(split.audit),
        }
    )


@asset(
    group_name="behaviour",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    deps=["items_clean", "events_clean"],
    description="The validated catalog with first_seen (listing time or first event, whichever is earlier).",
)
def items(storage: PlatformStorage) -> MaterializeResult:
    out = storage.layout()
    catalog = pd.read_parquet(out.table("items_clean"))
    events = pd.read_parquet(out.table("events_clean"), columns=["item_id", "event_time"])
    first_event = events.groupby("item_id")["event_time"].min()
    catalog["first_seen"] = pd.concat(
        [catalog["listed_at"], catalog["item_id"].map(first_event)], axis=1
    ).min(axis=1)
    catalog["first_seen"] = catalog["first_seen"].fillna(catalog["ingested_at"])
    frame = catalog[
        ["item_id", "title", "description", "category", "brand", "price", "available", "first_seen"]
    ]
    path = write_parquet_atomic(frame, out.table("items"))
    return MaterializeResult(metadata=table_metadata(frame, path))
