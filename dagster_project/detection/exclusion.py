"""Bot traffic out of the behaviour table, with an audit of every user and event excluded."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class BehaviourWithoutBots:
    """The events kept, and per excluded user: events removed and the detector's verdict."""

    kept: pd.DataFrame
    audit: pd.DataFrame
    events_excluded: int


def exclude_flagged_users(
    events: pd.DataFrame, scores: pd.DataFrame, exclude_bots: bool = True
) -> BehaviourWithoutBots:
    """Drop the events of users the detector flagged (`scores.is_bot`) unless `exclude_bots`
    is off; lineage columns (source_file, source_line) are dropped from the kept events."""
    bots = scores[scores["is_bot"]] if exclude_bots else scores.iloc[0:0]
    excluded = events["user_id"].isin(bots["user_id"])
    audit = (
        events[excluded]
        .groupby("user_id")
        .size()
        .rename("events_excluded")
        .reset_index()
        .merge(
            bots[["user_id", "bot_score", "pattern", "reasons", "detector_version"]],
            on="user_id",
        )
    )
    kept = events[~excluded].drop(columns=["source_file", "source_line"]).reset_index(drop=True)
    return BehaviourWithoutBots(kept, audit, int(excluded.sum()))
