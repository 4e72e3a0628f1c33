"""User and item feature snapshots for Feast: one row per entity per active day.

A snapshot's `event_timestamp` is the end of the day it summarises (00:00 UTC of the next
day), so a point-in-time join at time t only ever sees events strictly before the start of
t's day: no label-time leakage. Counts are cumulative over the behaviour table up to then.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dagster_project.contracts import EVENT_TYPES

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
    return cumulative.reset_index()


def user_features(
    events: pd.DataFrame, scores: pd.DataFrame, created: pd.Timestamp
) -> pd.DataFrame:
    """Per user and active day: cumulative counts, conversion, spend, tenure and bot score."""
    snap = _daily_cumulative(events, "user_id")
    spend = (
        events.assign(
            day=events["event_time"].dt.floor("D"),
            spend=events["price"].fillna(0) * events["quantity"].fillna(1).astype(float),
        )
        .loc[lambda f: f["event_type"] == "purchase"]
        .groupby(["user_id", "day"])["spend"]
        .sum()
        .groupby(level=0)
        .cumsum()
    )
    snap = snap.merge(spend.reset_index(), on=["user_id", "day"], how="left")
    snap["spend"] = snap.groupby("user_id")["spend"].ffill().fillna(0.0)
    first_day = snap.groupby("user_id")["day"].transform("min")
    snap["tenure_days"] = ((snap["day"] - first_day).dt.days + 1).astype("int64")
    snap["cart_rate"] = _rate(snap["carts"], snap["views"])
    snap["purchase_rate"] = _rate(snap["purchases"], snap["views"])
    snap = snap.merge(scores[["user_id", "bot_score"]], on="user_id", how="left").fillna(
        {"bot_score": 0.0}
    )
    snap["event_timestamp"] = snap.pop("day") + pd.Timedelta(days=1)
    snap["created"] = created
    for c in COUNT_COLUMNS.values():
        snap[c] = snap[c].astype("int64")
    return snap[
        [
            "user_id",
            "event_timestamp",
            "created",
            *COUNT_COLUMNS.values(),
            "cart_rate",
            "purchase_rate",
            "spend",
            "tenure_days",
            "bot_score",
        ]
    ]


def item_features(events: pd.DataFrame, items: pd.DataFrame, created: pd.Timestamp) -> pd.DataFrame:
    """Per item: a snapshot at first_seen, then one per active day: popularity, funnel rates, price."""
    daily = _daily_cumulative(events, "item_id")
    daily["event_timestamp"] = daily.pop("day") + pd.Timedelta(days=1)
    # The listing itself is a snapshot too: catalog attributes are known from first_seen on.
    listing = pd.DataFrame({"item_id": items["item_id"], "event_timestamp": items["first_seen"]})
    snap = pd.concat(
        [listing.assign(**{c: 0 for c in COUNT_COLUMNS.values()}), daily], ignore_index=True
    )
    snap = snap.merge(
        items[["item_id", "price", "category", "available"]], on="item_id", how="inner"
    )
    snap["view_to_cart_rate"] = _rate(snap["carts"], snap["views"])
    snap["view_to_purchase_rate"] = _rate(snap["purchases"], snap["views"])
    snap["price_bucket"] = price_bucket(snap["price"])
    snap["created"] = created
    for c in COUNT_COLUMNS.values():
        snap[c] = snap[c].astype("int64")
    return snap[
        [
            "item_id",
            "event_timestamp",
            "created",
            *COUNT_COLUMNS.values(),
            "view_to_cart_rate",
            "view_to_purchase_rate",
            "price",
            "price_bucket",
            "category",
            "available",
        ]
    ]
