"""Group detection: bot scores per user and session, and item outliers, with reasons in words."""

from collections.abc import Iterator

import matplotlib.pyplot as plt
import pandas as pd
import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    MetadataValue,
    Output,
    asset,
    multi_asset,
)

from dagster_project.assets._common import OWNERS
from dagster_project.detection.bots import BOT_THRESHOLD, DETECTOR_VERSION
from dagster_project.detection.detector import detect_in_window, item_outliers_in_window
from dagster_project.detection.history import score_history
from dagster_project.plots import figure_markdown
from dagster_project.resources import PlatformStorage


def _score_histogram(scores: pd.DataFrame) -> str:
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.hist(scores["bot_score"], bins=50, log=True, color="#4c72b0")
    ax.axvline(BOT_THRESHOLD, color="#c44e52", linestyle="--", label="threshold")
    ax.set_xlabel("bot score")
    ax.set_ylabel("users (log)")
    ax.legend()
    return figure_markdown(fig, "bot score distribution")


@multi_asset(
    group_name="detection",
    outs={
        "user_traffic_scores": AssetOut(
            owners=OWNERS,
            kinds={"parquet", "polars", "scikitlearn"},
            description="Per user: traffic features, bot score in [0, 1] (robust z patterns + "
            "isolation forest), the flag, the pattern matched and the top reasons in words; "
            "scored over the last DETECTION_WINDOW_DAYS event days (the first run: every day), "
            "users without an event in them keeping their earlier row.",
        ),
        "session_traffic_scores": AssetOut(
            owners=OWNERS,
            kinds={"parquet", "polars"},
            description="Per session of the detection window: its traffic features, bot "
            "score and flag.",
        ),
        "bot_groups": AssetOut(
            owners=OWNERS,
            kinds={"parquet", "polars"},
            description="Accounts acting in lockstep (the same items in the same burst windows "
            "on several days) within the detection window: each group's members, items, days "
            "and windows, with a reason in words. Members are flagged with the group's reason.",
        ),
    },
    ins={
        "events_clean": AssetIn(
            metadata={"columns": ["user_id", "item_id", "event_type", "event_time", "query"]}
        ),
        "items_clean": AssetIn(metadata={"columns": ["item_id", "category", "price"]}),
    },
)
def user_traffic_scores(
    context: AssetExecutionContext,
    storage: PlatformStorage,
    events_clean: pl.LazyFrame,
    items_clean: pl.DataFrame,
) -> Iterator[Output]:
    previous = storage.layout().table("user_traffic_scores")
    earlier = pd.read_parquet(previous) if previous.exists() else None
    detection, window, carried = detect_in_window(events_clean, items_clean, earlier)
    if window != "all":
        context.log.info(
            f"scored the users active in {window} (DETECTION_WINDOW_DAYS); "
            f"{carried:,} other users keep their earlier rows"
        )
    scores, session_scores, groups = detection.users, detection.sessions, detection.groups
    flagged = scores[scores["is_bot"]].sort_values("bot_score", ascending=False)
    yield Output(
        scores,
        "user_traffic_scores",
        metadata={
            "detector_version": DETECTOR_VERSION,
            "threshold": BOT_THRESHOLD,
            "window": window,
            "users_carried_from_earlier_runs": carried,
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
        },
    )
    yield Output(session_scores, "session_traffic_scores")
    yield Output(
        groups,
        "bot_groups",
        metadata={
            "groups": len(groups),
            "accounts_in_groups": int(groups["members"].sum()) if len(groups) else 0,
            "groups_found": MetadataValue.md(_groups_markdown(groups, detection.group_members)),
        },
    )


