import re

import numpy as np
import pandas as pd
import polars as pl
import pytest

from dagster_project.detection.bots import robust_z, score_users, traffic_features
from dagster_project.detection.items import item_outliers
from dagster_project.features.build import item_features, user_features
from dagster_project.pseudonyms import pseudonymise

T0 = pd.Timestamp("2026-09-01 08:00", tz="UTC")


def _humans(n_users: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for u in range(n_users):
        t = T0 + pd.Timedelta(hours=int(rng.integers(0, 200)))
        for _ in range(int(rng.integers(5, 60))):
            t += pd.Timedelta(seconds=float(rng.lognormal(np.log(35), 0.8)))
            kind = rng.choice(["view", "add_to_cart", "purchase"], p=[0.85, 0.1, 0.05])
            rows.append((f"h{u}", f"i{rng.integers(0, 500)}", kind, t))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "event_time"])


def _events(user: str, items, types, seconds) -> pd.DataFrame:
    n = len(seconds)
    return pd.DataFrame(
        {
            "user_id": user,
            "item_id": np.broadcast_to(np.asarray(items, dtype=object), n),
            "event_type": np.broadcast_to(np.asarray(types, dtype=object), n),
            "event_time": T0 + pd.to_timedelta(np.asarray(seconds, dtype=float), "s"),
        }
    )


def _score(*frames: pd.DataFrame) -> pd.DataFrame:
    users, _ = traffic_features(pd.concat(frames, ignore_index=True))
    return score_users(users).set_index("user_id")


def test_timing_features_are_exact():
    """Gaps at one interval, order lines at one instant, checkout time and sessions."""
    crawl = _events("c", [f"i{k}" for k in range(40)], "view", np.arange(40) * 0.15)
    order = pd.concat(
        [
            _events("b", ["i1", "i2"], "add_to_cart", [0, 20]),
            _events("b", ["i1", "i2"], "purchase", [50, 50]),  # one order, two lines
            _events("b", ["i3"], "view", [50 + 3600]),  # an hour later: a second session
        ]
    )
    users, sessions = traffic_features(pd.concat([crawl, order]))
    f = users.to_pandas().set_index("user_id")
    assert f.loc["c", "modal_gap_share"] == 1.0 and f.loc["c", "modal_gap_s"] == 0.15
    assert f.loc["c", "events_per_minute"] == 40  # 39 gaps of 0.15 s: under a minute
    assert f.loc["b", "gaps"] == 2  # the zero gap between order lines is not a gap
    assert f.loc["b", "checkouts"] == 2 and f.loc["b", "median_checkout_s"] == 40.0
    assert f.loc["b", "sessions"] == 2 and f.loc["b", "purchases"] == 2
    assert sessions.filter(sessions["user_id"] == "b")["events"].to_list() == [4, 1]


def test_each_abuse_pattern_is_flagged_with_reasons_and_humans_are_not():
    rng = np.random.default_rng(0)
    humans = _humans(400, rng)
    n = 600
    crawler = _events(
        "crawler", [f"i{k}" for k in range(n)], "view", np.arange(n) * 2.0 + rng.uniform(0, 0.05, n)
    )
    farm = _events(
        "farm",
        rng.choice(["i1", "i2", "i3"], 150),
        rng.choice(["view", "view", "favorite", "add_to_cart"], 150),
        np.cumsum(rng.uniform(3, 12, 150)),
    )
    hoard_t = np.repeat(np.arange(30) * 720.0, 4) + np.tile(np.arange(4) * 5.0, 30)
    hoarder = _events("hoarder", np.tile(["i7", "i8", "i9", "i10"], 30), "add_to_cart", hoard_t)
    scores = _score(humans, crawler, farm, hoarder)
    assert scores.loc["crawler", "pattern"] == "scripted_crawl"
    assert re.search(r"100% of gaps within 0\.5 s of 2\.0\d s", scores.loc["crawler", "reasons"])
    assert scores.loc["farm", "pattern"] == "click_farm"
    assert "views/favorites/carts per item" in scores.loc["farm", "reasons"]
    assert scores.loc["hoarder", "pattern"] == "cart_hoarding"
    assert "100% of carted items never bought" in scores.loc["hoarder", "reasons"]
    human = scores.index.str.startswith("h")
    assert scores.loc[human, "is_bot"].mean() <= 0.01
    assert scores["bot_score"].between(0, 1).all()
    assert (scores.loc[~human, "reasons"].str.len() > 0).all()


