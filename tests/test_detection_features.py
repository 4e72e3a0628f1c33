import numpy as np
import pandas as pd

from dagster_project.detection.bots import score_users, user_traffic_features
from dagster_project.features.build import item_features, user_features

T0 = pd.Timestamp("2026-09-01 08:00", tz="UTC")


def _humans(n_users: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for u in range(n_users):
        t = T0 + pd.Timedelta(hours=int(rng.integers(0, 200)))
        for _ in range(int(rng.integers(5, 60))):
            t += pd.Timedelta(seconds=float(rng.lognormal(np.log(35), 0.8)))
            rows.append((f"h{u}", f"i{rng.integers(0, 500)}", "view", t))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "event_time"])


def test_crawler_and_click_farm_are_flagged_with_reasons_humans_are_not():
    rng = np.random.default_rng(0)
    humans = _humans(300, rng)
    crawler = pd.DataFrame(
        {
            "user_id": "crawler",
            "item_id": [f"i{k}" for k in range(600)],
            "event_type": "view",
            "event_time": T0
            + pd.to_timedelta(np.arange(600) * 2.0 + rng.uniform(0, 0.05, 600), "s"),
        }
    )
    farm = pd.DataFrame(
        {
            "user_id": "farm",
            "item_id": rng.choice(["i1", "i2", "i3"], 150),
            "event_type": "view",
            "event_time": T0 + pd.to_timedelta(np.cumsum(rng.uniform(3, 12, 150)), "s"),
        }
    )
    scores = score_users(user_traffic_features(pd.concat([humans, crawler, farm]))).set_index(
        "user_id"
    )
    assert scores.loc["crawler", "is_bot"] and scores.loc["farm", "is_bot"]
    assert "events per active minute" in scores.loc["crawler", "reasons"]
    assert "views per distinct item" in scores.loc["farm", "reasons"]
    assert scores.loc[scores.index.str.startswith("h"), "is_bot"].mean() <= 0.01
    assert scores["bot_score"].between(0, 1).all()


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
    scores = pd.DataFrame({"user_id": ["u1"], "bot_score": [0.1]})
    snap = user_features(events, scores, pd.Timestamp("2026-11-30", tz="UTC"))
    assert snap["event_timestamp"].tolist() == list(
        pd.to_datetime(["2026-09-02", "2026-09-04"], utc=True)
    )
    assert snap["views"].tolist() == [1, 2] and snap["purchases"].tolist() == [1, 1]
    assert snap["spend"].tolist() == [10.0, 10.0]
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
