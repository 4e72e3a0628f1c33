"""Evaluation protocols: how interactions (user_id, item_id, event_time, ...) are split into
training rows and the relevant items per user (`truth`: user_id, item_id).

Every protocol removes the items a user interacted with in training from that user's
ranking (the recommenders' `filter_seen`), and metrics average over the users in `truth`.

- `temporal` (`temporal_holdout`, the pipeline's default): interactions before `cutoff`
  train; relevant items are those a user interacted with at or after the cutoff and never
  before it (discovery of new items), for users with history before the cutoff.
- `loo` (`leave_last_out`): each user's last interaction (by time) is held out, for users
  with at least two distinct items; ranked against every item.
- `msr` (`stratified_split`): microsoft/recommenders' MovieLens protocol,
  `python_stratified_split(ratio=0.75, filter_by="item", seed=42)`: each item's
  interactions are shuffled and the first 75% go to training; every held-out interaction
  of a user known in training is relevant, whatever its rating.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PROTOCOLS = ("temporal", "loo", "msr")


@dataclass(frozen=True)
class Split:
    """Training rows, relevant items per user, and how they were made."""

    train: pd.DataFrame
    truth: pd.DataFrame  # user_id, item_id
    protocol: str
    cutoff: pd.Timestamp | None = None


def _known_users_pairs(
    train: pd.DataFrame, test: pd.DataFrame, new_items_only: bool
) -> pd.DataFrame:
    seen = train[["user_id", "item_id"]].drop_duplicates()
    test = test[test["user_id"].isin(seen["user_id"])][["user_id", "item_id"]].drop_duplicates()
    if new_items_only:
        test = test.merge(seen, on=["user_id", "item_id"], how="left", indicator=True)
        test = test[test["_merge"] == "left_only"].drop(columns="_merge")
    return test.reset_index(drop=True)


def temporal_holdout(interactions: pd.DataFrame, test_days: int) -> Split:
    """Split `interactions` at `test_days` before the end (midnight-aligned)."""
    end = interactions["event_time"].max().ceil("D")
    cutoff = end - pd.Timedelta(days=test_days)
    train = interactions[interactions["event_time"] < cutoff].reset_index(drop=True)
    test = interactions[interactions["event_time"] >= cutoff]
    return Split(train, _known_users_pairs(train, test, True), "temporal", cutoff)


def leave_last_out(interactions: pd.DataFrame) -> Split:
    """Hold out each user's last interaction (ties broken by row order) for users with two or
    more; its item must be new to the user, so users whose last item was seen before, and
    users with one interaction, keep everything in training."""
    ordered = interactions.sort_values("event_time", kind="stable")
    last = ordered[ordered.groupby("user_id")["item_id"].transform("size") >= 2]
    last = last.groupby("user_id").tail(1)
    repeated = last.set_index(["user_id", "item_id"]).index.isin(
        ordered.drop(last.index).set_index(["user_id", "item_id"]).index
    )
    held_out = last[~repeated]
    train = ordered.drop(held_out.index).reset_index(drop=True)
    return Split(train, _known_users_pairs(train, held_out, True), "loo")


def stratified_split(interactions: pd.DataFrame, ratio: float = 0.75, seed: int = 42) -> Split:
    """Per item, a seeded shuffle; the first round(ratio * n) interactions go to training."""
    rng = np.random.default_rng(seed)
    shuffled = interactions.iloc[rng.permutation(len(interactions))]
    position = shuffled.groupby("item_id").cumcount()
    size = shuffled.groupby("item_id")["item_id"].transform("size")
    in_train = position < np.round(ratio * size)
    train = shuffled[in_train].sort_index().reset_index(drop=True)
    test = shuffled[~in_train]
    return Split(train, _known_users_pairs(train, test, False), "msr")


def make_split(interactions: pd.DataFrame, protocol: str, test_days: int = 3) -> Split:
    """The split of one of `PROTOCOLS`."""
    if protocol == "temporal":
        return temporal_holdout(interactions, test_days)
    if protocol == "loo":
        return leave_last_out(interactions)
    if protocol == "msr":
        return stratified_split(interactions)
    raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
