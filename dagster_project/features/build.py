"""User and item feature snapshots for Feast: one row per entity per snapshot day.

A snapshot's `event_timestamp` is the end of the day it summarises (00:00 UTC of the next
day), so a point-in-time join at time t only ever sees events strictly before the start of
t's day: no label-time leakage. Counts are cumulative over the behaviour table up to then,
and over trailing windows of 1, 7 and 30 days. Snapshots are written on every active day and
on the days a window lets old events go (1, 7 and 30 days after an active day), so a
windowed count read at any later time is the count of that window, not a stale one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dagster_project.contracts import EVENT_TYPES
from dagster_project.sql import connect, query_pandas

COUNT_COLUMNS = {
    "view": "views",
    "favorite": "favorites",
    "add_to_cart": "carts",
    "purchase": "purchases",
}
PRICE_BUCKET_EDGES = [0, 5, 10, 20, 40, 80, 160, np.inf]


def price_bucket(price: pd.Series) -> np.ndarray:
    """Price bucket 0..6 for the edges PRICE_BUCKET_EDGES (e.g. [5, 10) -> 1)."""
    return (np.digitize(price, PRICE_BUCKET_EDGES) - 1).astype("int64")


def _rate(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    """A per-view rate, capped at 1 (a purchase without a recorded view still counts once)."""
    return (numerator / denominator.clip(lower=1)).clip(upper=1.0)


WINDOWS = (1, 7, 30)
SNAPSHOT_DAY_DTYPE = "datetime64[ns, UTC]"  # the `day` of every snapshot, full or daily


def _daily_cumulative(events: pd.DataFrame, key: str) -> pd.DataFrame:
    day = events["event_time"].dt.floor("D")
    counts = (
        events.assign(day=day)
        .groupby([key, "day", "event_type"], observed=True)
        .size()
        .unstack("event_type", fill_value=0)
        .reindex(columns=EVENT_TYPES, fill_value=0)
        .rename(columns=COUNT_COLUMNS)
    )
    cumulative = counts.groupby(level=0).cumsum()
    return cumulative.rename_axis(columns=None).reset_index()


def _as_of(snapshots: pd.DataFrame, table: pd.DataFrame, key: str, at: str) -> pd.DataFrame:
    """`table`'s latest row per key at or before each snapshot's `at` day (merge_asof)."""
    left = snapshots[[key, at]].reset_index().sort_values(at, kind="stable")
    right = table.rename(columns={"day": at}).sort_values(at, kind="stable")
    left[at] = left[at].astype(right[at].dtype)
    joined = pd.merge_asof(left, right, on=at, by=key, direction="backward")
    return joined.set_index("index").sort_index().drop(columns=[key, at])


def _windowed_snapshots(cumulative: pd.DataFrame, key: str, last_day: pd.Timestamp) -> pd.DataFrame:
    """Snapshot days (active days, and 1, 7, 30 days after each, up to `last_day`) with the
    cumulative counts and the counts of each trailing window, per event type and in total."""
    cumulative = cumulative.assign(events=cumulative[list(COUNT_COLUMNS.values())].sum(axis=1))
    days = [cumulative[[key, "day"]]] + [
        cumulative[[key, "day"]].assign(day=cumulative["day"] + pd.Timedelta(days=w))
        for w in WINDOWS
    ]
    snaps = pd.concat(days).drop_duplicates().loc[lambda f: f["day"] <= last_day]
    snaps = snaps.sort_values([key, "day"], kind="stable").reset_index(drop=True)
    counts = [*COUNT_COLUMNS.values(), "events"]
    now = _as_of(snaps, cumulative, key, "day").fillna(0)
    snaps[counts] = now[counts].astype("int64")
    for w in WINDOWS:
        before = _as_of(
            snaps.assign(day=snaps["day"] - pd.Timedelta(days=w)), cumulative, key, "day"
        ).fillna(0)
        for c in counts:
            snaps[f"{c}_{w}d"] = (now[c] - before[c]).astype("int64")
    return snaps


def _top_category(events: pd.DataFrame) -> pd.DataFrame:
    """Per user and active day: the category with the most events up to that day."""
    con = connect()
    con.register("ev", events[["user_id", "category", "day"]])
    return query_pandas(
        con,
        """WITH n AS (SELECT user_id, category, day, count(*) AS n FROM ev
                      WHERE category IS NOT NULL GROUP BY ALL),
            cum AS (SELECT user_id, category, day,
                        sum(n) OVER (PARTITION BY user_id, category ORDER BY day) AS c FROM n),
            days AS (SELECT DISTINCT user_id, day FROM n),
            latest AS (
                SELECT d.user_id, d.day, cum.category, cum.c FROM days d JOIN cum
                    ON cum.user_id = d.user_id AND cum.day <= d.day
                QUALIFY row_number() OVER (
                    PARTITION BY d.user_id, d.day, cum.category ORDER BY cum.day DESC) = 1)
        SELECT user_id, day, arg_max(category, c ORDER BY category) AS top_category
        FROM latest GROUP BY ALL""",
    ).astype({"day": events["day"].dtype})


def user_snapshots(events: pd.DataFrame, categories: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per user and snapshot day, recomputed over all `events`: the event-derived columns
    (`day` and USER_SNAPSHOT_COLUMNS). `categories` (item_id, category) names each item's
    category; without it the category features are empty."""
    events = events.sort_values("event_time", kind="stable").assign(
        day=lambda f: f["event_time"].dt.floor("D")
    )
    if categories is not None:
        events = events.merge(categories[["item_id", "category"]], on="item_id", how="left")
    else:
        events = events.assign(category=None)
    last_day = events["day"].max()
    snap = _windowed_snapshots(_daily_cumulative(events, "user_id"), "user_id", last_day)

    daily = events.groupby(["user_id", "day"]).agg(last_event=("event_time", "max"))
    money = events["price"].fillna(0) * events["quantity"].fillna(1).astype(float)
    daily["spend"] = (
        money.where(events["event_type"] == "purchase", 0.0)
        .groupby([events["user_id"], events["day"]])
        .sum()
    )
    daily["spend"] = daily.groupby(level=0)["spend"].cumsum()
    first_seen = events.drop_duplicates(["user_id", "category"]).dropna(subset=["category"])
    new_categories = first_seen.groupby(["user_id", "day"]).size().rename("distinct_categories")
    daily = daily.join(new_categories).fillna({"distinct_categories": 0})
    daily["distinct_categories"] = daily.groupby(level=0)["distinct_categories"].cumsum()
    daily = daily.reset_index().merge(_top_category(events), on=["user_id", "day"], how="left")
    # A day with events only on uncategorised items keeps the top category of the day before.
    daily["top_category"] = daily.groupby("user_id")["top_category"].ffill()
    now = _as_of(snap, daily, "user_id", "day")
    ago = _as_of(snap.assign(day=snap["day"] - pd.Timedelta(days=30)), daily, "user_id", "day")

    snap["spend"] = now["spend"].fillna(0.0)
    snap["spend_30d"] = snap["spend"] - ago["spend"].fillna(0.0)
    end_of_day = snap["day"] + pd.Timedelta(days=1)
    snap["recency_days"] = (end_of_day - now["last_event"]).dt.total_seconds() / 86_400
    first_day = snap.groupby("user_id")["day"].transform("min")
    snap["tenure_days"] = ((snap["day"] - first_day).dt.days + 1).astype("int64")
    snap["distinct_categories"] = now["distinct_categories"].fillna(0).astype("int64")
    snap["top_category"] = now["top_category"]
    snap["day"] = snap["day"].astype(SNAPSHOT_DAY_DTYPE)
    return snap[["user_id", "day", *USER_SNAPSHOT_COLUMNS]]


