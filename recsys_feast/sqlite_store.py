"""Feast's SQLite online store, reading only the requested features.

Feast's `SqliteOnlineStore` keeps one row per (entity, feature) and its `online_read` fetches
every feature of the view and converts each row's timestamp in Python, whatever was asked
for. A 100-entity lookup of a few ranking features therefore read ~4,300 rows, and spent
most of its time there. This subclass filters by feature name in SQL and converts one
timestamp per entity.

Feast's writer runs one upsert statement per (entity, feature) from Python: a day of the
default shop is ~400k statements. This subclass writes the same rows (columns and values;
tests/test_feature_serving.py compares them) with one `executemany` per batch, each
entity's timestamps converted once; stores with vector columns keep Feast's own writer.
Unlike Feast's SQLite writer, and like its Redis one, a row older than the one stored (by
event timestamp) does not replace it.
The database is in write-ahead-log mode (`internals.sqlite_connection`), so a worker's
reads never wait for another process's writes. The schema and files are Feast's own, so the
same database works with either class. Select it in feature_store.yaml:

    online_store:
      type: recsys_feast.sqlite_store.RequestedFeaturesSqliteOnlineStore
      path: ...
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from feast import FeatureView, RepoConfig
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.infra.online_stores.sqlite import (
    SqliteOnlineStore,
    SqliteOnlineStoreConfig,
    adapt_datetime_epoch,
)
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.utils import to_naive_utc

from recsys_feast.internals import sqlite_connection, sqlite_table

STORE_TYPE = "recsys_feast.sqlite_store.RequestedFeaturesSqliteOnlineStore"


class RequestedFeaturesSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """The SQLite online store's settings (path, ...) under this store's type name."""

    type: Literal[STORE_TYPE] = STORE_TYPE  # type: ignore[assignment]


class RequestedFeaturesSqliteOnlineStore(SqliteOnlineStore):
    """SQLite online store whose reads fetch only the requested features and whose writes
    go in bulk."""

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        online = config.online_store
        if online.vector_enabled or getattr(online, "enable_openai_compatible_store", False):
            super().online_write_batch(config, table, data, progress)  # their extra columns
            return
        version = config.entity_key_serialization_version
        rows = []
        # (value, value_text) per Value object: rows from recsys_feast.materialization share
        # one object per distinct value, so each is serialised once
        stored: dict[int, tuple[bytes, str | None]] = {}
        for entity_key, values, timestamp, created in data:
            key = serialize_entity_key(entity_key, entity_key_serialization_version=version)
            # what sqlite3 would store for each row (Feast's adapter), once per entity
            stamp = adapt_datetime_epoch(to_naive_utc(timestamp))
            created = None if created is None else adapt_datetime_epoch(to_naive_utc(created))
            for name, v in values.items():
                if id(v) not in stored:
                    stored[id(v)] = (v.SerializeToString(), extract_text_and_num(v, False)[0])
                rows.append((key, name, *stored[id(v)], stamp, created))
        columns = "value, value_text, event_ts, created_ts"
        sql = (
            f"INSERT INTO {sqlite_table(config, table)} (entity_key, feature_name, {columns}) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in columns.split(", "))
            # an older row never replaces a newer one (a backfill of an earlier day after the
            # real-time intake pushed today's activity): Redis's store does the same
            + " WHERE excluded.event_ts >= event_ts"
        )
        connection = sqlite_connection(self, config)
        with connection:
            connection.executemany(sql, rows)
        if progress:
            progress(len(data))

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