def test_a_bulk_buyer_reordering_the_same_items_is_not_a_bot():
    """Hard negative: repeated carts of the same SKUs, bought in bulk as one order each time."""
    rng = np.random.default_rng(1)
    items = [f"i{k}" for k in range(12)]
    frames = []
    for week in range(4):
        start = week * 7 * 86_400 + 9 * 3600
        carts = start + np.cumsum(rng.uniform(4, 40, len(items)))
        frames.append(_events("b2b", items, "add_to_cart", carts))
        frames.append(_events("b2b", items, "purchase", np.full(len(items), carts[-1] + 60)))
    scores = _score(_humans(300, rng), *frames)
    assert not scores.loc["b2b", "is_bot"], scores.loc["b2b"].to_dict()


def test_robust_z_never_divides_by_a_zero_spread():
    values = np.array([1.0, 1.0, 1.0, 1.0, 5.0])
    z = robust_z(values, np.ones(5, bool), min_scale=0.5)
    assert z.tolist() == [0.0, 0.0, 0.0, 0.0, 8.0]


def test_a_bot_design_not_written_for_the_generator_is_caught(pipeline_run):
    """devtools/foreign_bots.py was written without reading the detector or the generator's bots."""
    from devtools.foreign_bots import foreign_bot_events

    _, out = pipeline_run
    humans = pd.read_parquet(
        out.table("events_clean"), columns=["user_id", "item_id", "event_type", "event_time"]
    )
    catalog = pd.read_parquet(out.table("items_clean"), columns=["item_id", "category", "price"])
    bots, labels = foreign_bot_events(catalog, "2026-09-01", 21, 20, seed=3)
    events = pd.concat([humans, bots[humans.columns]], ignore_index=True)
    events["event_time"] = events["event_time"].astype("datetime64[us, UTC]")
    users, _ = traffic_features(events, catalog[["item_id", "category"]])
    scores = score_users(users).merge(labels, on="user_id", how="left")
    recall = scores.dropna(subset=["design"]).groupby("design")["is_bot"].mean()
    assert recall["hoarder"] >= 0.9 and recall["scraper"] >= 0.6, recall.to_dict()
    planted = pseudonymise(pd.read_parquet(out.ground_truth / "traffic_labels.parquet")["user_id"])
    plain = scores[scores["design"].isna() & ~scores["user_id"].isin(planted)]
    assert plain["is_bot"].mean() <= 0.01


def test_item_outliers_price_spike_and_bot_traffic():
    cats = [f"c{k % 2}" for k in range(20)]
    catalog = pl.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(20)],
            "category": cats,
            "price": [10.0 + k % 3 for k in range(19)] + [400.0],
        }
    )
    rng = np.random.default_rng(2)
    days = np.repeat(np.arange(10), 40)
    base = pd.DataFrame(
        {
            "user_id": rng.choice([f"h{k}" for k in range(30)], len(days)),
            "item_id": rng.choice([f"i{k}" for k in range(1, 19)], len(days)),
            "event_time": T0
            + pd.to_timedelta(days * 86_400 + rng.uniform(0, 80_000, len(days)), "s"),
        }
    )
    spike = pd.DataFrame(
        {
            "user_id": [f"h{k % 30}" for k in range(60)],
            "item_id": "i0",
            "event_time": T0 + pd.Timedelta(days=5) + pd.to_timedelta(np.arange(60) * 30.0, "s"),
        }
    )
    bot = pd.DataFrame(
        {
            "user_id": "bot",
            "item_id": "i19",
            "event_time": T0 + pd.to_timedelta(np.arange(25) * 5.0, "s"),
        }
    )
    events = pl.from_pandas(pd.concat([base, spike, bot], ignore_index=True))
    out = item_outliers(events, catalog, pl.Series(["bot"])).set_index("item_id")
    assert out.loc["i19", "price_outlier"] and "x the c1 median" in out.loc["i19", "reasons"]
    assert out.loc["i0", "popularity_spike"] and "usual share" in out.loc["i0", "reasons"]
    assert out.loc["i19", "bot_driven"] and "100% of its 25 events" in out.loc["i19", "reasons"]
    assert not out.drop(index=["i0", "i19"])["is_outlier"].any()


