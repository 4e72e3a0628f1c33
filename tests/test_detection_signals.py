"""The detector's signals that need no baseline (issue 19): each flags the bot it is for and
leaves its human look-alike alone, and none depends on how timestamps are rounded."""

import numpy as np
import pandas as pd
import pytest

from dagster_project.detection.bots import traffic_features
from dagster_project.detection.detector import detect_bots
from tests.test_detection_features import T0
from tests.test_detection_features import _events as _rows

CATEGORIES = [f"c{k}" for k in range(20)]
CATALOG = pd.DataFrame(
    {
        "item_id": [f"i{k:04d}" for k in range(1000)],
        "category": [CATEGORIES[k % 20] for k in range(1000)],
        "price": np.round(np.random.default_rng(0).lognormal(3, 0.6, 1000), 2),
    }
)


def _shoppers(n: int, seed: int = 0) -> pd.DataFrame:
    """People: a few visits over two weeks, each in one category, items in no order, gaps
    of tens of seconds; some carts, a few purchases a minute or more after the view."""
    rng = np.random.default_rng(seed)
    frames = []
    for u in range(n):
        for _ in range(int(rng.integers(1, 5))):
            start = float(rng.uniform(0, 14 * 86_400))
            category = int(rng.integers(0, 20))
            k = int(rng.integers(3, 15))
            items = CATALOG["item_id"].to_numpy()[category + 20 * rng.integers(0, 50, k)]
            t = start + np.cumsum(rng.lognormal(np.log(30), 0.8, k))
            frames.append(_rows(f"h{u}", items, "view", t))
            if rng.random() < 0.3:
                frames.append(_rows(f"h{u}", items[-1:], "add_to_cart", t[-1:] + 20))
                if rng.random() < 0.5:
                    frames.append(_rows(f"h{u}", items[-1:], "purchase", t[-1:] + 90))
    return pd.concat(frames, ignore_index=True)


def _detect(*frames: pd.DataFrame):
    return detect_bots(pd.concat(frames, ignore_index=True), CATALOG)


@pytest.fixture(scope="module")
def shoppers() -> pd.DataFrame:
    return _shoppers(300)


def test_buy_now_scalpers_are_flagged_and_a_flash_sale_crowd_is_not(shoppers):
    rng = np.random.default_rng(1)
    frames = []
    for k in range(6):  # a few events each: view the drop, pay seconds later, no cart
        t = 5 * 86_400 + 19 * 3600 + float(rng.uniform(0, 5))
        frames.append(_rows(f"scalper{k}", ["i0001", "i0001"], ["view", "purchase"], [t, t + 3]))
    for k in range(40):  # the rush: reloads the deal, carts it, then pays
        t = 6 * 86_400 + 19 * 3600 + np.cumsum(rng.uniform(2.5, 8, int(rng.integers(2, 10))))
        frames += [
            _rows(f"rush{k}", "i0002", "view", t),
            _rows(f"rush{k}", ["i0002"], "add_to_cart", t[-1:] + 5),
            _rows(f"rush{k}", ["i0002"], "purchase", t[-1:] + 40),
        ]
    scores = _detect(shoppers, *frames).users.set_index("user_id")
    scalpers = scores.loc[[f"scalper{k}" for k in range(6)]]
    assert scalpers["is_bot"].all() and (scalpers["pattern"] == "buy_now_scalping").all()
    assert "within 10 s of viewing them" in scalpers["reasons"].iloc[0]
    assert not scores.loc[scores.index.str.startswith("rush"), "is_bot"].any()


