"""The real-time path: recent activity (one definition, batch and online), the intake's landing
files, the service's bounds, and the whole loop on a copy of the tiny run's data directory."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from pydantic import ValidationError

from dagster_project.contracts import EVENT_COLUMNS
from dagster_project.features.recent import (
    RECENT_EVENTS,
    advance_recent_activity,
    recent_activity,
)
from dagster_project.quality.accounting import accounting_by_table
from dagster_project.serving.intake import raw_events_frame
from dagster_project.serving.landing import LandingWriter
from dagster_project.serving.recommend import RecommendRequest
from dagster_project.settings import layout
from dagster_project.sources.raw_table import read_landing_file
from tests.test_landing import _landing

T0 = pd.Timestamp("2026-10-01", tz="UTC")


def _events(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    times = T0 + pd.to_timedelta(np.sort(rng.integers(0, 3 * 86_400, n)), unit="s")
    return pd.DataFrame(
        {
            "event_id": [f"e{k:05d}" for k in range(n)],
            "user_id": rng.choice([f"u{k}" for k in range(6)], n),
            "item_id": rng.choice([f"i{k}" for k in range(30)], n),
            "event_type": rng.choice(["view", "view", "favorite", "add_to_cart", "purchase"], n),
            "event_time": times,
        }
    )


def _comparable(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    frame = frame[columns].sort_values("user_id", ignore_index=True)
    return frame.apply(
        lambda c: c.map(
            lambda v: str([str(x) for x in v]) if isinstance(v, list | np.ndarray) else str(v)
        )
    )


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    columns = [c for c in a.columns if c != "created"]
    pd.testing.assert_frame_equal(_comparable(a, columns), _comparable(b, columns))


def test_recent_activity_advanced_batch_by_batch_is_the_batchs():
    """The intake's path (advance the stored rows with each small batch) ends where the daily
    run's (all events at once) does, through day changes and equal timestamps."""
    events = _events(400)
    events.loc[10:20, "event_time"] = events.loc[10, "event_time"]  # ties
    cut = T0 + pd.Timedelta(days=1)
    state = recent_activity(events[events["event_time"] < cut], keep=12)
    later = events[events["event_time"] >= cut]
    for start in range(0, len(later), 7):
        part = later.iloc[start : start + 7]
        held = state[state["user_id"].isin(part["user_id"])]
        advanced = advance_recent_activity(pl.from_pandas(held), pl.from_pandas(part), 12)
        advanced = advanced.to_pandas()
        state = pd.concat([state[~state["user_id"].isin(advanced["user_id"])], advanced])
    _same(state, recent_activity(events, keep=12))


def test_events_of_the_same_time_keep_their_event_ids_order():
    """Ties in time go by event id as the ids compare (9 before 10; a missing id last), on
    the batch's path as on the intake's; no events give no rows, in the table's types."""
    events = pd.DataFrame(
        {
            "event_id": [10, 9, None],
            "user_id": ["u1"] * 3,
            "item_id": ["a", "b", "c"],
            "event_type": ["view"] * 3,
            "event_time": [T0] * 3,
        }
    )
    assert recent_activity(events).iloc[0]["recent_items"] == ["b", "a", "c"]
    intake_path = advance_recent_activity(
        pl.from_pandas(recent_activity(events.iloc[:0])), pl.from_pandas(events)
    )
    assert intake_path["recent_items"].to_list() == [["b", "a", "c"]]
    none = recent_activity(events.iloc[:0])
    assert none.empty and all(
        none[c].dtype == "object" for c in ["recent_items", "recent_event_times"]
    )


def test_a_late_event_joins_the_history_but_not_todays_counts():
    events = _events(50)
    user = events["user_id"].iloc[-1]
    state = recent_activity(events)
    late = pd.DataFrame(
        {
            "event_id": ["late"],
            "user_id": [user],
            "item_id": ["i-late"],
            "event_type": ["purchase"],
            "event_time": [T0 - pd.Timedelta(days=3)],
        }
    )
    before = state.set_index("user_id").loc[user]
    held = pl.from_pandas(state[state["user_id"] == user])
    after = advance_recent_activity(held, pl.from_pandas(late)).row(0, named=True)
    assert after["activity_day"] == before["activity_day"]
    assert after["purchases_today"] == before["purchases_today"]
    assert "i-late" in after["recent_items"]
    assert after["recent_items"][0] == "i-late"  # the oldest, first
    assert after["event_timestamp"] == before["event_timestamp"]


