"""Other teams' three ways in: the SDK, the HTTP feature server, a point-in-time training set."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from feast import FeatureStore, RepoConfig
from feast.value_type import ValueType

from dagster_project.resources import FeastResource
from devtools.servers import free_port
from examples.fetch_features import by_name, over_http, training_set, with_sdk
from recsys_feast.arrow_values import values_to_arrow
from recsys_feast.internals import online_store, sqlite_connection
from recsys_feast.materialization import ENGINE_TYPE, distinct_value_protos
from recsys_feast.sqlite_store import STORE_TYPE


@pytest.fixture(scope="module")
def served(pipeline_run):
    """The HTTP feature server on the tiny run's store, on loopback; stopped by its PID."""
    _, out = pipeline_run
    port = free_port()
    env = {**os.environ, "RECSYS_DATA_DIR": str(out.root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster_project.feature_server", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"feature server did not start: {proc.stderr.read()[-800:]}")
            time.sleep(0.5)
        yield url, out
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _user_with_history(out) -> str:
    features = pd.read_parquet(out.feature_table("user_features"))
    return features.sort_values("views")["user_id"].iloc[-1]


def test_http_serves_known_entities_and_says_not_found(served, monkeypatch):
    url, out = served
    user = _user_with_history(out)
    pair = {"user_id": [user], "item_id": ["i0000001"]}
    status, body = over_http(url, "online_ranking", pair)
    assert status == 200
    named = by_name(body)
    assert named["user_behaviour__views_7d"]["statuses"] == ["PRESENT"]
    monkeypatch.setenv("RECSYS_DATA_DIR", str(out.root))
    sdk = with_sdk("online_ranking", [{"user_id": user, "item_id": "i0000001"}])
    assert named["user_behaviour__views_7d"]["values"][0] == sdk["user_behaviour__views_7d"][0]
    status, body = over_http(url, "online_ranking", {**pair, "user_id": ["no-such-user"]})
    named = by_name(body)
    assert status == 200 and named["user_behaviour__views_7d"]["statuses"] == ["NOT_FOUND"]
    unknown = with_sdk("online_ranking", [{"user_id": "no-such-user", "item_id": "i0000001"}])
    assert unknown["user_behaviour__views_7d"] == [None]


def test_recommendations_come_back_the_same_three_ways(served, monkeypatch):
    url, out = served
    monkeypatch.setenv("RECSYS_DATA_DIR", str(out.root))
    lists = pd.read_parquet(out.feature_table("user_recommendations")).set_index("user_id")
    user = lists.index[0]
    expected = list(lists.loc[user, "item_ids"])
    assert len(expected) == 20
    sdk = with_sdk("recommendations", [{"user_id": user}, {"user_id": "no-such-user"}])
    assert sdk["user_recommendations__item_ids"] == [expected, None]
    assert sdk["user_recommendations__model_version"][0].startswith("embedding-")
    status, body = over_http(url, "recommendations", {"user_id": [user, "no-such-user"]})
    named = by_name(body)
    assert status == 200 and named["user_recommendations__item_ids"]["values"][0] == expected
    assert named["user_recommendations__item_ids"]["statuses"] == ["PRESENT", "NOT_FOUND"]
    # Offline, point in time: nothing before the model's data ended, the list after it.
    as_of = lists.loc[user, "event_timestamp"]
    rows = pd.DataFrame(
        {
            "user_id": user,
            "event_timestamp": [as_of - pd.Timedelta(hours=1), as_of + pd.Timedelta(days=1)],
        }
    )
    got = training_set(rows, ["user_recommendations:item_ids"]).sort_values("event_timestamp")
    before, after = got["user_recommendations__item_ids"]
    assert before is None or (not isinstance(before, list | np.ndarray) and pd.isna(before))
    assert list(after) == expected


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"feature_service": "nope", "entities": {"user_id": ["u1"]}}', 404),
        (b'{"features": ["user_behaviour:nope"], "entities": {"user_id": ["u1"]}}', 400),
        (b'{"entities": {}}', 400),
        (
            b'{"features": ["user_behaviour:views"], "entities": {"user_id": ["a", "b"], "item_id": ["x"]}}',
            400,
        ),
        (b"not json", 422),
    ],
)
def test_malformed_requests_get_a_4xx_never_a_crash(served, body, status):
    url, _ = served
    request = urllib.request.Request(
        f"{url}/get-online-features", data=body, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == status
    with urllib.request.urlopen(f"{url}/health", timeout=5) as r:  # still serving
        assert r.status == 200


def test_training_set_is_point_in_time(served, monkeypatch):
    _, out = served
    monkeypatch.setenv("RECSYS_DATA_DIR", str(out.root))
    user = _user_with_history(out)
    events = pd.read_parquet(
        out.table("behaviour_events"), columns=["user_id", "event_type", "event_time"]
    )
    views = events[(events["user_id"] == user) & (events["event_type"] == "view")]["event_time"]
    times = pd.to_datetime(["2026-09-05 12:00", "2026-09-12 12:00", "2026-09-20 12:00"], utc=True)
    rows = pd.DataFrame({"user_id": user, "item_id": "i0000001", "event_timestamp": times})
    got = training_set(rows).set_index("event_timestamp").loc[times, "user_behaviour__views"]
    expected = [int((views < t.floor("D")).sum()) for t in times]
    assert got.fillna(0).astype(int).tolist() == expected


def test_the_point_in_time_join_in_chunks_equals_one_feast_call(pipeline_run):
    from dagster_project.recommender.inputs import point_in_time_features

    _, out = pipeline_run
    store = FeastResource(data_dir=str(out.root)).store()
    events = pd.read_parquet(out.table("behaviour_events"))
    entity_df = events[["user_id", "item_id", "event_type", "event_time"]].rename(
        columns={"event_time": "event_timestamp"}
    )
    said: list[str] = []
    rows = len(entity_df) // 5
    chunked = point_in_time_features(
        store, entity_df, "recommender_training", rows=rows, progress=said.append
    )
    chunks = -(-len(entity_df) // rows)
    assert len(said) == chunks and said[-1].startswith(f"point-in-time join: chunk {chunks}/")
    whole = store.get_historical_features(
        entity_df=entity_df,
        features=store.get_feature_service("recommender_training"),
        full_feature_names=True,
    ).to_df()
    order = ["event_timestamp", "user_id", "item_id", "event_type"]
    pd.testing.assert_frame_equal(
        chunked.sort_values(order).reset_index(drop=True)[sorted(chunked.columns)],
        whole.sort_values(order).reset_index(drop=True)[sorted(whole.columns)],
    )
    assert chunked["event_timestamp"].is_monotonic_increasing and len(chunked) == len(events)


def test_sqlite_store_answers_exactly_as_feasts_own(pipeline_run):
    """The embedded profile's store reads only the requested features; the answer, unknown
    entities and repeated entities included, equals Feast's own SQLite store's."""
    _, out = pipeline_run
    ours = FeastResource(data_dir=str(out.root)).store()
    assert ours.config.online_store.type == STORE_TYPE
    config = FeastResource(data_dir=str(out.root)).repo_config().model_dump(by_alias=True)
    config["online_store"] = {"type": "sqlite", "path": ours.config.online_store.path}
    stock = FeatureStore(config=RepoConfig(**config))
    users = pd.read_parquet(out.feature_table("user_features"))["user_id"].unique()[:30].tolist()
    rows = [
        {"user_id": u, "item_id": i}
        for u, i in zip([*users, "no-such-user", users[0]], ["i0000001"] * 32, strict=True)
    ]
    for features in [
        ours.get_feature_service("online_ranking"),
        ["user_behaviour:views", "user_behaviour:top_category", "item_stats:price"],
    ]:
        got = ours.get_online_features(features=features, entity_rows=rows).to_dict()
        want = stock.get_online_features(features=features, entity_rows=rows).to_dict()
        assert got == want
    assert got["views"][-2] is None and got["views"][-1] == got["views"][0]
    # write-ahead logging: the real-time service's reads never wait for its pushes
    connection = sqlite_connection(online_store(ours), ours.config)
    assert connection.execute("PRAGMA journal_mode").fetchall() == [("wal",)]


def test_the_bulk_writer_writes_the_rows_feasts_own_writer_writes(pipeline_run, tmp_path):
    """Materializing with the embedded profile's engine and store leaves every table byte for
    byte as Feast's own engine and SQLite store leave it, over rows it inserts and rows it
    updates."""
    import shutil
    import sqlite3

    _, out = pipeline_run
    views = ["user_behaviour", "item_stats", "item_text_embedding"]
    config = FeastResource(data_dir=str(out.root)).repo_config().model_dump(by_alias=True)
    stamps = pd.read_parquet(out.feature_table("user_features"), columns=["event_timestamp"])
    start = stamps["event_timestamp"].min().to_pydatetime()
    end = (stamps["event_timestamp"].max() + pd.Timedelta(seconds=1)).to_pydatetime()
    tables = {}
    assert config["batch_engine"] == {"type": ENGINE_TYPE}  # the profile's engine
    for name, store_type, engine in (
        ("ours", STORE_TYPE, {"type": ENGINE_TYPE}),
        ("feast", "sqlite", "local"),
    ):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(out.root / "feast" / "registry.db", folder / "registry.db")
        # the backup API: the store is in WAL mode, its newest commits may be in -wal
        source, copy = (
            sqlite3.connect(p)
            for p in (out.root / "feast" / "online_store.db", folder / "online.db")
        )
        source.backup(copy)
        source.close()
        copy.close()
        with sqlite3.connect(folder / "online.db") as db:  # half the rows: inserts and updates
            names = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in names:
                db.execute(f'DELETE FROM "{table}" WHERE rowid % 2 = 0')
                db.execute(  # the kept rows changed, so that only a real update restores them
                    f"UPDATE \"{table}\" SET value = x'00', value_text = NULL, event_ts = 0, "
                    "created_ts = 0"
                )
        store = FeatureStore(
            config=RepoConfig(
                **{
                    **config,
                    "registry": str(folder / "registry.db"),
                    "online_store": {"type": store_type, "path": str(folder / "online.db")},
                    "batch_engine": engine,
                }
            )
        )
        store.materialize(start_date=start, end_date=end, feature_views=views)
        with sqlite3.connect(folder / "online.db") as db:
            tables[name] = {
                t: db.execute(f'SELECT * FROM "{t}" ORDER BY entity_key, feature_name').fetchall()
                for t in names
            }
    assert tables["ours"].keys() == tables["feast"].keys()
    for table, rows in tables["feast"].items():
        assert tables["ours"][table] == rows, table
    assert sum(len(rows) for rows in tables["ours"].values()) > 1000


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        (pa.array([0.5, 0.0, -0.0, None, 0.5, float("nan")], pa.float32()), ValueType.FLOAT),
        (pa.array([3, None, 3, -7, 2**40], pa.int64()), ValueType.INT64),
        (pa.array(["a", None, "", "a", "b"]), ValueType.STRING),
        (pa.array([True, False, True]), ValueType.BOOL),
        (pa.array([True, None, False]), ValueType.BOOL),
        (pa.array([[0.5, 1.0], [0.5, 1.0], None], pa.list_(pa.float32())), ValueType.FLOAT_LIST),
        (pa.array([], pa.float32()), ValueType.FLOAT),
        # lists built from their flat values: empty, missing, sliced, chunked, large
        (pa.array([["a", "b"], [], None, ["c"]], pa.list_(pa.string())), ValueType.STRING_LIST),
        (pa.array([[1, 2**40], None, [-3]], pa.list_(pa.int64())), ValueType.INT64_LIST),
        (pa.array([[1.5], [], [2.0, -0.0]], pa.list_(pa.float64())), ValueType.DOUBLE_LIST),
        # float lists built from their bytes: long (a length over one varint byte), rounded
        # from doubles (beyond a float's range too), sliced, chunked
        (
            pa.array([np.linspace(-1, 1, 384), None, [1e300, float("nan"), -0.0, 1e-46]]),
            ValueType.FLOAT_LIST,
        ),
        (pa.array([[0.1], [0.2, 0.3], [0.4]], pa.list_(pa.float32()))[1:], ValueType.DOUBLE_LIST),
        (pa.array([[0.5, 1.5], None, [2.0, 3.0]], pa.list_(pa.float32(), 2)), ValueType.FLOAT_LIST),
        (pa.array([["a"], None, ["b"]], pa.list_(pa.string(), 1))[1:], ValueType.STRING_LIST),
        (
            pa.chunked_array([pa.array([[0.5]] * 3), pa.array([None, [], [0.25] * 40])]),
            ValueType.FLOAT_LIST,
        ),
        (pa.array([[1], [2, 3], [4], [5, 6]], pa.list_(pa.int32()))[1:3], ValueType.INT32_LIST),
        (
            pa.chunked_array([pa.array([["x"]]), pa.array([None, ["y", "z"]])]),
            ValueType.STRING_LIST,
        ),
        (pa.array([["a"], None], pa.large_list(pa.large_string())), ValueType.STRING_LIST),
        (  # a null list over items, as polars makes them: they are not its items
            pa.ListArray.from_arrays(
                pa.array([0, 1, 3, 4], pa.int32()),
                pa.array(["a", "b", "c", "d"]),
                mask=pa.array([False, True, False]),
            ),
            ValueType.STRING_LIST,
        ),
        (pa.array([], pa.list_(pa.string())), ValueType.STRING_LIST),
        (pa.array([["a", None]], pa.list_(pa.string())), ValueType.STRING_LIST),  # Feast's way
    ],
)
def test_each_distinct_value_converts_as_feast_converts_it(column, kind):
    from feast.type_map import python_values_to_proto_values

    got = distinct_value_protos(column, kind)
    want = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), kind)
    assert [v.SerializeToString() for v in got] == [v.SerializeToString() for v in want]


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        (pa.array([3, None, -7, 2**40], pa.int64()), ValueType.INT64),
        (pa.array(["a", None, ""], pa.large_string()), ValueType.STRING),
        (pa.array([0.5, None, float("inf")], pa.float64()), ValueType.DOUBLE),
        (pa.array([True, None, False]), ValueType.BOOL),
        (pa.array([["a", "b"], [], None], pa.large_list(pa.large_string())), ValueType.STRING_LIST),
        (pa.array([[1, 2**40], None, [-3]], pa.list_(pa.int64())), ValueType.INT64_LIST),
        (pa.array([[0.5, 1.0], None], pa.list_(pa.float32())), ValueType.FLOAT_LIST),
        (pa.array([1_700_000_000, None], pa.int64()), ValueType.UNIX_TIMESTAMP),  # Feast's way
    ],
)
def test_stored_values_read_back_as_feast_reads_them(column, kind):
    """`values_to_arrow` gives the column Feast's own converter gives, entity by entity:
    a missing row (None) and an empty Value are nulls; so is a `null_val`, where Feast's
    converter gives the enum's 0."""
    from feast.protos.feast.types.Value_pb2 import Null
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto
    from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values

    stored = [*python_values_to_proto_values(column.to_pylist(), kind), None, ValueProto()]
    arrow_type = pa.timestamp("s", "UTC") if kind == ValueType.UNIX_TIMESTAMP else column.type
    got = values_to_arrow([*stored, ValueProto(null_val=Null.NULL)], arrow_type)
    want = pa.array(
        [None if v is None else feast_value_type_to_python_type(v) for v in stored] + [None],
        type=arrow_type,
    )
    assert got.type == arrow_type
    assert got.to_pylist() == want.to_pylist()
    assert got.to_pylist()[: len(column)] == pa.array(column.to_pylist(), arrow_type).to_pylist()