def test_a_slow_crawler_walking_the_listing_is_flagged_and_a_browser_is_not(shoppers):
    rng = np.random.default_rng(2)
    listing = CATALOG[CATALOG["category"] == "c3"].sort_values("item_id")["item_id"].to_numpy()
    # tens of seconds per view, jittered: the order gives it away, not the pace
    crawler = _rows("crawler", listing[:40], "view", np.cumsum(rng.uniform(20, 60, 40)))
    by_price = CATALOG[CATALOG["category"] == "c4"].sort_values("price")["item_id"].to_numpy()
    pricer = _rows("pricer", by_price[:30], "view", 86_400 + np.cumsum(rng.uniform(15, 40, 30)))
    browser = _rows(
        "browser", rng.permutation(listing)[:40], "view", np.cumsum(rng.uniform(20, 60, 40))
    )
    scores = _detect(shoppers, crawler, pricer, browser).users.set_index("user_id")
    assert scores.loc["crawler", "pattern"] == "listing_crawl"
    assert (
        "40 consecutive views walking a category's listing in item id order"
        in (scores.loc["crawler", "reasons"])
    )
    assert scores.loc["pricer", "pattern"] == "listing_crawl"
    assert "price order" in scores.loc["pricer", "reasons"]
    assert not scores.loc["browser", "is_bot"]
    assert scores.loc[scores.index.str.startswith("h"), "ordered_views"].max() < 8


def _ring(shoppers: pd.DataFrame, members: int, days: int) -> list[pd.DataFrame]:
    """Accounts that, on each of `days` days at 20:00, favourite the same three rarely seen
    items, after camouflage views of popular ones; otherwise they browse like anyone."""
    rng = np.random.default_rng(3)
    popular = shoppers["item_id"].value_counts().index[:20].to_numpy()
    targets = ["i0911", "i0932", "i0953"]
    frames = []
    for m in range(members):
        for d in range(days):
            t = (2 + 2 * d) * 86_400 + 20 * 3600 + float(rng.uniform(0, 3000))
            cover = rng.choice(popular, 4)
            times = t + np.cumsum(rng.uniform(20, 90, 4 + 2 * len(targets)))
            items = [*cover, *np.repeat(targets, 2)]
            types = ["view"] * 4 + ["view", "favorite"] * len(targets)
            frames.append(_rows(f"ring{m}", items, types, times))
    return frames


def test_accounts_in_lockstep_form_a_group_and_a_crowd_does_not(shoppers):
    rng = np.random.default_rng(4)
    crowd = [  # a flash-sale crowd: one popular item, one evening, in minutes
        _rows(f"crowd{k}", ["i0005", "i0005"], ["view", "add_to_cart"], 3 * 86_400 + 68_400 + rng.uniform(0, 600) + np.array([0, 30]))
        for k in range(60)
    ]  # fmt: skip
    detection = _detect(shoppers, *_ring(shoppers, 7, 3), *crowd)
    scores = detection.users.set_index("user_id")
    (group,) = detection.groups.itertuples()
    assert group.members == 7 and group.items == 3 and group.days == 3
    members = detection.group_members
    assert sorted(members.loc[members["group_id"] == "G1", "user_id"]) == [
        f"ring{m}" for m in range(7)
    ]
    assert (scores.loc[[f"ring{m}" for m in range(7)], "group_id"] == "G1").all()
    assert set(group.item_ids.split(",")) == {"i0911", "i0932", "i0953"}
    assert "7 accounts acted together (favorite, view;" in group.reason
    assert "on the same 3 item(s) within 2 h windows on 3 day(s)" in group.reason
    ring = scores.loc[[f"ring{m}" for m in range(7)]]
    assert ring["is_bot"].all() and (ring["pattern"] == "coordinated_group").all()
    assert "group G1" in ring["reasons"].iloc[0]
    assert not scores.loc[scores.index.str.startswith(("crowd", "h")), "is_bot"].any()


def test_a_ring_that_met_once_is_no_group(shoppers):
    """One shared evening is what a crowd or chance does; a ring comes back."""
    assert detect_bots(pd.concat([shoppers, *_ring(shoppers, 7, 1)]), CATALOG).groups.empty