def test_entries_that_are_not_objects_are_unparseable_rows():
    raw = raw_events_frame([{"user_id": "u1", "quantity": 2, "price": 9.5}, 7, "x"], "shop", "f")
    assert raw["parse_error"].is_null().to_list() == [True, False, False]
    assert raw.row(0, named=True)["quantity"] == "2"
    assert raw.row(0, named=True)["price"] == "9.5"
    assert raw["source_line"].to_list() == ["0", "1", "2"]


def test_landed_intake_files_read_back_as_the_rows_written(tmp_path):
    """The open file is hidden from ingestion until published; then it reads back exactly,
    quotes, commas and new lines included."""
    landing = _landing(tmp_path)
    writer = LandingWriter(landing)
    rows = pd.DataFrame(
        {
            c: ["a", 'say "hi", then\nleave', None]
            if c == "query"
            else [f"{c}{k}" for k in range(3)]
            for c in EVENT_COLUMNS
        }
    )
    writer.append("2026-10-01", rows)
    folder = landing / "events" / "date=2026-10-01"
    assert [p.name.startswith(".") for p in folder.iterdir()] == [True]
    writer.flush()
    (published,) = folder.iterdir()
    read = read_landing_file(published, "events", "shop").to_pandas()[EVENT_COLUMNS]
    pd.testing.assert_frame_equal(read, rows, check_dtype=False)


@pytest.mark.parametrize(
    "body",
    [
        {"k": 0},
        {"k": 101},
        {"cart": ["i"] * 51},
        {"query": "q" * 201},
        {"bogus": 1},
        {"diversity": 2},
        {"max_price": -1},
    ],
)
def test_recommend_requests_are_bounded(body):
    with pytest.raises(ValidationError):
        RecommendRequest(**body)


# -- the whole loop, on a copy of the tiny run -------------------------------------------------
@pytest.fixture()
def live_dir(pipeline_run, tmp_path) -> Path:
    """A copy of the tiny run's data directory (the service writes to it)."""
    _, out = pipeline_run
    copy = tmp_path / "live"
    shutil.copytree(out.root, copy, ignore=shutil.ignore_patterns("dagster_home", "gx"))
    return copy


def _client(data_dir: Path, **kwargs):
    from fastapi.testclient import TestClient

    from dagster_project.serving.app import create_app

    return TestClient(create_app(str(data_dir), **kwargs), base_url="http://127.0.0.1")


def _human(data_dir: Path) -> str:
    """A raw user id with events, not flagged and not opted out."""
    from dagster_project.pseudonyms import pseudonymise
    from dagster_project.sources.raw_table import read_landing

    events = read_landing(data_dir / "landing", "events").to_pandas()
    scores = pd.read_parquet(data_dir / "tables" / "user_traffic_scores.parquet")
    opted = (data_dir / "privacy" / "opt_out.txt").read_text()
    for user in events["user_id"].dropna().value_counts().index[1:]:
        pseudonym = pseudonymise([user])[0]
        flagged = scores.loc[scores["user_id"] == pseudonym, "is_bot"]
        if user not in opted and len(flagged) and not flagged.iloc[0]:
            return str(user)
    raise AssertionError("no human user")


def _views(user: str, items: list[str]) -> list[dict]:
    now = pd.Timestamp(datetime.now(UTC))
    return [
        {"user_id": user, "item_id": item, "event_type": "view",
         "event_time": (now - pd.Timedelta(seconds=10 * (len(items) - k))).isoformat()}
        for k, item in enumerate(items)
    ]  # fmt: skip