def test_feature_snapshots_never_see_their_own_day():
    events = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1"],
            "item_id": ["i1", "i1", "i2"],
            "event_type": ["view", "purchase", "view"],
            "event_time": pd.to_datetime(
                ["2026-09-01 10:00", "2026-09-01 11:00", "2026-09-03 09:00"], utc=True
            ),
            "price": [np.nan, 5.0, np.nan],
            "quantity": pd.array([pd.NA, 2, pd.NA], dtype="Int64"),
        }
    )
    # The bot score as it was known each day: a score dated 09-03 (from events up to 09-03)
    # must not reach the snapshots of 09-01 and 09-02.
    scores = pd.DataFrame(
        {
            "user_id": ["u1", "u1"],
            "day": pd.to_datetime(["2026-09-01", "2026-09-03"], utc=True),
            "bot_score": [0.1, 0.8],
        }
    )
    snap = user_features(events, scores, pd.Timestamp("2026-11-30", tz="UTC"))
    assert snap["bot_score"].tolist() == [0.1, 0.1, 0.8]
    # Active days 09-01 and 09-03, and 09-02 when 09-01's events leave the 1-day window.
    assert snap["event_timestamp"].tolist() == list(
        pd.to_datetime(["2026-09-02", "2026-09-03", "2026-09-04"], utc=True)
    )
    assert snap["views"].tolist() == [1, 1, 2] and snap["purchases"].tolist() == [1, 1, 1]
    assert snap["views_1d"].tolist() == [1, 0, 1] and snap["views_7d"].tolist() == [1, 1, 2]
    assert snap["spend"].tolist() == [10.0, 10.0, 10.0]
    assert snap["recency_days"].tolist() == pytest.approx([13 / 24, 37 / 24, 15 / 24])
    # Every snapshot's time is after every event it counts: a point-in-time join cannot leak.
    for _, s in snap.iterrows():
        counted = events[events["event_time"] < s["event_timestamp"]]
        assert len(counted) == s["views"] + s["purchases"]

    catalog = pd.DataFrame(
        {
            "item_id": ["i1", "i2"],
            "price": [5.0, 50.0],
            "category": ["A/B/C", "A/B/D"],
            "available": [True, True],
            "first_seen": pd.to_datetime(["2026-09-01 09:00", "2026-09-02 00:00"], utc=True),
        }
    )
    items = item_features(events, catalog, pd.Timestamp("2026-11-30", tz="UTC"))
    first = items.sort_values("event_timestamp").groupby("item_id").head(1).set_index("item_id")
    assert (
        first.loc["i1", "event_timestamp"] == catalog["first_seen"][0]
        and first.loc["i1", "views"] == 0
    )
    assert set(items["price_bucket"]) == {1, 4}  # [5, 10) and [40, 80)


def test_an_items_peak_day_is_the_same_however_the_rows_arrive():
    """Ties between equally busy days go to the later day, whatever the row order."""
    from datetime import UTC, date, datetime, timedelta

    from dagster_project.detection.items import popularity_spikes

    start = datetime(2026, 9, 1, tzinfo=UTC)
    times = [start + timedelta(days=d, hours=h) for d in (0, 3) for h in range(5)]
    times += [start + timedelta(days=d) for d in range(6)]
    events = pl.DataFrame(
        {"item_id": ["i1"] * 10 + ["i2"] * 6, "event_time": times},
        schema={"item_id": pl.String, "event_time": pl.Datetime("us", "UTC")},
    )
    runs = [
        popularity_spikes(events.sample(fraction=1.0, shuffle=True, seed=s).lazy()).sort("item_id")
        for s in range(8)
    ]
    assert all(r.equals(runs[0]) for r in runs)
    assert runs[0].filter(pl.col("item_id") == "i1")["peak_date"][0] == date(2026, 9, 4)