def test_a_replayed_session_is_a_copy_and_its_original_is_not(shoppers):
    rng = np.random.default_rng(5)
    items = CATALOG["item_id"].to_numpy()[rng.choice(1000, 9, replace=False)]
    seconds = np.cumsum(rng.uniform(10, 80, 9))
    original = _rows("src-acct", items, "view", 86_400 + seconds)
    # a day later, at 0.7x the pace, with sub-second jitter and one event dropped
    replay = _rows(
        "replayer", np.delete(items, 4), "view", 2 * 86_400 + np.delete(0.7 * seconds, 4)
        + rng.uniform(0, 0.9, 8)
    )  # fmt: skip
    # the same items in another order at another pace: a shopper on the same path, no copy
    alike = _rows("alike", rng.permutation(items), "view", 3 * 86_400 + seconds)
    scores = _detect(shoppers, original, replay, alike).users.set_index("user_id")
    assert scores.loc["replayer", "pattern"] == "copied_sessions"
    assert (
        "repeat earlier sessions of 1 other account(s) (the first from 2026-09-02"
        in (scores.loc["replayer", "reasons"])
    )
    assert "src-acct" not in scores.loc["replayer", "reasons"]  # the original is not named
    assert "at 0.7x its pace" in scores.loc["replayer", "reasons"]
    assert not scores.loc["src-acct", "is_bot"] and not scores.loc["alike", "is_bot"]


def test_a_replay_at_another_pace_at_every_step_is_no_copy(shoppers):
    """The same items in the same order, but gaps that no single pace factor maps."""
    rng = np.random.default_rng(6)
    items = CATALOG["item_id"].to_numpy()[rng.choice(1000, 9, replace=False)]
    original = _rows("original", items, "view", 86_400 + np.cumsum(rng.uniform(10, 80, 9)))
    gaps = np.array([5, 120, 8, 200, 6, 150, 7, 180, 5.0])
    follower = _rows("follower", items, "view", 2 * 86_400 + np.cumsum(gaps))
    scores = _detect(shoppers, original, follower).users.set_index("user_id")
    assert not scores.loc["follower", "is_bot"]


def test_short_replays_count_when_an_account_repeats_them():
    """Three steps replayed once may be a coincidence; two such replays by one account are
    not (in a shop with sessions enough for three rare steps to be evidence at all)."""
    shoppers = _shoppers(800, seed=1)
    rng = np.random.default_rng(7)
    picks = CATALOG["item_id"].to_numpy()[rng.choice(1000, 12, replace=False)]
    frames, replays = [], []
    for k, items in enumerate([picks[:4], picks[4:8], picks[8:]]):
        seconds = np.array([0.0, 30.0, 75.0, 140.0]) + 5 * k
        frames.append(_rows(f"origin{k}", items, "view", 86_400 * (k + 1) + 3_600 + seconds))
        replays.append((items, 86_400 * 20 + 7_200 * k + 0.8 * seconds))
    twice = _rows("twice", np.concatenate([r[0] for r in replays[:2]]), "view",
                  np.concatenate([r[1] for r in replays[:2]]))  # fmt: skip
    once = _rows("once", replays[2][0], "view", replays[2][1])
    scores = _detect(shoppers, *frames, twice, once).users.set_index("user_id")
    assert scores.loc["twice", "pattern"] == "copied_sessions"
    assert not scores.loc["once", "is_bot"]
    assert not scores.loc[[f"origin{k}" for k in range(3)], "is_bot"].any()


def test_a_replay_timed_by_a_later_event_is_still_a_copy(shoppers):
    """A replay that dropped an item's first view is timed by its later event; the one step
    that strays is outvoted by the others."""
    rng = np.random.default_rng(8)
    items = CATALOG["item_id"].to_numpy()[rng.choice(1000, 9, replace=False)]
    seconds = np.array([0.0, 20, 40, 140, 180, 230, 270, 330, 380])
    # the third item is viewed at 40 s and put in the cart at 130 s
    original = _rows("original", [*items[:3], items[2], *items[3:]], ["view"] * 3 +
                     ["add_to_cart"] + ["view"] * 6, 86_400 + np.insert(seconds, 3, 130))  # fmt: skip
    # the replay, at 0.8x the pace, dropped that view and kept the cart
    replay_seconds = 0.8 * np.array([0.0, 20, 130, 140, 180, 230, 270, 330, 380])
    replay = _rows("replayer", items, ["view"] * 9, 3 * 86_400 + replay_seconds)
    scores = _detect(shoppers, original, replay).users.set_index("user_id")
    assert scores.loc["replayer", "pattern"] == "copied_sessions"
    assert not scores.loc["original", "is_bot"]