def test_events_in_change_the_next_recommendation_and_the_daily_run_counts_them_once(live_dir):
    from dagster_project.quality.cleaning import clean_events
    from dagster_project.sources.manifest import source_window
    from dagster_project.sources.raw_table import ingest_landing

    user = _human(live_dir)
    items = pd.read_parquet(live_dir / "tables" / "items.parquet")
    counts = items["category"].value_counts()
    category = counts[counts >= 5].index[-1]  # a small category the user barely knows
    picked = items.loc[items["category"] == category, "item_id"].head(3).tolist()
    posted = _views(user, picked)
    bad = [
        {"user_id": user, "item_id": "no-such-item", "event_type": "view",
         "event_time": posted[0]["event_time"]},
        {"user_id": user, "item_id": picked[0], "event_type": "teleport",
         "event_time": posted[0]["event_time"]},
        {"user_id": "", "item_id": picked[0], "event_type": "view", "event_time": "yesterday"},
        42,
    ]  # fmt: skip
    with _client(live_dir) as client:
        before = client.post("/recommend", json={"user_id": user, "k": 10}).json()
        answer = client.post("/events", json=posted + bad).json()
        replay = client.post("/events", json=posted).json()
        # the same view a second later, in its own request: the daily run drops it as a
        # near duplicate of the first, so the intake does too
        second_later = pd.Timestamp(posted[0]["event_time"]) + pd.Timedelta(seconds=1)
        near = client.post("/events", json=[{**posted[0], "event_time": second_later.isoformat()}])
        after = client.post("/recommend", json={"user_id": user, "k": 10}).json()
    assert answer["accepted"] == 3 and answer["pushed_users"] == 1
    assert [(r["index"], r["reason"]) for r in answer["rejected"]] == [
        (3, "unknown_item"), (4, "bad_event_type"), (5, "null_user_id"), (6, "unparseable_row"),
    ]  # fmt: skip
    assert all(r["detail"] for r in answer["rejected"])
    assert {r["reason"] for r in replay["rejected"]} == {"duplicate_event"}
    assert replay["accepted"] == 0
    assert [r["reason"] for r in near.json()["rejected"]] == ["near_duplicate_event"]
    assert after["history_events"] == min(before["history_events"] + 3, RECENT_EVENTS)
    assert [i["item_id"] for i in after["items"]] != [i["item_id"] for i in before["items"]]
    titles = set(items.loc[items["item_id"].isin(picked), "title"])
    assert any(any(t in i["reason"] for t in titles) for i in after["items"])
    assert not {i["item_id"] for i in after["items"]} & set(picked)  # seen: filtered
    # the daily run: every landed file ingested, cleaned by the batch's rules
    raw = ingest_landing(live_dir / "landing", "events", live_dir / "tables" / "raw_again")
    assert raw is not None
    clean_items = pl.read_parquet(live_dir / "tables" / "items_clean.parquet")["item_id"]
    cleaned = clean_events(
        live_dir / "tables" / "raw_again", clean_items, source_window(live_dir / "landing"),
        "daily", datetime.now(UTC),
    )  # fmt: skip
    mine = cleaned.clean.filter(pl.col("source_file").str.contains("intake-"))
    assert mine.height == 3
    assert sorted(mine["item_id"].to_list()) == sorted(picked)
    intake_quarantine = list((live_dir / "tables" / "intake_quarantine").glob("*.parquet"))
    reasons = pl.concat([pl.read_parquet(p) for p in intake_quarantine])["reason"].to_list()
    assert sorted(reasons) == sorted(
        [
            "unknown_item",
            "bad_event_type",
            "null_user_id",
            "unparseable_row",
            *["duplicate_event"] * 3,
            "near_duplicate_event",
        ]
    )
    # the quarantine asset adds the intake's rejections, and every row is still accounted for
    _quarantine_with_the_intakes(live_dir)
    accounting = accounting_by_table(layout(live_dir))
    by_intake = accounting[accounting["source_file"].str.startswith("intake/")]
    assert by_intake["rows_quarantined"].sum() == len(reasons) and accounting["balanced"].all()


def _quarantine_with_the_intakes(live_dir: Path) -> None:
    """The `quarantine` asset, run on `live_dir`'s tables, written where it lives."""
    from dagster_project.assets.quality import quarantine
    from dagster_project.resources import PlatformStorage

    out = layout(live_dir)
    result = quarantine(
        quarantine_items=pl.read_parquet(out.table("quarantine_items")),
        quarantine_events=pl.read_parquet(out.table("quarantine_events")),
        storage=PlatformStorage(data_dir=str(live_dir)),
    )
    result.value.write_parquet(out.table("quarantine"))


