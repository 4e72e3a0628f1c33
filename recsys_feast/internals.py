"""Feast's private internals the platform relies on, in one place. Feast has no public
per-entity delete and no read of only the requested features, so these reach below its API.
Checked against feast 0.67.0 (`FEAST_CHECKED`; tests/test_architecture.py fails on another
version): before upgrading Feast, read these against its source and run the Feast tests
(test_feature_serving, test_feast_redis, test_privacy, test_serving). `sqlite_store`'s bulk
writer also writes Feast's SQLite table layout itself; its test compares it with Feast's
writer.
`materialization` subclasses Feast's local compute engine and its output node (and calls
Feast's private converters); the same test compares what it stores with Feast's engine."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from feast import FeatureStore, FeatureView, RepoConfig
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.sqlite import SqliteOnlineStore, _quote_id, _table_id
from feast.utils import _coerce_datetime, _validate_vector_field_lengths

FEAST_CHECKED = "0.67.0"


def online_store(store: FeatureStore) -> Any:
    """The online store object behind a FeatureStore (SQLite, Redis, ...)."""
    return store._get_provider().online_store


def push_source_views(store: FeatureStore, push_source: str) -> list[Any]:
    """The views a push source feeds, as `FeatureStore.push` finds them (an error when
    none does)."""
    return sorted(store._fvs_for_push_source_or_raise(push_source, True), key=lambda v: v.name)


def write_online_rows(store: FeatureStore, view: FeatureView, rows: list) -> None:
    """Write rows already converted to Feast's protos (entity key, {feature: Value}, event
    time, created time) through the provider's writer, as its `ingest_df` does after its
    conversion, without the registry lookups that cost more than a small write."""
    store._get_provider().online_write_batch(store.config, view, rows, progress=None)


def sqlite_table(config: RepoConfig, view: FeatureView) -> str:
    """The quoted name of a view's table in Feast's SQLite online store."""
    versioned = config.registry.enable_online_feature_view_versioning
    return _quote_id(_table_id(config.project, view, versioned))


def sqlite_connection(online: Any, config: RepoConfig) -> sqlite3.Connection:
    """The SQLite online store's connection (Feast opens and caches it, one per process,
    shared by its threads), its database switched to write-ahead logging when the
    connection is opened: a reader in one process (a worker of the real-time service) then
    never waits for a writer in another (another worker's pushes, a materialization), and
    writers wait only for each other. The mode is the file's, so every later connection to
    it uses it too. In WAL mode `synchronous = NORMAL` commits without a sync: a power cut
    can lose the newest pushes (the next daily run writes them again); the file stays
    consistent. A database another process holds locked keeps its mode."""
    opening = not online._conn
    connection = online._get_conn(config)
    if opening:
        with contextlib.suppress(sqlite3.OperationalError):  # locked: it stays as it was
            connection.execute("PRAGMA journal_mode = WAL")
        (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
        if mode == "wal":
            connection.execute("PRAGMA synchronous = NORMAL")
    return connection


def map_sqlite_store(store: FeatureStore, size_bytes: int) -> None:
    """Let this process read a SQLite online store through a memory map of up to
    `size_bytes` of its file, instead of a read call per page (other stores: nothing to do).
    For serving processes, whose reads are random lookups: 400 users' recent activity took
    13-15 ms against 21 ms. Pages read through the map count in the process's resident
    memory, so batch steps that read the whole store keep plain reads."""
    online = online_store(store)
    if isinstance(online, SqliteOnlineStore):
        sqlite_connection(online, store.config).execute(f"PRAGMA mmap_size = {int(size_bytes)}")


def redis_client(online: Any, config: RepoConfig) -> Any:
    """The Redis online store's client."""
    return online._get_client(config.online_store)


def redis_fields(view: FeatureView) -> list[bytes | str]:
    """A view's fields in each entity's Redis hash: its timestamp and a murmur3 hash of each
    `<view>:<feature>`."""
    return [f"_ts:{view.name}", *(_mmh3(f"{view.name}:{f.name}") for f in view.features)]


def coerce_datetime(value: Any) -> Any:
    """A timestamp as Feast's materialization hands it to an online store."""
    return _coerce_datetime(value)


def check_vector_lengths(table: Any, view: FeatureView) -> None:
    """Feast's check that a table's vector columns have the lengths its view declares."""
    _validate_vector_field_lengths(table, view)


def engine_backend(engine: Any, context: Any) -> Any:
    """The DataFrame backend a Feast local compute engine runs a materialization with."""
    return engine._get_backend(context)
