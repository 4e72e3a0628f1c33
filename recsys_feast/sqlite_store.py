"""Feast's SQLite online store, reading only the requested features.

Feast's `SqliteOnlineStore` keeps one row per (entity, feature) and its `online_read` fetches
every feature of the view and converts each row's timestamp in Python, whatever was asked
for. A 100-entity lookup of a few ranking features therefore read ~4,300 rows, and spent
most of its time there. This subclass filters by feature name in SQL and converts one
timestamp per entity; writes, schema and files are Feast's own, so the same database works
with either class. Select it in feature_store.yaml:

    online_store:
      type: recsys_feast.sqlite_store.RequestedFeaturesSqliteOnlineStore
      path: ...
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from feast import FeatureView, RepoConfig
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from recsys_feast.internals import sqlite_connection, sqlite_table

STORE_TYPE = "recsys_feast.sqlite_store.RequestedFeaturesSqliteOnlineStore"


class RequestedFeaturesSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """The SQLite online store's settings (path, ...) under this store's type name."""

    type: Literal[STORE_TYPE] = STORE_TYPE  # type: ignore[assignment]


class RequestedFeaturesSqliteOnlineStore(SqliteOnlineStore):
    """SQLite online store whose reads fetch only the requested features."""

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        keys = [
            serialize_entity_key(k, config.entity_key_serialization_version) for k in entity_keys
        ]
        sql = (
            # `event_ts + 0` has no declared type, so sqlite3 returns the epoch seconds as is
            # instead of building a datetime for every (entity, feature) row.
            f"SELECT entity_key, feature_name, value, event_ts + 0 FROM {sqlite_table(config, table)} "
            f"WHERE entity_key IN ({','.join('?' * len(keys))})"
        )
        params: list = list(keys)
        if requested_features:
            sql += f" AND feature_name IN ({','.join('?' * len(requested_features))})"
            params += requested_features
        found: dict[bytes, tuple[int, dict[str, ValueProto]]] = {}
        for key, feature, blob, epoch in sqlite_connection(self, config).execute(sql, params):
            value = ValueProto()
            value.ParseFromString(blob)
            found.setdefault(key, (epoch, {}))[1][feature] = value
        result: list[tuple[datetime | None, dict[str, ValueProto] | None]] = []
        for key in keys:
            if key in found:
                epoch, values = found[key]
                result.append((datetime.fromtimestamp(int(epoch), tz=UTC), values))
            else:
                result.append((None, None))
        return result
