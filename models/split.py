"""Evaluation protocol: a temporal hold-out.

Protocol `temporal_holdout`: interactions before `cutoff` train the models; the relevant
items of a user are the distinct items they interacted with at or after the cutoff and
never before it (discovery of new items), for users who have history before the cutoff.
Items a user already interacted with are removed from every model's ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class TemporalSplit:
    train: pd.DataFrame
    truth: pd.DataFrame  # user_id, item_id
    cutoff: pd.Timestamp


def temporal_holdout(interactions: pd.DataFrame, test_days: int) -> TemporalSplit:
    """Split `interactions` (user_id, item_id, event_time, ...) at `test_days` before the end."""
    end = interactions["event_time"].max().ceil("D")
    cutoff = end - pd.Timedelta(days=test_days)
    train = interactions[interactions["event_time"] < cutoff]
    test = interactions[interactions["event_time"] >= cutoff]
    seen = train[["user_id", "item_id"]].drop_duplicates()
    test = test[test["user_id"].isin(seen["user_id"])][["user_id", "item_id"]].drop_duplicates()
    truth = test.merge(seen, on=["user_id", "item_id"], how="left", indicator=True)
    truth = truth[truth["_merge"] == "left_only"].drop(columns="_merge").reset_index(drop=True)
    return TemporalSplit(train=train.reset_index(drop=True), truth=truth, cutoff=cutoff)
