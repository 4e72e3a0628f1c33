"""Features built one day at a time equal the full recompute, across day boundaries."""

import numpy as np
import pandas as pd
import pytest

from dagster_project.features.build import (
    WINDOWS,
    finish_item_features,
    finish_user_features,
    item_features,
    item_snapshots,
    user_features,
    user_snapshots,
)
from dagster_project.features.daily import (
    advance_item_totals,
    advance_user_totals,
    item_day_snapshots,
    user_day_snapshots,
)

FIRST_DAY = pd.Timestamp("2026-09-01", tz="UTC")
DAY = pd.Timedelta(days=1)


def _events(seed: int = 7, days: int = 45, n: int = 3_000) -> pd.DataFrame:
    """Random events over `days`, with many on the edges of days (00:00:00.000 and
    23:59:59.999) and days 31 and 38 lying idle, so windows close on idle days."""
    rng = np.random.default_rng(seed)
    day = rng.integers(0, days, n)
    day = np.where(np.isin(day, [31, 38]), 30, day)
    ms = rng.integers(0, 86_400_000, n)
    edge = rng.random(n)
    ms = np.where(edge < 0.15, 0, np.where(edge < 0.3, 86_399_999, ms))
    time = FIRST_DAY + pd.to_timedelta(day, "D") + pd.to_timedelta(ms, "ms")
    kinds = np.array(["view", "favorite", "add_to_cart", "purchase"])
    event_type = kinds[rng.choice(4, n, p=[0.7, 0.1, 0.12, 0.08])]
    return pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.integers(0, 60, n)],
            "item_id": [f"i{i}" for i in rng.integers(0, 40, n)],
            "event_type": event_type,
            "event_time": time.astype("datetime64[us, UTC]"),
            "price": np.where(event_type == "purchase", rng.uniform(1, 90, n).round(2), np.nan),
            "quantity": pd.Series(rng.integers(1, 3, n), dtype="Int64").where(
                event_type == "purchase"
            ),
        }
    ).sort_values("event_time", kind="stable", ignore_index=True)


def _catalog() -> pd.DataFrame:
    # Two categories tie often: the tie rule must match the full recompute's.
    return pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(40)],
            "category": [None if i == 39 else f"c{i % 5}" for i in range(40)],
            "price": np.linspace(2, 150, 40),
            "available": True,
            "first_seen": FIRST_DAY + pd.to_timedelta(np.arange(40) % 9, "D") + pd.Timedelta("9h"),
        }
    )


def _by_day(events: pd.DataFrame, last: pd.Timestamp):
    """Yield (day, that day's events) from FIRST_DAY through `last`, idle days included."""
    day_of = events["event_time"].dt.floor("D")
    day = FIRST_DAY
    while day <= last:
        yield day, events[day_of == day]
        day += DAY


def _incremental(events: pd.DataFrame, catalog: pd.DataFrame, last: pd.Timestamp):
    users, items, user_rows, item_rows = {}, {}, [], []
    for day, today in _by_day(events, last):
        users[day] = advance_user_totals(users.get(day - DAY), today, day, catalog)
        items[day] = advance_item_totals(items.get(day - DAY), today, day)
        user_rows.append(
            user_day_snapshots(day, users[day], {w: users.get(day - w * DAY) for w in WINDOWS})
        )
        item_rows.append(
            item_day_snapshots(day, items[day], {w: items.get(day - w * DAY) for w in WINDOWS})
        )
    return pd.concat(user_rows, ignore_index=True), pd.concat(item_rows, ignore_index=True)


