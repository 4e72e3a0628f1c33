"""Privacy: the opt-out list, and removing users' rows from the online store.

The opt-out list is `<data dir>/privacy/opt_out.txt`: one user id per line, `#` starts a
comment. Users on it get no recommendations: none in the `recommendations` table, none in
the Feast view `user_recommendations`, and rows an earlier run put in the online store are
deleted. Their features and events are still used (opting out of personalisation is not a
deletion request).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from dagster_project.settings import DataLayout


def opt_out_file(out: DataLayout) -> Path:
    return out.root / "privacy" / "opt_out.txt"


def opted_out_users(out: DataLayout) -> set[str]:
    """The user ids on the opt-out list (none when there is no list)."""
    path = opt_out_file(out)
    if not path.exists():
        return set()
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {line for line in lines if line}


def _entity_keys(join_key: str, ids: Iterable[str]) -> list[EntityKey]:
    return [EntityKey(join_keys=[join_key], entity_values=[Value(string_val=i)]) for i in ids]


def delete_online_rows(store: FeatureStore, view_names: list[str], user_ids: Iterable[str]) -> int:
    """Delete the users' rows of `view_names` (views keyed by user_id) from the online store;
    returns how many of the users had rows there. SQLite and Redis profiles."""
    ids = sorted(set(user_ids))
    if not ids:
        return 0
    config = store.config
    version = config.entity_key_serialization_version
    keys = [
        serialize_entity_key(k, entity_key_serialization_version=version)
        for k in _entity_keys("user_id", ids)
    ]
    online = store._get_provider().online_store  # Feast has no public per-entity delete
    kind = config.online_store.type
    deleted = 0
    if "sqlite" in kind.lower():
        from feast.infra.online_stores.sqlite import _table_id

        conn = online._get_conn(config)
        tables = [_table_id(config.project, store.get_feature_view(n)) for n in view_names]
        with conn:
            for key in keys:
                removed = sum(
                    conn.execute(f'DELETE FROM "{table}" WHERE entity_key = ?', (key,)).rowcount
                    for table in tables
                )
                deleted += int(removed > 0)
    elif kind == "redis":
        # Redis keeps one hash per entity for all views of the project; a view's fields are
        # `_ts:<view>` and murmur3 hashes of `<view>:<feature>`. Drop those fields.
        from feast.infra.online_stores.helpers import _mmh3

        fields = []
        for name in view_names:
            view = store.get_feature_view(name)
            fields += [f"_ts:{name}", *(_mmh3(f"{name}:{f.name}") for f in view.features)]
        client = online._get_client(config.online_store)
        for key in keys:
            deleted += int(client.hdel(key + config.project.encode(), *fields) > 0)
    else:
        raise NotImplementedError(f"deleting rows from a {kind!r} online store")
    return deleted
