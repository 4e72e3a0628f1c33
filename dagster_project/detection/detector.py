"""The whole bot detector in one call: per-user features and baseline patterns (`bots`),
funnel speed and listing order (`funnel`), lockstep groups and copied sessions (`groups`),
and the signals that flag on their own (`signals`)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import polars as pl

from dagster_project.detection.bots import (
    features_of,
    prepare_events,
    score_sessions,
    score_users,
)
from dagster_project.detection.groups import lockstep_groups, session_copies


@dataclass(frozen=True)
class BotDetection:
    """Per-user scores, per-session scores, and the lockstep groups found."""

    users: pd.DataFrame
    sessions: pd.DataFrame
    groups: pd.DataFrame
    group_members: pd.DataFrame


def detect_bots(
    events: pl.DataFrame | pl.LazyFrame | pd.DataFrame,
    catalog: pl.DataFrame | pd.DataFrame | None = None,
    window: str = "all",
) -> BotDetection:
    """Score every user and session of `events` (user_id, item_id, event_type, event_time,
    optional query) against `catalog` (item_id, category, optional price)."""
    ev = prepare_events(events, catalog)
    # the coordination tables are small: built first, so that no large frame waits beside
    # the features' work (peak memory on 10M events)
    groups, members = lockstep_groups(ev)
    copies = session_copies(ev)
    features, sessions = features_of(ev)
    del ev
    users = features.to_pandas()
    del features
    if len(members):
        users = users.merge(
            members.rename(columns={"partners": "group_partners"}), on="user_id", how="left"
        )
    if len(copies):
        users = users.merge(copies, on="user_id", how="left")
    scores = score_users(users, window)
    return BotDetection(scores, score_sessions(sessions, scores), groups, members)
