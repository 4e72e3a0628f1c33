"""Group behaviour: validated tables without bot traffic, and an audit of what was excluded."""

from collections.abc import Iterator
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from dagster import AssetIn, AssetOut, Config, MetadataValue, Output, asset, multi_asset

from dagster_project.assets._common import OWNERS
from dagster_project.detection.exclusion import exclude_flagged_users
from dagster_project.features.catalog import catalog_items
from dagster_project.plots import figure_markdown
from dagster_project.resources import PlatformStorage


class BehaviourConfig(Config):
    exclude_bots: bool = True


def _events_per_day_plot(per_day: pd.DataFrame) -> MetadataValue:
    """Events per day by type (log scale: purchases are a few percent of views), from the
    counts (day, event_type, events); a line saying so when no event was kept."""
    if per_day.empty:
        return MetadataValue.md("no events kept")
    daily = per_day.pivot_table(index="day", columns="event_type", values="events", aggfunc="sum")
    fig, ax = plt.subplots(figsize=(8, 2.8))
    daily.plot(ax=ax, logy=True)
    ax.set_xlabel("")
    ax.set_ylabel("events")
    return MetadataValue.md(figure_markdown(fig, "events per day by type"))


@multi_asset(
    group_name="behaviour",
    outs={
        "behaviour_events": AssetOut(
            owners=OWNERS,
            kinds={"parquet", "duckdb"},
            description="Validated behaviour events with flagged bot traffic removed (switchable).",
        ),
        "behaviour_exclusions": AssetOut(
            owners=OWNERS,
            kinds={"parquet", "pandas"},
            description="The audit of the bot filter: each excluded user, its events, score, "
            "pattern and reasons.",
        ),
    },
)
def behaviour_events(
    config: BehaviourConfig,
    storage: PlatformStorage,
    events_clean: Path,
    user_traffic_scores: pd.DataFrame,
) -> Iterator[Output]:
    kept_path = storage.layout().asset_table("behaviour_events")
    split = exclude_flagged_users(events_clean, user_traffic_scores, kept_path, config.exclude_bots)
    yield Output(
        kept_path,
        "behaviour_events",
        metadata={
            "events_per_day": _events_per_day_plot(split.events_per_day),
            "bot_filter_on": config.exclude_bots,
            "events_excluded": split.events_excluded,
            "users_excluded": len(split.audit),
        },
    )
    yield Output(split.audit, "behaviour_exclusions")


@asset(
    group_name="behaviour",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    ins={"events_clean": AssetIn(metadata={"columns": ["item_id", "event_time"]})},
    description="The validated catalog with first_seen (listing time or first event, whichever is earlier).",
)
def items(items_clean: pd.DataFrame, events_clean: pd.DataFrame) -> pd.DataFrame:
    return catalog_items(items_clean, events_clean)