def _bots_for_rounding(rng: np.random.Generator) -> list[pd.DataFrame]:
    listing = CATALOG[CATALOG["category"] == "c7"].sort_values("item_id")["item_id"].to_numpy()
    crawl = _rows("crawler", [f"i{k:04d}" for k in range(300)], "view", np.arange(300) * 3.0)
    walk = _rows("walker", listing[:40], "view", 86_400 + np.cumsum(rng.uniform(20, 40, 40)))
    buy = _rows("scalper", ["i0001", "i0001"], ["view", "purchase"], [50_000.0, 50_004.0])
    return [crawl, walk, buy]


@pytest.mark.parametrize("jitter_s", [0.3, 0.9])
def test_no_feature_depends_on_timestamp_rounding(shoppers, jitter_s):
    """Every user feature and every flag is the same on whole-second timestamps as on the
    same events with sub-second jitter (the jittered crawler keeps its regular gaps)."""
    rng = np.random.default_rng(7)
    events = pd.concat([shoppers, *_bots_for_rounding(rng)], ignore_index=True)
    jittered = events.assign(
        event_time=events["event_time"]
        + pd.to_timedelta(rng.uniform(0, jitter_s, len(events)), "s")
    )
    whole = jittered.assign(event_time=jittered["event_time"].dt.floor("s"))
    features = {}
    for name, frame in (("whole", whole), ("jittered", jittered)):
        users, _ = traffic_features(frame, CATALOG)
        features[name] = users.to_pandas().set_index("user_id").sort_index()
    a, b = features["whole"], features["jittered"]
    numeric = a.select_dtypes("number").columns
    busy = a["events"] >= 10
    regular = busy & (a["modal_gap_share"] >= 0.5)  # only there is a modal gap meaningful
    for column in numeric:
        rows = regular if column == "modal_gap_s" else busy
        x, y = a.loc[rows, column].astype(float), b.loc[rows, column].astype(float)
        both = x.notna() & y.notna()
        close = np.isclose(
            x[both], y[both], rtol=0.2, atol=0.05 * max(float(x.abs().median()), 1e-9) + 0.05
        )
        assert close.mean() >= 0.95, (column, x[both][~close].head(), y[both][~close].head())
    flags = {
        name: detect_bots(frame, CATALOG).users.set_index("user_id")["is_bot"]
        for name, frame in (("whole", whole), ("jittered", jittered))
    }
    assert flags["whole"][["crawler", "walker", "scalper"]].all()
    assert flags["jittered"][["crawler", "walker", "scalper"]].all()
    assert (flags["whole"] == flags["jittered"]).mean() >= 0.995
    # 3 s gaps jittered by up to 0.9 s each side stay mostly within the half-second tolerance
    assert min(a.loc["crawler", "modal_gap_share"], b.loc["crawler", "modal_gap_share"]) >= 0.75


def test_the_score_history_is_point_in_time(shoppers):
    """A crawl that starts on day 10 is not in the day-6 checkpoint, is in the last day's
    row; rows of earlier runs stay as they were, and a rerun only adds what is missing."""
    import polars as pl

    from dagster_project.detection.history import checkpoint_days, score_history

    listing = CATALOG[CATALOG["category"] == "c3"].sort_values("item_id")["item_id"].to_numpy()
    crawl = _rows("crawler", listing[:40], "view", 10 * 86_400 + np.cumsum(np.full(40, 30.0)))
    events = pd.concat([shoppers, crawl], ignore_index=True)
    latest = detect_bots(events, CATALOG).users
    lazy = pl.from_pandas(events).lazy()
    history = score_history(lazy, pl.from_pandas(CATALOG), latest, None, say=lambda _: None)
    first, last = events["event_time"].min().floor("D"), events["event_time"].max().floor("D")
    assert checkpoint_days(first, last) == [first + pd.Timedelta(days=6)]
    assert sorted(history["day"].unique()) == [first + pd.Timedelta(days=6), last]
    crawler = history[history["user_id"] == "crawler"].set_index("day")["bot_score"]
    assert crawler.index.tolist() == [last] and crawler.iloc[0] >= 0.5
    # the next day's run keeps the earlier rows and dates its own scores on its day
    next_day = crawl.assign(event_time=last + pd.Timedelta(days=1, hours=9))
    later = pd.concat([events, next_day], ignore_index=True)
    again = score_history(
        pl.from_pandas(later).lazy(), pl.from_pandas(CATALOG), latest, history, say=lambda _: None
    )
    kept = again[again["day"] <= last]
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), history)
    assert again["day"].max() == last + pd.Timedelta(days=1)