def _groups_markdown(groups: pd.DataFrame, members: pd.DataFrame, shown: int = 15) -> str:
    """The largest groups with their windows, reasons, first members and items (the UI's
    view; the whole lists are in bot_groups and the members' rows of user_traffic_scores)."""
    if groups.empty:
        return "none"
    listed = members.groupby("group_id")["user_id"].agg(
        lambda ids: ", ".join(sorted(ids)[:10]) + (" ..." if len(ids) > 10 else "")
    )
    table = groups.head(shown).assign(
        member_ids=lambda g: g["group_id"].map(listed),
        item_ids=lambda g: g["item_ids"].str.split(",").str[:10].str.join(", "),
    )
    columns = ["group_id", "members", "items", "days", "first_window", "last_window", "reason"]
    return table[[*columns, "member_ids", "item_ids"]].to_markdown(index=False)


@asset(
    group_name="detection",
    owners=OWNERS,
    kinds={"parquet", "polars"},
    ins={
        "events_clean": AssetIn(
            metadata={"columns": ["user_id", "item_id", "event_type", "event_time"]}
        ),
        "items_clean": AssetIn(metadata={"columns": ["item_id", "category", "price", "listed_at"]}),
        "user_traffic_scores": AssetIn(metadata={"columns": ["user_id", "is_bot"]}),
        "bot_groups": AssetIn(metadata={"columns": ["group_id", "reason", "item_ids"]}),
    },
    description="Per catalog item: price against its category (robust z), its busiest day "
    "against its usual share (popularity spike), the share of its traffic from flagged "
    "users, the lockstep group that targeted it, and the accounts that bought it within a "
    "minute of its listing; the flags and reasons in words. Traffic is the last 35 event "
    "days' on every run (the users' scores' window after their first run).",
)
def item_outliers(
    events_clean: pl.LazyFrame,
    items_clean: pl.DataFrame,
    user_traffic_scores: pl.DataFrame,
    bot_groups: pd.DataFrame,
) -> Output[pd.DataFrame]:
    flagged_users = user_traffic_scores.filter(pl.col("is_bot"))["user_id"]
    frame, window = item_outliers_in_window(events_clean, items_clean, flagged_users, bot_groups)
    flagged = frame[frame["is_outlier"]].sort_values("events", ascending=False)
    return Output(
        frame,
        metadata={
            "window": window,
            "price_outliers": int(frame["price_outlier"].sum()),
            "popularity_spikes": int(frame["popularity_spike"].sum()),
            "bot_driven_items": int(frame["bot_driven"].sum()),
            "group_target_items": int(frame["group_target"].sum()),
            "sniped_drops": int(frame["sniped_drop"].sum()),
            "top_outliers": MetadataValue.md(
                flagged.head(15)[["item_id", "category", "events", "reasons"]].to_markdown(
                    index=False
                )
                if len(flagged)
                else "none"
            ),
        },
    )


@asset(
    group_name="detection",
    owners=OWNERS,
    kinds={"parquet", "pandas"},
    ins={
        "events_clean": AssetIn(
            metadata={"columns": ["user_id", "item_id", "event_type", "event_time", "query"]}
        ),
        "items_clean": AssetIn(metadata={"columns": ["item_id", "category", "price"]}),
        "user_traffic_scores": AssetIn(metadata={"columns": ["user_id", "bot_score"]}),
    },
    description="Bot scores as they were known each day (user_id, day, bot_score): this run's "
    "scores dated on the last event day, earlier runs' rows kept, and weekly checkpoints "
    "scored over the detection window up to their day where no run scored them. Feature snapshots "
    "join it point in time.",
)
def bot_score_history(
    context: AssetExecutionContext,
    storage: PlatformStorage,
    events_clean: pl.LazyFrame,
    items_clean: pl.DataFrame,
    user_traffic_scores: pd.DataFrame,
) -> Output[pd.DataFrame]:
    previous = storage.layout().table("bot_score_history")
    earlier = pd.read_parquet(previous) if previous.exists() else None
    history = score_history(
        events_clean, items_clean, user_traffic_scores, earlier, context.log.info
    )
    return Output(
        history,
        metadata={
            "days_scored": int(history["day"].nunique()),
            "last_day": str(history["day"].max()),
            "flagged_on_last_day": int(
                (
                    history.loc[history["day"] == history["day"].max(), "bot_score"]
                    >= BOT_THRESHOLD
                ).sum()
            ),
        },
    )