@pytest.mark.pipeline  # a real `feast apply` / Dagster run
def test_feast_apply_runs_only_when_the_feature_repo_changed(tmp_path):
    import shutil

    from dagster_project.settings import FEATURE_REPO_DIR

    repo = tmp_path / "repo"
    shutil.copytree(FEATURE_REPO_DIR, repo, ignore=shutil.ignore_patterns("__pycache__"))
    feast = FeastResource(repo_path=str(repo), data_dir=str(tmp_path / "data"))
    assert "skipped" not in feast.apply()
    assert not feast.apply_needed()
    assert "apply skipped" in feast.apply()  # nothing changed: no second apply
    definitions = repo / "features.py"
    applied = definitions.read_text()
    definitions.write_text(applied + "\n# a change to the definitions\n")
    assert feast.apply_needed()
    definitions.write_text(applied)
    assert not feast.apply_needed()
    (tmp_path / "data" / "feast" / "registry.db").unlink()  # a registry gone: apply again
    assert feast.apply_needed()
    assert "skipped" not in feast.apply()
    assert not feast.apply_needed()
    assert FeatureStore(config=feast.repo_config()).list_feature_views()


def _post(url: str, path: str, body: bytes, headers: dict | None = None) -> int:
    request = urllib.request.Request(
        f"{url}{path}", data=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize(
    "path", ["/write-to-online-store", "/push", "/materialize", "/materialize-incremental"]
)
def test_the_server_refuses_writes_without_a_token(served, path):
    url, _ = served
    body = b'{"feature_view_name": "user_recommendations", "df": {"user_id": ["u1"]}}'
    assert _post(url, path, body) == 403
    assert _post(url, path, body, {"Authorization": "Bearer guess"}) == 403


def test_the_server_checks_the_host_and_bounds_requests(served):
    url, _ = served
    lookup = b'{"features": ["user_behaviour:views"], "entities": {"user_id": ["u1"]}}'
    assert _post(url, "/get-online-features", lookup) == 200
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host.
    assert _post(url, "/get-online-features", lookup, {"Host": "evil.example"}) == 400
    many = {"features": ["user_behaviour:views"], "entities": {"user_id": ["u1"] * 10_001}}
    assert _post(url, "/get-online-features", json.dumps(many).encode()) == 413
    # A 2 MiB body is refused on its Content-Length, before the server reads any of it.
    import http.client

    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", "/get-online-features")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(2 << 20))
    connection.endheaders()
    assert connection.getresponse().status == 413
    connection.close()
    with urllib.request.urlopen(f"{url}/health", timeout=5) as r:  # still serving
        assert r.status == 200


def test_writes_pass_the_guard_only_with_the_token():
    import asyncio

    from dagster_project.feature_server import ServingGuard

    async def inner(scope, receive, send):  # stands for Feast's app: echoes the body's size
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})

    def status(guard, path, body=b"{}", authorization=None):
        sent = []
        headers = [(b"content-length", str(len(body)).encode())]
        if authorization:
            headers.append((b"authorization", authorization.encode()))
        scope = {"type": "http", "method": "POST", "path": path, "headers": headers}

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        asyncio.run(guard(scope, receive, send))
        return sent[0]["status"], sent[1]["body"]

    guarded = ServingGuard(inner, write_token="s3cret")
    assert status(guarded, "/push")[0] == 403
    assert status(guarded, "/push", authorization="Bearer wrong")[0] == 403
    assert status(guarded, "/push", b'{"a": 1}', "Bearer s3cret") == (200, b"8")
    assert status(ServingGuard(inner), "/push", authorization="Bearer s3cret")[0] == 403
    assert status(guarded, "/get-online-features", b'{"entities": {}}') == (200, b"16")


