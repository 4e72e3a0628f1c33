"""Features one event day at a time: running totals per day, and the day's snapshots from them.

The daily partitions of `user_daily_features` and `item_daily_features` never re-read the
history. Day D reads only D's events and the running totals of days D-1, D-7 and D-30:

- totals(D) = totals(D-1) + D's events (counts per event type, spend, first and last
  active day, last event, and per user the events per category);
- a window's count is a difference of totals: count over the last w days of D
  = totals(D) - totals(D-w);
- a snapshot is written for each entity active on D, D-1, D-7 or D-30. That is the same
  rule as the full recompute in `features.build` (active days, and the days the 1-, 7- and
  30-day windows let them go), and the result is equal to it: `test_daily_features`
  checks this across day boundaries.

Every function here is pure and deterministic: one day's input always gives the same rows
in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from dagster_project.features.build import (
    COUNT_COLUMNS,
    ITEM_SNAPSHOT_COLUMNS,
    SNAPSHOT_DAY_DTYPE,
    TOTAL_COLUMNS,
    USER_SNAPSHOT_COLUMNS,
    WINDOWS,
)

USER_TOTALS = [*TOTAL_COLUMNS, "spend", "first_day", "last_day", "last_event"]
ITEM_TOTALS = [*TOTAL_COLUMNS, "last_day"]


@dataclass(frozen=True)
class UserTotals:
    """Running totals through one day: per user (`users`, USER_TOTALS) and per user and
    category (`categories`: events with a known category)."""

    users: pd.DataFrame
    categories: pd.DataFrame


def _type_counts(events: pd.DataFrame, key: str) -> pd.DataFrame:
    counts = (
        events.groupby([key, "event_type"], observed=True)
        .size()
        .unstack("event_type", fill_value=0)
        .reindex(columns=list(COUNT_COLUMNS), fill_value=0)
        .rename(columns=COUNT_COLUMNS)
    )
    counts["events"] = counts.sum(axis=1)
    return counts.astype("int64")


def _add(previous: pd.DataFrame | None, today: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """previous + today for `columns`, over the union of keys (the index), sorted by key."""
    if previous is None or previous.empty:
        return today[columns].sort_index()
    summed = previous[columns].add(today[columns], fill_value=0)
    return summed.astype(previous[columns].dtypes.to_dict()).sort_index()


def advance_user_totals(
    previous: UserTotals | None,
    events: pd.DataFrame,
    day: pd.Timestamp,
    categories: pd.DataFrame | None = None,
) -> UserTotals:
    """Totals through `day` from the totals through the day before and the events after it
    (normally `day`'s alone; the first partition also takes every earlier event)."""
    events = events.sort_values("event_time", kind="stable")
    if categories is not None:
        events = events.merge(categories[["item_id", "category"]], on="item_id", how="left")
    else:
        events = events.assign(category=None)
    today = _type_counts(events, "user_id")
    money = events["price"].fillna(0) * events["quantity"].fillna(1).astype(float)
    today["spend"] = (
        money.where(events["event_type"] == "purchase", 0.0).groupby(events["user_id"]).sum()
    )
    by_user = events.groupby("user_id")
    today["first_day"] = by_user["event_time"].min().dt.floor("D")
    today["last_day"] = pd.Series(day, index=today.index).astype(today["first_day"].dtype)
    today["last_event"] = by_user["event_time"].max()
    per_category = (
        events.dropna(subset=["category"]).groupby(["user_id", "category"]).size().rename("events")
    )
    old_users = previous.users.set_index("user_id") if previous is not None else None
    users = _add(old_users, today, [*TOTAL_COLUMNS, "spend"])
    if old_users is None or old_users.empty:
        users = users.join(today[["first_day", "last_day", "last_event"]])
    else:
        users["first_day"] = old_users["first_day"].combine_first(today["first_day"])
        users["last_day"] = today["last_day"].combine_first(old_users["last_day"])
        users["last_event"] = today["last_event"].combine_first(old_users["last_event"])
    old_categories = (
        previous.categories.set_index(["user_id", "category"]) if previous is not None else None
    )
    category_totals = _add(old_categories, per_category.to_frame(), ["events"])
    return UserTotals(
        users=users[USER_TOTALS].rename_axis("user_id").reset_index(),
        categories=category_totals.astype("int64")
        .rename_axis(["user_id", "category"])
        .reset_index(),
    )


def advance_item_totals(
    previous: pd.DataFrame | None, events: pd.DataFrame, day: pd.Timestamp
) -> pd.DataFrame:
    """Per item totals (ITEM_TOTALS) through `day`, from the day before's and the new events."""
    today = _type_counts(events, "item_id")
    today["last_day"] = pd.Series(day, index=today.index).astype(events["event_time"].dtype)
    old = previous.set_index("item_id") if previous is not None else None
    items = _add(old, today, TOTAL_COLUMNS)
    items["last_day"] = (
        today["last_day"].combine_first(old["last_day"]) if old is not None else today["last_day"]
    )
    return items[ITEM_TOTALS].rename_axis("item_id").reset_index()


def _active_on(totals: pd.DataFrame | None, key: str, day: pd.Timestamp) -> pd.Index:
    if totals is None or totals.empty:
        return pd.Index([], name=key)
    return pd.Index(totals.loc[totals["last_day"] == day, key], name=key)


def _snapshot_keys(
    key: str, day: pd.Timestamp, today: pd.DataFrame, earlier: Mapping[int, pd.DataFrame | None]
) -> pd.Index:
    """Entities with a snapshot on `day`: active on it, or on day-1, day-7 or day-30."""
    keys = _active_on(today, key, day)
    for w in WINDOWS:
        keys = keys.union(_active_on(earlier.get(w), key, day - pd.Timedelta(days=w)))
    return keys.sort_values()


def _window_counts(
    now: pd.DataFrame, earlier: Mapping[int, pd.DataFrame | None], key: str, columns: list[str]
) -> pd.DataFrame:
    """Per window w in WINDOWS: `c_wd` = totals now - totals w days ago, for each column c."""
    out = {}
    for w in WINDOWS:
        before = earlier.get(w)
        base = (
            before.set_index(key)[columns].reindex(now.index).fillna(0)
            if before is not None
            else pd.DataFrame(0, index=now.index, columns=columns)
        )
        for c in columns:
            out[f"{c}_{w}d"] = (now[c] - base[c]).astype("int64")
    return pd.DataFrame(out, index=now.index)


def user_day_snapshots(
    day: pd.Timestamp, today: UserTotals, earlier: Mapping[int, UserTotals | None]
) -> pd.DataFrame:
    """The user snapshots of `day` (columns `user_id`, `day`, USER_SNAPSHOT_COLUMNS) from the
    totals through `day` and those of `day` - 1, 7 and 30 (None where there are none)."""
    earlier_users = {k: (v.users if v is not None else None) for k, v in earlier.items()}
    keys = _snapshot_keys("user_id", day, today.users, earlier_users)
    now = today.users.set_index("user_id").loc[keys]
    counts = list(COUNT_COLUMNS.values())
    snap = now[counts].copy()
    snap = snap.join(_window_counts(now, earlier_users, "user_id", counts))
    snap["spend"] = now["spend"]
    month_ago = earlier_users.get(30)
    spent_before = (
        month_ago.set_index("user_id")["spend"].reindex(keys).fillna(0.0)
        if month_ago is not None
        else 0.0
    )
    snap["spend_30d"] = now["spend"] - spent_before
    snap["recency_days"] = (
        (day + pd.Timedelta(days=1)) - now["last_event"]
    ).dt.total_seconds() / 86_400
    snap["tenure_days"] = ((day - now["first_day"]).dt.days + 1).astype("int64")
    categories = today.categories[today.categories["user_id"].isin(keys)]
    snap["distinct_categories"] = (
        categories.groupby("user_id").size().reindex(keys).fillna(0).astype("int64")
    )
    # The category with the most events so far; ties go to the first name in order.
    top = categories.sort_values(
        ["user_id", "events", "category"], ascending=[True, False, True], kind="stable"
    ).drop_duplicates("user_id")
    snap["top_category"] = top.set_index("user_id")["category"].reindex(keys)
    snap.insert(0, "day", pd.Series(day, index=keys).astype(SNAPSHOT_DAY_DTYPE))
    return snap.reset_index()[["user_id", "day", *USER_SNAPSHOT_COLUMNS]]


def item_day_snapshots(
    day: pd.Timestamp, today: pd.DataFrame, earlier: Mapping[int, pd.DataFrame | None]
) -> pd.DataFrame:
    """The item snapshots of `day` (`item_id`, `day`, ITEM_SNAPSHOT_COLUMNS) from the totals
    through `day` and those of `day` - 1, 7 and 30 (None where there are none)."""
    keys = _snapshot_keys("item_id", day, today, earlier)
    now = today.set_index("item_id").loc[keys]
    snap = now[TOTAL_COLUMNS].join(_window_counts(now, earlier, "item_id", TOTAL_COLUMNS))
    snap.insert(0, "day", pd.Series(day, index=keys).astype(SNAPSHOT_DAY_DTYPE))
    return snap.reset_index()[["item_id", "day", *ITEM_SNAPSHOT_COLUMNS]]