def test_a_drop_bought_out_within_a_minute_of_its_listing_is_an_item_outlier():
    """Time from listing to first purchase: scripts buy a drop out in seconds; people who buy
    a new item an hour later, or an old item at any time, do not make it an outlier."""
    import polars as pl

    from dagster_project.detection.items import item_outliers

    listed = T0 + pd.Timedelta(days=3, hours=19)
    catalog = pl.DataFrame(
        {
            "item_id": ["drop", "new", "old"],
            "category": ["c1", "c1", "c1"],
            "price": [100.0, 90.0, 80.0],
            "listed_at": [listed, listed, T0 - pd.Timedelta(days=30)],
        }
    )
    buys = [
        *[(f"s{k}", "drop", listed + pd.Timedelta(seconds=2 + k)) for k in range(5)],
        *[(f"h{k}", "new", listed + pd.Timedelta(minutes=60 + k)) for k in range(5)],
        *[(f"h{k}", "old", T0 + pd.Timedelta(days=1, seconds=k)) for k in range(5)],
    ]
    events = pl.DataFrame(
        {
            "user_id": [b[0] for b in buys],
            "item_id": [b[1] for b in buys],
            "event_type": ["purchase"] * len(buys),
            "event_time": [b[2] for b in buys],
        }
    )
    out = item_outliers(events, catalog, pl.Series([], dtype=pl.String)).set_index("item_id")
    assert out.loc["drop", "sniped_drop"] and out.loc["drop", "drop_buyers"] == 5
    assert (
        "bought by 5 accounts within 60 s of its listing (the first 2 s after it)"
        in (out.loc["drop", "reasons"])
    )
    assert out.loc["new", "first_purchase_after_listing_s"] == 3600.0
    assert not out.loc["new", "sniped_drop"] and not out.loc["old", "sniped_drop"]


