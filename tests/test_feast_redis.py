"""The scale-out profiles: the same Feast repo with a real Redis online store (one server, or a
cluster of three masters), chosen by config."""

import numpy as np
import pandas as pd
import pytest

from dagster_project.privacy import delete_online_rows
from dagster_project.resources import FeastResource
from devtools.servers import redis_cluster, redis_server

# Each Redis profile: its Feast configuration and the real server(s) it runs against here.
REDIS_PROFILES = {
    "feature_store.redis.yaml": redis_server,  # one server
    "feature_store.redis_cluster.yaml": redis_cluster,  # three masters, redis-cli --cluster
}


@pytest.fixture(scope="module", params=sorted(REDIS_PROFILES))
def redis_profile(request):
    with REDIS_PROFILES[request.param]() as url:
        yield request.param, url


def test_redis_profile_serves_what_the_offline_store_holds(
    pipeline_run, redis_profile, monkeypatch
):
    _, out = pipeline_run
    config_file, redis_url = redis_profile
    monkeypatch.setenv("RECSYS_REDIS_URL", redis_url)
    feast = FeastResource(data_dir=str(out.root), config_file=config_file)
    feast.apply()  # Feast's `feast apply` command line, with the Redis profile
    store = feast.store()
    assert store.config.online_store.type == "redis"
    offline = pd.read_parquet(out.feature_table("user_features"))
    store.materialize(
        start_date=offline["event_timestamp"].min().to_pydatetime(),
        end_date=(offline["event_timestamp"].max() + pd.Timedelta(seconds=1)).to_pydatetime(),
        feature_views=["user_behaviour", "item_stats"],
    )
    latest = offline.sort_values("event_timestamp").groupby("user_id").tail(1).set_index("user_id")
    sample = latest.sample(25, random_state=2)
    online = (
        store.get_online_features(
            features=[
                "user_behaviour:views_7d",
                "user_behaviour:spend",
                "user_behaviour:top_category",
            ],
            entity_rows=[{"user_id": u} for u in [*sample.index, "no-such-user"]],
        )
        .to_df()
        .set_index("user_id")
    )
    assert np.array_equal(online.loc[sample.index, "views_7d"], sample["views_7d"])
    assert np.allclose(online.loc[sample.index, "spend"], sample["spend"], rtol=1e-6)
    assert (online.loc[sample.index, "top_category"] == sample["top_category"]).all()
    assert online.loc["no-such-user"].isna().all()  # unknown entity: nothing, not a crash
    # Removing users' rows (opt-out, deletion) works on Redis too, view by view.
    gone = sample.index[:2].tolist()
    assert delete_online_rows(store, ["user_behaviour"], [*gone, "no-such-user"]) == 2
    after = store.get_online_features(
        features=["user_behaviour:views_7d"],
        entity_rows=[{"user_id": u} for u in [*gone, sample.index[2]]],
    ).to_dict()
    assert after["views_7d"][:2] == [None, None] and after["views_7d"][2] is not None
    if config_file == "feature_store.redis_cluster.yaml":
        assert _keys_per_master(redis_url) == pytest.approx([1 / 3] * 3, abs=0.1)


def test_the_services_reads_leave_their_feature_list_alone(
    pipeline_run, redis_profile, monkeypatch
):
    """Feast's Redis store appends its timestamp field to the feature list it is given: the
    real-time service passes a copy, so its own list does not grow by one name a read (and
    each read does not get slower than the last)."""
    from dagster_project.serving.online import STORED_COLUMNS, RecentActivityStore

    _, out = pipeline_run
    config_file, redis_url = redis_profile
    monkeypatch.setenv("RECSYS_REDIS_URL", redis_url)
    feast = FeastResource(data_dir=str(out.root), config_file=config_file)
    feast.apply()
    recent = pd.read_parquet(out.feature_table("user_recent_activity"))
    feast.store().materialize(
        start_date=recent["event_timestamp"].min().to_pydatetime(),
        end_date=(recent["event_timestamp"].max() + pd.Timedelta(seconds=1)).to_pydatetime(),
        feature_views=["user_recent_activity"],
    )
    wanted = list(STORED_COLUMNS)
    activity = RecentActivityStore(feast.store())
    user = recent.sort_values("event_timestamp")["user_id"].iloc[-1]
    first = activity.history(user)
    again = [activity.history(user) for _ in range(3)]
    assert first.item_ids and all(a == first for a in again)
    assert wanted == STORED_COLUMNS


def _keys_per_master(nodes: str) -> list[float]:
    """Each master's share of the cluster's keys (hash slots spread them out)."""
    from redis.cluster import ClusterNode, RedisCluster

    host, port = nodes.split(",")[0].split(":")
    cluster = RedisCluster(startup_nodes=[ClusterNode(host, int(port))])
    sizes = [n.redis_connection.dbsize() for n in cluster.get_primaries()]
    cluster.close()
    return [size / sum(sizes) for size in sizes]


def test_profiles_are_chosen_by_configuration_alone(pipeline_run, monkeypatch):
    _, out = pipeline_run
    monkeypatch.setenv("RECSYS_FEAST_CONFIG", "feature_store.redis.yaml")
    monkeypatch.delenv("RECSYS_REDIS_URL", raising=False)
    with pytest.raises(ValueError, match="RECSYS_REDIS_URL"):
        FeastResource(data_dir=str(out.root)).repo_config()
    monkeypatch.setenv("RECSYS_REDIS_URL", "127.0.0.1:1")
    assert FeastResource(data_dir=str(out.root)).repo_config().online_store.type == "redis"
    monkeypatch.delenv("RECSYS_FEAST_CONFIG")
    assert (
        FeastResource(data_dir=str(out.root))
        .repo_config()
        .online_store.type.endswith("SqliteOnlineStore")
    )


def test_materializing_into_a_stopped_redis_retries_then_says_which_store(
    pipeline_run, monkeypatch
):
    _, out = pipeline_run
    with redis_server() as url:
        monkeypatch.setenv("RECSYS_REDIS_URL", url)
        feast = FeastResource(data_dir=str(out.root), config_file="feature_store.redis.yaml")
        feast.apply()
    # The server is gone now (stopped by its PID): every attempt is refused.
    offline = pd.read_parquet(out.feature_table("item_features"), columns=["event_timestamp"])
    waits: list[str] = []
    with pytest.raises(RuntimeError) as failure:
        feast.materialize(
            ["item_stats"],
            offline["event_timestamp"].min().to_pydatetime(),
            offline["event_timestamp"].max().to_pydatetime(),
            attempts=2,  # each attempt also waits out redis-py's own reconnects (~3 s)
            first_wait_s=0.01,
            log=waits.append,
        )
    message = str(failure.value)
    assert f"redis online store at {url}" in message and "failed 2 times" in message
    assert "ConnectionError" in message
    assert [w.split("retrying in ")[1] for w in waits] == ["0.01 s"]


def test_a_missing_server_binary_is_named_not_installed_at_run_time():
    from devtools.servers import require_command

    with pytest.raises(RuntimeError, match=r"not installed: run `bash .*install_redis\.sh`"):
        require_command("redis-server-that-does-not-exist", "install_redis.sh")