def test_a_day_replayed_through_the_intake_gives_the_batchs_recent_activity(live_dir):
    """The last day's landed events, sent through the intake after the state of the day
    before, leave the online store holding what the daily run computes from all days."""
    from dagster_project.privacy import delete_online_rows
    from dagster_project.resources import FeastResource
    from dagster_project.serving.intake import EventIntake
    from dagster_project.serving.online import RecentActivityStore
    from dagster_project.sources.raw_table import read_landing

    out = layout(live_dir)
    behaviour = pd.read_parquet(out.table("behaviour_events"))
    last = behaviour["event_time"].max().normalize()
    store = FeastResource(data_dir=str(live_dir)).store()
    activity = RecentActivityStore(store)
    # the online store as the run of the day before left it (a newer row is never replaced)
    delete_online_rows(store, ["user_recent_activity"], behaviour["user_id"].unique())
    activity.push(pl.from_pandas(recent_activity(behaviour[behaviour["event_time"] < last])))
    landed = read_landing(out.landing, "events").to_pandas()
    day = landed[pd.to_datetime(landed["event_time"], utc=True, errors="coerce") >= last]
    entries = [
        {c: row[c] for c in EVENT_COLUMNS if isinstance(row[c], str)} for _, row in day.iterrows()
    ]
    intake = EventIntake(out, activity)
    intake.receive([entries[k : k + 100] for k in range(0, len(entries), 100)])
    expected = recent_activity(behaviour)
    users = behaviour.loc[behaviour["event_time"] >= last, "user_id"].unique().tolist()
    online = activity.read(users).to_pandas()
    assert len(online) == len(users) > 0
    _same(online, expected[expected["user_id"].isin(users)])  # the stored columns


def test_the_push_stores_what_feasts_own_push_stores(live_dir):
    """The intake's push (rows in polars, converted by `table_to_rows`) leaves the online
    store's table byte for byte as `FeatureStore.push` leaves it with the same rows."""
    import sqlite3

    from feast.data_source import PushMode

    from dagster_project.privacy import delete_online_rows
    from dagster_project.resources import FeastResource
    from dagster_project.serving.online import PUSH_SOURCE, RecentActivityStore

    out = layout(live_dir)
    behaviour = pd.read_parquet(out.table("behaviour_events"))
    some = behaviour[behaviour["user_id"].isin(behaviour["user_id"].unique()[:200])]
    rows = recent_activity(some, now=datetime(2026, 12, 1, tzinfo=UTC))
    store = FeastResource(data_dir=str(live_dir)).store()
    stored = {}
    for name, push in (
        ("feast", lambda: store.push(PUSH_SOURCE, rows, to=PushMode.ONLINE)),
        ("ours", lambda: RecentActivityStore(store).push(pl.from_pandas(rows))),
    ):
        deleted = delete_online_rows(store, ["user_recent_activity"], rows["user_id"])
        assert deleted == len(rows)  # materialized by the run, then pushed by Feast
        push()
        with sqlite3.connect(live_dir / "feast" / "online_store.db") as db:
            (table,) = [
                t
                for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
                if t.endswith("user_recent_activity")
            ]
            stored[name] = db.execute(f'SELECT * FROM "{table}" ORDER BY 1, 2').fetchall()
    assert stored["ours"] == stored["feast"]


BAD_EVENTS_REQUESTS = [
    ({"content": b"{nope", "headers": {"content-type": "application/json"}}, 400),
    ({"json": {"user_id": "u1"}}, 400),
    ({"json": [{}] * 1001}, 413),
    ({"content": b"[" + b" " * (1 << 20) + b"]"}, 413),
    ({"content": b"[]", "headers": {"content-length": "x"}}, 411),
]