def test_flagged_users_leave_the_behaviour_table_with_an_audit_row_each(tmp_path):
    from dagster_project.detection.exclusion import exclude_flagged_users

    days = tmp_path / "events_clean"
    days.mkdir()
    stamps = pd.to_datetime(["2026-09-02 10:00"] * 3 + ["2026-09-01 09:00"] * 3, utc=True)
    events = pd.DataFrame(
        {
            "user_id": ["h", "b", None, "b", "h", "x"],
            "item_id": ["i1", "i2", "i3", "i4", "i5", "i6"],
            "event_type": "view",
            "event_time": stamps,
            "source_file": "f.csv",
            "source_line": range(6),
        }
    )
    # Two days' files, the later day's written first: rows come out day by day, in file order.
    events.iloc[:3].to_parquet(days / "2026-09-02.parquet", index=False)
    events.iloc[3:].to_parquet(days / "2026-09-01.parquet", index=False)
    scores = pd.DataFrame(
        {
            "user_id": ["h", "b", "x"],
            "is_bot": [False, True, False],
            "bot_score": [0.1, 0.9, 0.2],
            "pattern": [None, "crawler", None],
            "reasons": ["", "fast", ""],
            "detector_version": "v1",
        }
    )
    kept_path = tmp_path / "behaviour_events.parquet"
    split = exclude_flagged_users(days, scores, kept_path)
    kept = pd.read_parquet(kept_path)
    # A row without a user is no flagged user's: it stays (the contract quarantines those).
    assert kept["user_id"].tolist() == ["h", "x", "h", None]
    assert kept["item_id"].tolist() == ["i5", "i6", "i1", "i3"]
    assert list(kept.columns) == ["user_id", "item_id", "event_type", "event_time"]
    assert kept["event_time"].dtype == events["event_time"].dtype
    assert split.events_kept == 4 and split.events_excluded == 2
    assert split.events_per_day["events"].tolist() == [2, 2]
    assert split.audit.to_dict("records") == [
        {
            "user_id": "b",
            "events_excluded": 2,
            "bot_score": 0.9,
            "pattern": "crawler",
            "reasons": "fast",
            "detector_version": "v1",
        }
    ]
    # Switched off: every event is kept, nobody is audited, nothing is lost.
    kept_all = exclude_flagged_users(days, scores, kept_path, exclude_bots=False)
    assert kept_all.events_kept == len(events) and kept_all.audit.empty
    assert len(pd.read_parquet(kept_path)) == len(events)
    # A user with two score rows is audited once, with the flagged row's verdict.
    twice = pd.concat([scores, scores.iloc[[1]].assign(is_bot=False, pattern=None)])
    assert exclude_flagged_users(days, twice.iloc[::-1], kept_path).audit.to_dict(
        "records"
    ) == split.audit.to_dict("records")
    # No event files: a clear error, not DuckDB's.
    with pytest.raises(FileNotFoundError, match="materialize events_clean first"):
        exclude_flagged_users(tmp_path / "nothing", scores, kept_path)


def test_the_events_per_day_plot_says_when_no_event_was_kept():
    from dagster_project.assets.behaviour import _events_per_day_plot

    none = pd.DataFrame({"day": [], "event_type": [], "events": []})
    assert _events_per_day_plot(none).value == "no events kept"
    counts = pd.DataFrame(
        {
            "day": pd.to_datetime(["2026-09-01", "2026-09-02"], utc=True),
            "event_type": "view",
            "events": [3, 4],
        }
    )
    assert _events_per_day_plot(counts).value.startswith("![events per day by type](data:")
