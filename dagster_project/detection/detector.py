"""The whole bot detector in one call: per-user features and baseline patterns (`bots`),
funnel speed and listing order (`funnel`), lockstep groups and copied sessions (`groups`),
and the signals that flag on their own (`signals`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd
import polars as pl

from dagster_project.detection.bots import (
    DETECTOR_VERSION,
    features_of,
    prepare_events,
    score_sessions,
    score_users,
)
from dagster_project.detection.groups import lockstep_groups, session_copies
from dagster_project.detection.items import item_outliers


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


# The UTC days of events a run scores, the last event's day included: the detector compares
# a user's sessions, days and copies across weeks, and five weeks hold a month of them. A
# user with no event in the window keeps the score the last run that saw them gave.
DETECTION_WINDOW_DAYS = 35


def detection_window(
    events: pl.LazyFrame, last_day: pd.Timestamp | None = None, days: int = DETECTION_WINDOW_DAYS
) -> tuple[pl.LazyFrame, str]:
    """The events of the `days` UTC days ending on `last_day` (default: the last event's
    day), and the window's name: `all` where it holds every event, else its first day and
    last day (`2026-09-01..2026-10-05`)."""
    span = events.select(
        pl.col("event_time").min().alias("first"), pl.col("event_time").max().alias("last")
    ).collect()
    if span["last"][0] is None:
        return events, "all"
    last_day = pd.Timestamp(span["last"][0]).floor("D") if last_day is None else last_day
    start = last_day - pd.Timedelta(days=days - 1)
    end = last_day + pd.Timedelta(days=1)
    inside = events.filter(pl.col("event_time") < end)
    if pd.Timestamp(span["first"][0]) >= start:
        return inside, "all"
    return inside.filter(pl.col("event_time") >= start), f"{start:%Y-%m-%d}..{last_day:%Y-%m-%d}"


def item_outliers_in_window(
    events: pl.LazyFrame,
    catalog: pl.DataFrame,
    flagged_users: pl.Series,
    groups: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, str]:
    """The item outliers (`items.item_outliers`) over the detection window, as the users are
    scored: an item's busiest day, usual share, bot share and drops are the window's, and the
    cost stops growing with the history; and the window's name."""
    windowed, window = detection_window(events)
    return item_outliers(windowed, catalog, flagged_users, groups), window


def detect_in_window(
    events: pl.LazyFrame, catalog: pl.DataFrame | pd.DataFrame, earlier: pd.DataFrame | None
) -> tuple[BotDetection, str, int]:
    """A run's detection: over the window (`detection_window`), its users' scores joined by
    the `earlier` run's rows of the other users who still have events (`with_earlier_scores`);
    over every event where there are no earlier scores of this detector (the first run, or a
    new detector version or table shape, whose rows cannot stand beside this one's). Returns
    the detection, the window's name and how many users' rows were carried."""
    same_detector = (
        earlier is not None
        and "detector_version" in earlier.columns
        and bool((earlier["detector_version"] == DETECTOR_VERSION).all())
    )
    if same_detector:
        windowed, window = detection_window(events)
        detection = detect_bots(windowed, catalog, window)
        if list(earlier.columns) == list(detection.users.columns):
            present = events.select(pl.col("user_id").unique()).collect()["user_id"]
            users = with_earlier_scores(detection.users, earlier, present)
            carried = len(users) - len(detection.users)
            return replace(detection, users=users), window, carried
    return detect_bots(events, catalog), "all", 0


def with_earlier_scores(
    scores: pd.DataFrame, earlier: pd.DataFrame, present: pl.Series | None = None
) -> pd.DataFrame:
    """`scores` (of the users with events in the window) and, for every other user an
    earlier run scored, that run's row: the table keeps every user seen, of those still in
    the events (`present`, when given; a user whose events were all quarantined since, or
    deleted, is not carried). Group ids are numbered anew by each run, so a carried row
    names its group by its reason alone."""
    carried = earlier[~earlier["user_id"].isin(scores["user_id"])]
    if present is not None:
        carried = carried[carried["user_id"].isin(present.to_list())]
    if carried.empty:
        return scores
    carried = carried.assign(
        group_id="",
        reasons=carried["reasons"].str.replace(
            r"\bgroup G\d+ ", "a lockstep group of an earlier window ", regex=True
        ),
    )
    return pd.concat([scores, carried], ignore_index=True)