def _sorted(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    return frame.sort_values([key, "day"], ignore_index=True)


def test_day_by_day_equals_the_full_recompute_at_every_boundary():
    events, catalog = _events(), _catalog()
    last = events["event_time"].max().floor("D")
    users, items = _incremental(events, catalog, last)
    full_users = _sorted(user_snapshots(events, catalog), "user_id")
    full_items = _sorted(item_snapshots(events), "item_id")
    pd.testing.assert_frame_equal(_sorted(users, "user_id"), full_users, check_exact=False)
    pd.testing.assert_frame_equal(_sorted(items, "item_id"), full_items, check_exact=False)
    # The comparison covers what it should: windows closing on idle days, 30-day windows,
    # ties for the top category, and events on both edges of a day.
    assert (full_users["day"] == FIRST_DAY + 31 * DAY).any()
    assert (full_users["views_30d"] < full_users["views"]).any()
    assert full_users["top_category"].notna().mean() > 0.9
    # ... and so do the Feast tables built from either.
    scores = pd.DataFrame(
        {"user_id": ["u1", "u1"], "day": [FIRST_DAY, FIRST_DAY + 20 * DAY], "bot_score": [0.1, 0.9]}
    )
    pd.testing.assert_frame_equal(
        finish_user_features(users, scores), user_features(events, scores, categories=catalog)
    )
    pd.testing.assert_frame_equal(
        finish_item_features(items, catalog), item_features(events, catalog)
    )


def test_an_event_at_midnight_counts_for_its_own_day_only():
    events = _events(n=0)
    stamps = ["2026-09-01 23:59:59.999", "2026-09-02 00:00:00.000"]
    events = pd.DataFrame(
        {
            "user_id": ["u1", "u1"],
            "item_id": ["i1", "i1"],
            "event_type": ["view", "view"],
            "event_time": pd.to_datetime(stamps, utc=True).astype("datetime64[us, UTC]"),
            "price": [np.nan, np.nan],
            "quantity": pd.array([pd.NA, pd.NA], dtype="Int64"),
        }
    )
    users, _ = _incremental(events, _catalog(), FIRST_DAY + 9 * DAY)
    day = users.set_index("day")
    assert day.loc[FIRST_DAY, "views_1d"] == 1 and day.loc[FIRST_DAY + DAY, "views_1d"] == 1
    assert day.loc[FIRST_DAY + DAY, "views"] == 2 and day.loc[FIRST_DAY + 2 * DAY, "views_1d"] == 0
    assert day.loc[FIRST_DAY + 8 * DAY, "views_7d"] == 0  # both left the 7-day window
    assert day.loc[FIRST_DAY + 7 * DAY, "views_7d"] == 1  # the second only on its own day
    assert day.loc[FIRST_DAY + DAY, "recency_days"] == pytest.approx(1.0)


def test_the_day_engine_runs_days_in_pieces_as_in_one_run_and_names_missing_days(tmp_path):
    from dagster_project.features.daily_runs import DailyTable, MissingDaysError, run_days
    from dagster_project.settings import layout

    events = _events(days=12, n=600)
    events_path = tmp_path / "events.parquet"
    events.to_parquet(events_path)
    days = [FIRST_DAY + d * DAY for d in range(12)]

    def run(out, some_days):
        return run_days(
            DailyTable(out, "item"),
            some_days,
            FIRST_DAY,
            events_path,
            advance_item_totals,
            item_day_snapshots,
            log=lambda _: None,
            warn=lambda _: None,
        )

    whole, pieces = layout(tmp_path / "whole"), layout(tmp_path / "pieces")
    summary = run(whole, days).per_day
    assert summary["events"].sum() == len(events) and len(summary) == 12
    run(pieces, days[:5])
    run(pieces, days[5:])  # reads day 4's totals (and 7 days back) from the files
    for day in days:
        name = f"{day:%Y-%m-%d}"
        pd.testing.assert_frame_equal(
            pd.read_parquet(whole.daily_file("item_snapshots", name)),
            pd.read_parquet(pieces.daily_file("item_snapshots", name)),
        )
    with pytest.raises(MissingDaysError, match="needs the totals of the day before"):
        run(layout(tmp_path / "empty"), days[3:5])


def test_an_item_is_first_seen_at_its_listing_or_first_event_whichever_is_earlier():
    from dagster_project.features.catalog import CATALOG_COLUMNS, catalog_items

    t = pd.Timestamp("2026-09-05 12:00", tz="UTC")
    items_clean = pd.DataFrame(
        {
            "item_id": ["listed_late", "listed_early", "never_listed", "quiet"],
            "title": "t",
            "description": "d",
            "category": "c",
            "brand": "b",
            "price": 1.0,
            "available": True,
            "listed_at": [t, t - 3 * DAY, pd.NaT, pd.NaT],
            "ingested_at": t + 9 * DAY,
        }
    )
    events = pd.DataFrame(
        {
            "item_id": ["listed_late", "listed_late", "listed_early", "never_listed"],
            "event_time": [t - DAY, t + DAY, t, t - 2 * DAY],
        }
    )
    catalog = catalog_items(items_clean, events)
    assert list(catalog.columns) == CATALOG_COLUMNS
    assert catalog["first_seen"].tolist() == [t - DAY, t - 3 * DAY, t - 2 * DAY, t + 9 * DAY]
