"""A shopper's recent activity: the newest events in order and today's counts per event type.

One definition serves both paths, so they agree by construction (and a test replays a day
to show it): the daily batch computes it from `behaviour_events` (`recent_activity`), and
the real-time intake advances the row the online store holds with the events just received
(`advance_recent_activity`). The model reads `recent_items` (with types and times) as the
user's history when it recomputes e_u at request time.

- `recent_items`, `recent_event_types`, `recent_event_times` (epoch ms): the newest
  `RECENT_EVENTS` events, oldest first; ties in time keep the order events arrived in
  (earlier state first, then by event id).
- `activity_day` (YYYY-MM-DD, UTC): the day of the user's newest event; `views_today`,
  `favorites_today`, `carts_today`, `purchases_today`: that day's events per type. A late
  event for an earlier day joins the history but not the counts.
- `event_timestamp`: the newest event's time; `created`: when the row was computed.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from dagster_project.features.build import COUNT_COLUMNS

RECENT_EVENTS = 50
TODAY_COLUMNS = {event_type: f"{name}_today" for event_type, name in COUNT_COLUMNS.items()}
LIST_COLUMNS = ["recent_items", "recent_event_types", "recent_event_times"]
RECENT_ACTIVITY_COLUMNS = [
    "user_id",
    *LIST_COLUMNS,
    "activity_day",
    *TODAY_COLUMNS.values(),
    "event_timestamp",
    "created",
]
EVENT_INPUT_COLUMNS = ["user_id", "item_id", "event_type", "event_time"]


def recent_activity(
    events: pd.DataFrame, keep: int = RECENT_EVENTS, now: datetime | None = None
) -> pd.DataFrame:
    """One row per user of `events` (user_id, item_id, event_type, event_time, optional
    event_id): their recent activity as of their newest event."""
    return advance_recent_activity(empty_recent_activity(), events, keep, now)


def empty_recent_activity() -> pd.DataFrame:
    """A recent-activity frame with no rows, for users the online store does not know."""
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in RECENT_ACTIVITY_COLUMNS})
    for column in TODAY_COLUMNS.values():
        frame[column] = frame[column].astype("int64")
    return frame


def advance_recent_activity(
    current: pd.DataFrame,
    events: pd.DataFrame,
    keep: int = RECENT_EVENTS,
    now: datetime | None = None,
) -> pd.DataFrame:
    """The recent-activity rows of the users in `events`, advanced from `current` (their rows
    so far, as the online store holds them; users missing from it start empty)."""
    missing = [c for c in EVENT_INPUT_COLUMNS if c not in events]
    if missing:
        raise ValueError(f"events lack column(s) {', '.join(missing)}")
    if events.empty:
        return empty_recent_activity()
    users = pd.Index(events["user_id"].unique())
    before = current[current["user_id"].isin(users)] if len(current) else current
    timeline = _timeline(before, events)
    newest = timeline.groupby("user_id", sort=False).tail(keep)
    lists = newest.groupby("user_id", sort=False).agg(
        recent_items=("item_id", list),
        recent_event_types=("event_type", list),
        recent_event_times=("t", list),
    )
    counts = _today_counts(before, events)
    frame = lists.join(counts, how="inner").reset_index()
    frame["event_timestamp"] = pd.to_datetime(
        timeline.groupby("user_id", sort=False)["t"].max().reindex(frame["user_id"]).to_numpy(),
        unit="ms",
        utc=True,
    )
    frame["created"] = pd.Timestamp(now or datetime.now(UTC))
    return frame[RECENT_ACTIVITY_COLUMNS].sort_values("user_id", ignore_index=True)


def _event_millis(times: pd.Series) -> np.ndarray:
    naive = pd.to_datetime(pd.Series(times), utc=True).dt.tz_localize(None)
    return naive.to_numpy().astype("datetime64[ms]").astype("int64")


def _timeline(before: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """The held events and the new ones, per user in time order (held first on ties)."""
    held = before[["user_id", *LIST_COLUMNS]].explode(LIST_COLUMNS)
    held = pd.DataFrame(
        {
            "user_id": held["user_id"].to_numpy(),
            "item_id": held["recent_items"].to_numpy(),
            "event_type": held["recent_event_types"].to_numpy(),
            "t": held["recent_event_times"].to_numpy(),
            "arrival": 0,
        }
    ).dropna(subset=["t"])
    order = ["event_time", "event_id"] if "event_id" in events else ["event_time"]
    new = events.sort_values(order, kind="stable")
    fresh = pd.DataFrame(
        {
            "user_id": new["user_id"].to_numpy(),
            "item_id": new["item_id"].astype(str).to_numpy(),
            "event_type": new["event_type"].astype(str).to_numpy(),
            "t": _event_millis(new["event_time"]),
            "arrival": 1,
        }
    )
    timeline = pd.concat([held, fresh], ignore_index=True)
    timeline["t"] = timeline["t"].astype("int64")
    timeline["seq"] = np.arange(len(timeline))
    return timeline.sort_values(["user_id", "t", "arrival", "seq"], kind="stable")


def _today_counts(before: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Per user: the day of the newest event and that day's events per type."""
    day = _event_millis(events["event_time"]) // 86_400_000
    users = events["user_id"].to_numpy()
    latest = pd.Series(day).groupby(users).max()
    if len(before):
        held = before.set_index("user_id").reindex(latest.index)
        held_day = pd.to_datetime(held["activity_day"]).to_numpy().astype("datetime64[D]")
        held_day = np.where(held["activity_day"].notna(), held_day.astype("int64"), -1)
        latest = latest.clip(lower=pd.Series(held_day, index=latest.index))
    today = day == latest.reindex(users).to_numpy()
    added = (
        pd.DataFrame(
            {"user_id": users[today], "event_type": events["event_type"].to_numpy()[today]}
        )
        .value_counts()
        .unstack(fill_value=0)
        .reindex(index=latest.index, columns=list(TODAY_COLUMNS), fill_value=0)
        .rename(columns=TODAY_COLUMNS)
    )
    if len(before):
        same_day = held_day == latest.to_numpy()
        for column in TODAY_COLUMNS.values():
            added[column] += np.where(same_day, held[column].fillna(0).to_numpy(), 0).astype(int)
    added["activity_day"] = pd.to_datetime(latest.to_numpy(), unit="D").strftime("%Y-%m-%d")
    return added.astype({c: "int64" for c in TODAY_COLUMNS.values()})