def test_bad_requests_get_a_4xx_never_a_crash(live_dir):
    with _client(live_dir) as client:
        for request, status in BAD_EVENTS_REQUESTS:
            assert client.post("/events", **request).status_code == status, request
        assert client.post("/recommend", json={"k": 0}).status_code == 422
        assert (
            client.post(
                "/recommend", content=b"{", headers={"content-type": "application/json"}
            ).status_code
            == 422
        )
        assert client.post("/recommend", json={"item_id": "no-such-item"}).json()["notes"]
        nothing = {"query": "shoes", "categories": ["No/Such/Category"]}
        assert client.post("/recommend", json=nothing).json()["items"] == []
    with _client(live_dir, token="s3cret") as client:
        assert client.post("/events", json=[]).status_code == 401
        assert (
            client.post("/events", json=[], headers={"authorization": "Bearer no"}).status_code
            == 403
        )
        ok = client.post("/events", json=[], headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["received"] == 0
        assert client.get("/health").status_code == 200


def test_the_service_answers_only_for_its_own_host(live_dir):
    from fastapi.testclient import TestClient

    from dagster_project.serving.app import create_app

    with TestClient(create_app(str(live_dir)), base_url="http://evil.example") as client:
        assert client.get("/health").status_code == 400


def test_requests_answered_together_get_what_each_gets_alone(live_dir):
    """`recommend_many` (one pass of the model for the requests a worker answers together)
    gives each request the answer it gets alone, in every scenario but search."""
    from dagster_project.resources import FeastResource
    from dagster_project.serving.online import RecentActivityStore
    from dagster_project.serving.recommend import LiveRecommender

    activity = RecentActivityStore(FeastResource(data_dir=str(live_dir)).store())
    recommender = LiveRecommender(layout(live_dir), activity)
    user = _human(live_dir)
    items = pd.read_parquet(live_dir / "tables" / "items.parquet")["item_id"].tolist()
    requests = [
        RecommendRequest(user_id=user, k=10),
        RecommendRequest(item_id=items[0], k=5),
        RecommendRequest(user_id=user, cart=items[1:3], k=7, diversity=0.5),
        RecommendRequest(k=4),  # a new visitor
        RecommendRequest(user_id=user, k=3, categories=["no-such-category"]),
    ]
    alone = [recommender.recommend(r) for r in requests]
    together = recommender.recommend_many(requests)
    assert [a["scenario"] for a in together] == [
        "user", "product_page", "cart", "new_visitor", "user",
    ]  # fmt: skip
    for one, many in zip(alone, together, strict=True):
        assert [i["item_id"] for i in many["items"]] == [i["item_id"] for i in one["items"]]
        assert [i["reason"] for i in many["items"]] == [i["reason"] for i in one["items"]]
        assert [i["score"] for i in many["items"]] == pytest.approx(
            [i["score"] for i in one["items"]], abs=1e-4
        )
        assert {k: v for k, v in many.items() if k != "items"} == {
            k: v for k, v in one.items() if k != "items"
        }
    assert together[4]["items"] == []  # the filters leave nothing


def test_requests_arriving_together_are_answered_together_and_each_on_its_own():
    """The service's batcher: requests that reach a worker in one turn of its event loop go to
    `recommend_many` at once; when that fails, each request is answered alone, so only the
    one that fails gets the error. (The recommender here only records its calls; the real
    one's batch answers are tested above.)"""
    import asyncio

    from dagster_project.serving.app import RecommendBatcher

    class Recording:
        def __init__(self) -> None:
            self.batches: list[int] = []

        def recommend_many(self, requests):
            self.batches.append(len(requests))
            if any(r.k == 13 for r in requests):
                raise ValueError("unlucky")
            return [{"k": r.k} for r in requests]

        def recommend(self, request):
            return self.recommend_many([request])[0]

    async def ask(batcher: RecommendBatcher, ks: list[int]) -> list:
        asks = [batcher.answer(RecommendRequest(k=k)) for k in ks]
        return await asyncio.gather(*asks, return_exceptions=True)

    recording = Recording()
    batcher = RecommendBatcher(recording)  # type: ignore[arg-type]
    assert asyncio.run(ask(batcher, [1, 2, 3])) == [{"k": 1}, {"k": 2}, {"k": 3}]
    assert recording.batches == [3]
    answers = asyncio.run(ask(batcher, [4, 13, 5]))
    assert answers[0] == {"k": 4} and answers[2] == {"k": 5}
    assert isinstance(answers[1], ValueError)
    assert recording.batches == [3, 3, 1, 1, 1]
    lone = asyncio.run(ask(batcher, [13]))
    assert isinstance(lone[0], ValueError) and recording.batches[-1] == 1


def test_a_worker_above_its_share_of_connections_sends_new_ones_elsewhere():
    """`ConnectionBalancer`: a new connection that would put this worker above its share of
    the live workers' connections gets its answer with `Connection: close` (its client
    reconnects, and the kernel hashes the new connection again); known connections, a lone
    client and a worker whose partner stopped beating never do, and every request is
    answered."""
    import asyncio
    import time

    from dagster_project.serving.app import ConnectionBalancer, WorkerShares

    answered: list[tuple] = []

    async def app(scope, receive, send):
        answered.append(scope["client"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def request(balancer: ConnectionBalancer, client: tuple) -> bool:
        """Whether the answer to one request from `client` closes its connection."""
        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "client": client}
        asyncio.run(balancer(scope, None, send))
        return (b"connection", b"close") in sent[0]["headers"]

    now = time.monotonic()
    shares = WorkerShares([0, 2], [now, now], 0)  # this worker has none yet, the other two
    balancer = ConnectionBalancer(app, shares)
    closed = [request(balancer, ("127.0.0.1", port)) for port in (1, 2, 3, 4)]
    assert closed == [False, False, False, True]  # 3 here and 2 there; a 4th goes elsewhere
    assert shares.connections == [3, 2]
    assert not request(balancer, ("127.0.0.1", 1))  # a known connection stays
    assert len(answered) == 5
    lone = ConnectionBalancer(app, WorkerShares([0, 0], [now, now], 1))
    assert not any(request(lone, ("127.0.0.1", 9)) for _ in range(3))
    stale = now - 10 * ConnectionBalancer.LIVE_S  # the other worker died (or never started)
    survivor = ConnectionBalancer(app, WorkerShares([0, 5], [now, stale], 0))
    assert not any(request(survivor, ("127.0.0.1", port)) for port in range(20, 28))
    survivor.shares.heartbeats[1] = time.monotonic()  # the other worker (re)starts
    sent_away = [request(survivor, ("127.0.0.1", port)) for port in range(20, 28)]
    assert sent_away == [True] + [False] * 7  # one at a time, known connections included


def _flagged_bot(data_dir: Path) -> str:
    """A raw user id the tiny run flagged as a bot."""
    from dagster_project.pseudonyms import pseudonymise
    from dagster_project.sources.raw_table import read_landing

    scores = pd.read_parquet(data_dir / "tables" / "user_traffic_scores.parquet")
    flagged = set(scores.loc[scores["is_bot"], "user_id"])
    raw = read_landing(data_dir / "landing", "events").to_pandas()["user_id"].dropna().unique()
    return next(u for u, p in zip(raw, pseudonymise(raw), strict=True) if p in flagged)


def test_bots_and_opted_out_users_change_nothing_served(live_dir):
    """A flagged bot's events land but are not pushed; an opted-out user's history is never
    read (their answer is a new visitor's, with a note)."""
    bot = _flagged_bot(live_dir)
    opted = next(
        line.strip()
        for line in (live_dir / "privacy" / "opt_out.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    items = pd.read_parquet(live_dir / "tables" / "items.parquet")["item_id"].head(2).tolist()
    with _client(live_dir) as client:
        before = client.post("/recommend", json={"user_id": bot, "k": 5}).json()
        answer = client.post("/events", json=_views(bot, items)).json()
        after = client.post("/recommend", json={"user_id": bot, "k": 5}).json()
        opted_answer = client.post("/recommend", json={"user_id": opted, "k": 5}).json()
    assert answer["accepted"] == 2 and answer["held_back_users"] == 1
    assert answer["pushed_users"] == 0
    assert after["history_newest_at"] == before["history_newest_at"]
    assert after["items"] == before["items"]
    assert opted_answer["history_events"] == 0 and opted_answer["scenario"] == "new_visitor"
    assert any("opted out" in note for note in opted_answer["notes"])
    landed = list((live_dir / "landing" / "events").glob("date=*/intake-*.csv"))
    assert sum(len(pd.read_csv(p)) for p in landed) == 2  # published when the service stopped


def test_a_tailed_file_goes_through_the_intake_once(live_dir):
    """`recsys intake-tail`: every complete line once, a bad line quarantined, and a restart
    goes on from the saved offset (an incomplete last line waits for its end)."""
    from dagster_project.resources import FeastResource
    from dagster_project.serving.intake import EventIntake
    from dagster_project.serving.online import RecentActivityStore
    from dagster_project.serving.tail import tail

    user = _human(live_dir)
    items = pd.read_parquet(live_dir / "tables" / "items.parquet")["item_id"].head(3).tolist()
    lines = [json.dumps(e) for e in _views(user, items)]
    path = live_dir / "events.jsonl"
    path.write_text(f"{lines[0]}\n{{not json\n{lines[1]}\n{lines[2][:20]}")
    store = FeastResource(data_dir=str(live_dir)).store()
    intake = EventIntake(layout(live_dir), RecentActivityStore(store))
    first = tail(path, intake, batch=2, follow=False)
    assert first == {"received": 3, "accepted": 2, "rejected": 1}
    path.write_text(path.read_text()[: -len(lines[2][:20])] + lines[2] + "\n")
    second = tail(path, intake, batch=2, follow=False)
    assert second == {"received": 1, "accepted": 1, "rejected": 0}
    assert tail(path, intake, batch=2, follow=False)["received"] == 0