def test_a_run_scores_the_detection_window_and_keeps_everyone_else_s_score(shoppers, tmp_path):
    """Forty days later the shoppers come back, the crawl of day 10 does not: a run scores
    the window (DETECTION_WINDOW_DAYS up to the last event's day) and carries the crawler's
    earlier row; a history no longer than the window is scored whole ("all"), and so is
    one whose earlier scores came from another detector version."""
    import polars as pl

    from dagster_project.detection.detector import (
        DETECTION_WINDOW_DAYS,
        detect_in_window,
        detection_window,
    )

    listing = CATALOG[CATALOG["category"] == "c3"].sort_values("item_id")["item_id"].to_numpy()
    crawl = _rows("crawler", listing[:40], "view", 10 * 86_400 + np.cumsum(np.full(40, 30.0)))
    first_run = pd.concat([shoppers, crawl], ignore_index=True)
    detection, window, carried = detect_in_window(pl.from_pandas(first_run).lazy(), CATALOG, None)
    assert window == "all" and carried == 0
    # as the asset reads it: the table written by the run before, and a user whose events
    # were all deleted since (never carried)
    gone = detection.users.iloc[[0]].assign(user_id="gone")
    pd.concat([detection.users, gone]).to_parquet(tmp_path / "scores.parquet")
    earlier = pd.read_parquet(tmp_path / "scores.parquet")
    assert len(earlier) == first_run["user_id"].nunique() + 1
    assert earlier.set_index("user_id").loc["crawler", "is_bot"]

    back = shoppers.assign(event_time=shoppers["event_time"] + pd.Timedelta(days=40))
    history = pl.from_pandas(pd.concat([first_run, back], ignore_index=True)).lazy()
    last_day = back["event_time"].max().floor("D")
    start = last_day - pd.Timedelta(days=DETECTION_WINDOW_DAYS - 1)
    seen, named = detection_window(history)
    assert named == f"{start:%Y-%m-%d}..{last_day:%Y-%m-%d}"
    seen = seen.collect().to_pandas()
    assert seen["event_time"].min() >= start and "crawler" not in set(seen["user_id"])
    now, window, carried = detect_in_window(history, CATALOG, earlier)
    scores = now.users.set_index("user_id")
    assert window == named and scores.index.is_unique and carried == 1
    assert "crawler" in scores.index and "gone" not in scores.index
    assert scores["is_bot"].dtype == bool and scores.loc["crawler", "is_bot"]
    assert scores.loc["crawler"].equals(earlier.set_index("user_id").loc["crawler"])
    assert (scores.drop(index="crawler")["window"] == window).all()
    assert scores.loc["h0", "events"] == (back["user_id"] == "h0").sum()  # the window's only
    # scores of another detector version cannot stand beside these: every event, again
    other = earlier.assign(detector_version="an older detector")
    again, window, _ = detect_in_window(history, CATALOG, other)
    assert window == "all" and (again.users["window"] == "all").all()
    assert again.users.set_index("user_id").loc["h0", "events"] == (
        (first_run["user_id"] == "h0").sum() + (back["user_id"] == "h0").sum()
    )


def test_item_outliers_read_the_detection_window_not_the_whole_history():
    """A spike of 60 views on day 0 of a 50-day history is out of the window's sight; one
    on day 45 is in it, as the whole history sees it too."""
    import polars as pl

    from dagster_project.detection.detector import item_outliers_in_window
    from dagster_project.detection.items import item_outliers

    days = np.arange(50)
    rows = [(f"b{b}", d, 10) for b in range(20) for d in days]  # steady background
    rows += [
        (item, d, 60 if d == peak else 1) for item, peak in [("old", 0), ("new", 45)] for d in days
    ]
    events = pl.DataFrame(
        [
            {
                "user_id": f"u{n % 97}",
                "item_id": item,
                "event_type": "view",
                "event_time": T0 + pd.Timedelta(days=int(day), seconds=n),
            }
            for item, day, count in rows
            for n in range(count)
        ]
    ).with_columns(pl.col("event_time").dt.replace_time_zone("UTC"))
    catalog = pl.DataFrame(
        {"item_id": ["old", "new", *(f"b{b}" for b in range(20))], "category": "c", "price": 10.0}
    )
    nobody = pl.Series([], dtype=pl.String)
    whole = item_outliers(events.lazy(), catalog, nobody).set_index("item_id")
    windowed, window = item_outliers_in_window(events.lazy(), catalog, nobody)
    windowed = windowed.set_index("item_id")
    assert window != "all"
    assert whole.loc["old", "popularity_spike"] and not windowed.loc["old", "popularity_spike"]
    assert whole.loc["new", "popularity_spike"] and windowed.loc["new", "popularity_spike"]
    assert windowed.loc["old", "events"] == 35  # one a day in the window's 35 days


def test_a_carried_row_names_its_group_by_its_reason_not_a_renumbered_id():
    from dagster_project.detection.detector import with_earlier_scores

    now = pd.DataFrame(
        {"user_id": ["a"], "group_id": ["G1"], "reasons": ["group G1 (3 partners): x"]}
    )
    earlier = pd.DataFrame(
        {
            "user_id": ["a", "b"],
            "group_id": ["G2", "G2"],
            "reasons": ["-", "group G2 (3 partners): y"],
        }
    )
    scores = with_earlier_scores(now, earlier).set_index("user_id")
    assert scores.loc["a", "group_id"] == "G1"
    assert scores.loc["b", "group_id"] == ""
    assert scores.loc["b", "reasons"] == "a lockstep group of an earlier window (3 partners): y"