def test_memory_is_handed_back_after_a_large_lookup(monkeypatch):
    """The guard releases freed memory after a lookup of LARGE_LOOKUP_ROWS entities or more
    (bench/faults measures the server's resident size before and after)."""
    import asyncio
    import json as json_

    from dagster_project import feature_server

    released = []
    monkeypatch.setattr(feature_server, "release_memory", lambda: released.append(1))

    async def inner(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def lookup(users: int) -> None:
        body = json_.dumps({"entities": {"user_id": [f"u{k}" for k in range(users)]}}).encode()
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/get-online-features",
            "headers": [(b"content-length", str(len(body)).encode())],
        }

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            pass

        asyncio.run(feature_server.ServingGuard(inner)(scope, receive, send))

    lookup(10)
    assert released == []
    lookup(feature_server.LARGE_LOOKUP_ROWS)
    assert released == [1]


def test_feast_is_imported_without_its_runtime_type_checks_and_nothing_else_loses_them(
    tmp_path,
):
    """The platform's processes import feast without typeguard's instrumentation of Feast's
    classes (seconds of every process's start); other `@typechecked` code keeps its checks,
    and so does a process that imports only the feature repo's helpers (`recsys_feast`).
    (`python -m recsys_feast`, the feast command line so imported, applies the pipeline's
    feature repo: tests/test_pipeline.py.)"""
    probe = """
import recsys_feast.paths  # what the feature repo imports: it changes nothing
import typeguard
untouched = not hasattr(typeguard.typechecked, "skips_feast")
from recsys_feast.feast_import import feast_without_runtime_type_checks
feast_without_runtime_type_checks()
import feast
from feast.entity import Entity
from typeguard import TypeCheckError, typechecked

@typechecked
def twice(n: int) -> int:
    return 2 * n

try:
    twice("3")
    kept = False
except TypeCheckError:
    kept = True
def instrumented(function):
    return "TypeCheckMemo" in function.__code__.co_names
print(untouched, instrumented(twice), kept, instrumented(Entity.__init__))
"""
    (tmp_path / "probe.py").write_text(probe)  # typeguard reads the checked code's source
    done = subprocess.run([sys.executable, tmp_path / "probe.py"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True", "False"]
    # This process imported dagster_project (which asks for it) before feast.
    from feast.entity import Entity

    assert "TypeCheckMemo" not in Entity.__init__.__code__.co_names