def bot_scores_as_of(snapshots: pd.DataFrame, history: pd.DataFrame) -> np.ndarray:
    """Per snapshot (user_id, day), the user's latest bot score in `history` (user_id, day,
    bot_score: `detection.history`) dated on or before its day, so that no snapshot carries
    what later events said; 0.0 where there is none yet."""
    left = snapshots[["user_id", "day"]].reset_index(drop=True)
    left["_row"] = np.arange(len(left))
    left["day"] = left["day"].astype("datetime64[us, UTC]")
    right = history[["user_id", "day", "bot_score"]].astype({"day": "datetime64[us, UTC]"})
    joined = pd.merge_asof(
        left.sort_values("day", kind="stable"),
        right.sort_values("day", kind="stable"),
        on="day",
        by="user_id",
        direction="backward",
    )
    scores = np.zeros(len(left))
    scores[joined["_row"].to_numpy()] = joined["bot_score"].fillna(0.0).to_numpy()
    return scores


# Feast tables keep their times in microseconds, which every offline store reads (Spark's
# Parquet reader refuses nanoseconds); the days they hold lose nothing.
FEAST_TIME = "datetime64[us, UTC]"


def _feast_times(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with event_timestamp and created in `FEAST_TIME`."""
    return table.astype({"event_timestamp": FEAST_TIME, "created": FEAST_TIME})


def finish_user_features(
    snapshots: pd.DataFrame, scores: pd.DataFrame, created: pd.Timestamp | None = None
) -> pd.DataFrame:
    """The Feast table from user snapshots (full or per day): event_timestamp (end of the day
    summarised), conversion rates and the bot score as it was known that day (`scores`: the
    history, user_id, day, bot_score; `bot_scores_as_of`). `created` defaults to
    event_timestamp, so the same snapshots always give the same bytes."""
    snap = snapshots.sort_values(["user_id", "day"], kind="stable").reset_index(drop=True)
    snap["bot_score"] = bot_scores_as_of(snap, scores)
    snap["event_timestamp"] = snap.pop("day") + pd.Timedelta(days=1)
    snap["cart_rate"] = _rate(snap["carts"], snap["views"])
    snap["purchase_rate"] = _rate(snap["purchases"], snap["views"])
    snap["cart_rate_30d"] = _rate(snap["carts_30d"], snap["views_30d"])
    snap["purchase_rate_30d"] = _rate(snap["purchases_30d"], snap["views_30d"])
    snap["created"] = snap["event_timestamp"] if created is None else created
    return _feast_times(snap[["user_id", "event_timestamp", "created", *USER_FEATURES]])


def user_features(
    events: pd.DataFrame,
    scores: pd.DataFrame,
    created: pd.Timestamp | None = None,
    categories: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per user and snapshot day, over all events at once (the full recompute that the daily
    partitions in `features.daily` must agree with): counts (all time, 1, 7 and 30 days),
    conversion, recency, spend, tenure, distinct and top category, and the bot score as of
    the day (`scores`: the history, user_id, day, bot_score)."""
    return finish_user_features(user_snapshots(events, categories), scores, created)


USER_COUNT_WINDOWS = [f"{c}_{w}d" for c in COUNT_COLUMNS.values() for w in WINDOWS]
USER_TRAITS = [
    "spend",
    "spend_30d",
    "recency_days",
    "tenure_days",
    "distinct_categories",
    "top_category",
]
USER_RATES = ["cart_rate", "purchase_rate", "cart_rate_30d", "purchase_rate_30d"]
# What a day's snapshot holds, and what the Feast table adds to it (rates, bot score).
USER_SNAPSHOT_COLUMNS = [*COUNT_COLUMNS.values(), *USER_COUNT_WINDOWS, *USER_TRAITS]
USER_FEATURES = [
    *COUNT_COLUMNS.values(),
    *USER_COUNT_WINDOWS,
    *USER_RATES,
    *USER_TRAITS,
    "bot_score",
]


def item_snapshots(events: pd.DataFrame) -> pd.DataFrame:
    """Per item and snapshot day, recomputed over all `events`: `day` and ITEM_SNAPSHOT_COLUMNS
    (counts all time and per trailing window, per event type and in total)."""
    events = events.assign(day=events["event_time"].dt.floor("D"))
    snap = _windowed_snapshots(_daily_cumulative(events, "item_id"), "item_id", events["day"].max())
    snap["day"] = snap["day"].astype(SNAPSHOT_DAY_DTYPE)
    return snap[["item_id", "day", *ITEM_SNAPSHOT_COLUMNS]]


def finish_item_features(
    snapshots: pd.DataFrame,
    items: pd.DataFrame,
    created: pd.Timestamp | None = None,
    price_outliers: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The Feast table from item snapshots (full or per day): a listing snapshot at first_seen,
    then the daily ones, with funnel rates and the catalog's price, bucket, category and
    price-outlier flag. `created` defaults to event_timestamp (same input, same bytes)."""
    daily = snapshots.sort_values(["item_id", "day"], kind="stable").reset_index(drop=True)
    daily["event_timestamp"] = daily.pop("day") + pd.Timedelta(days=1)
    # The listing itself is a snapshot too: catalog attributes are known from first_seen on.
    listing = pd.DataFrame({"item_id": items["item_id"], "event_timestamp": items["first_seen"]})
    listing = listing.assign(**{c: 0 for c in daily.columns if c not in listing.columns})
    snap = pd.concat([listing, daily], ignore_index=True).drop_duplicates(
        ["item_id", "event_timestamp"], keep="last"
    )
    snap = snap.merge(
        items[["item_id", "price", "category", "available"]], on="item_id", how="inner"
    )
    flags = price_outliers if price_outliers is not None else pd.DataFrame(columns=["item_id"])
    snap["price_outlier"] = snap["item_id"].isin(
        flags.loc[flags.get("price_outlier", pd.Series(dtype=bool)).astype(bool), "item_id"]
    )
    for w in WINDOWS:
        snap[f"popularity_{w}d"] = snap[f"events_{w}d"].astype("int64")
    snap["view_to_cart_rate"] = _rate(snap["carts"], snap["views"])
    snap["view_to_purchase_rate"] = _rate(snap["purchases"], snap["views"])
    snap["view_to_cart_rate_30d"] = _rate(snap["carts_30d"], snap["views_30d"])
    snap["view_to_purchase_rate_30d"] = _rate(snap["purchases_30d"], snap["views_30d"])
    snap["price_bucket"] = price_bucket(snap["price"])
    snap["created"] = snap["event_timestamp"] if created is None else created
    for c in COUNT_COLUMNS.values():
        snap[c] = snap[c].astype("int64")
    return _feast_times(snap[["item_id", "event_timestamp", "created", *ITEM_FEATURES]])


def item_features(
    events: pd.DataFrame,
    items: pd.DataFrame,
    created: pd.Timestamp | None = None,
    price_outliers: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per item, over all events at once (the full recompute the daily partitions must agree
    with): popularity (all time, 1, 7 and 30 days), funnel rates, price, price bucket,
    price-outlier flag, category."""
    return finish_item_features(item_snapshots(events), items, created, price_outliers)


TOTAL_COLUMNS = [*COUNT_COLUMNS.values(), "events"]
ITEM_SNAPSHOT_COLUMNS = [*TOTAL_COLUMNS, *[f"{c}_{w}d" for c in TOTAL_COLUMNS for w in WINDOWS]]
ITEM_FEATURES = [
    *COUNT_COLUMNS.values(),
    *[f"popularity_{w}d" for w in WINDOWS],
    "view_to_cart_rate",
    "view_to_purchase_rate",
    "view_to_cart_rate_30d",
    "view_to_purchase_rate_30d",
    "price",
    "price_bucket",
    "price_outlier",
    "category",
    "available",
]
