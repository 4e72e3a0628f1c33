"""The users' recent activity in Feast's online store: read for a request, pushed by the intake."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import polars as pl
import pyarrow as pa
from feast import FeatureStore, FeatureView
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type

from dagster_project.features.recent import (
    LIST_COLUMNS,
    RECENT_ACTIVITY_SCHEMA,
    RECENT_VIEW,
    TODAY_COLUMNS,
)
from dagster_project.privacy import entity_keys
from recsys_feast.arrow_values import values_to_arrow
from recsys_feast.internals import (
    map_sqlite_store,
    online_store,
    push_source_views,
    write_online_rows,
)
from recsys_feast.materialization import table_to_rows

PUSH_SOURCE = "user_recent_activity_push"
SQLITE_MAP_BYTES = 1 << 30  # the SQLite online store's first GiB read through a memory map
STORED_COLUMNS = [*LIST_COLUMNS, "activity_day", *TODAY_COLUMNS.values()]
# the Arrow types `read` builds its columns in (polars' own for the frame's schema)
STORED_ARROW_SCHEMA = pl.DataFrame(schema=RECENT_ACTIVITY_SCHEMA).to_arrow().schema


class RecentEvents(NamedTuple):
    """A user's recent events as the online store holds them, oldest first."""

    item_ids: list[str]
    event_types: list[str]
    times_ms: list[int]  # epoch milliseconds


class RecentActivityStore:
    """Reads and pushes rows of the Feast view `user_recent_activity`."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._lookups: dict[str, tuple[float, Any]] = {}
        map_sqlite_store(store, SQLITE_MAP_BYTES)

    def read(self, user_ids: list[str]) -> pl.DataFrame:
        """The stored rows of `user_ids` (users without one are left out), in the stored
        columns (`STORED_COLUMNS`)."""
        found = self._stored_values(user_ids)
        table = pa.table(
            {
                "user_id": pa.array(
                    [user for user, _ in found], STORED_ARROW_SCHEMA.field("user_id").type
                ),
                **{
                    c: values_to_arrow(
                        [values.get(c) for _, values in found], STORED_ARROW_SCHEMA.field(c).type
                    )
                    for c in STORED_COLUMNS
                },
            }
        )
        frame = pl.from_arrow(table)
        return frame.with_columns(pl.col(c).fill_null(0) for c in TODAY_COLUMNS.values())

    def _stored_values(self, user_ids: list[str]) -> list[tuple[str, dict[str, ValueProto]]]:
        """The stored Values of `user_ids` by feature, users without a row left out.

        Read through the online store of Feast's provider (the store the configuration
        names, SQLite or Redis; `recsys_feast.internals.online_store`) rather than
        `get_online_features`, whose request planning cost several times the read itself
        for one user."""
        if not user_ids:
            return []
        view = self._view()
        keys = entity_keys("user_id", user_ids)
        # a copy: Feast's Redis store appends its timestamp field to the list it is given,
        # and the module's list grew by one name per read (each read slower than the last)
        requested = list(STORED_COLUMNS)
        rows = online_store(self.store).online_read(self.store.config, view, keys, requested)
        return [
            (user, values)
            for user, (_, values) in zip(user_ids, rows, strict=True)
            if values and "activity_day" in values
        ]

    def _view(self) -> FeatureView:
        """The view's definition (`_looked_up`)."""
        return self._looked_up(
            "view", lambda: self.store.get_feature_view(RECENT_VIEW, allow_registry_cache=True)
        )

    def _pushed_views(self) -> list[FeatureView]:
        """The views the push source feeds (`_looked_up`)."""
        return self._looked_up("pushed", lambda: push_source_views(self.store, PUSH_SOURCE))

    def _looked_up(self, name: str, look_up: Callable[[], Any]) -> Any:
        """A registry lookup, done again once per registry refresh (rebuilding definitions
        from the registry's proto took longer than the read or the write)."""
        ttl = self.store.config.registry.cache_ttl_seconds or 60
        now = time.monotonic()
        cached = self._lookups.get(name)
        if cached is None or now - cached[0] >= ttl:
            cached = self._lookups[name] = (now, look_up())
        return cached[1]

    def history(self, user_id: str) -> RecentEvents:
        """One user's recent events, oldest first (none for a user the store does not know)."""
        found = self._stored_values([user_id])
        if not found:
            return RecentEvents([], [], [])
        values = found[0][1]
        lists = [
            list(feast_value_type_to_python_type(values[c]) or []) if c in values else []
            for c in LIST_COLUMNS
        ]
        shortest = min(len(v) for v in lists)  # a list missing or cut short: what all have
        items, types, times = (v[len(v) - shortest :] for v in lists)
        return RecentEvents(items, types, [int(t) for t in times])

    def push(self, rows: pl.DataFrame) -> None:
        """Write advanced rows (RECENT_ACTIVITY_COLUMNS) to the online store: what
        `FeatureStore.push(PUSH_SOURCE, rows, to=PushMode.ONLINE)` does (each view the push
        source feeds gets the rows through its provider's writer), with the views looked up
        once per registry refresh instead of on every call, and the rows converted by
        `recsys_feast.materialization.table_to_rows` (each distinct value once; the rows
        Feast's own conversion builds, tested). Unlike it, no feature service is
        precomputed after the write (none here sets `precompute_online`)."""
        if not len(rows):
            return
        table = rows.to_arrow()
        for view in self._pushed_views():
            mapping = view.batch_source.field_mapping or {}  # as Feast's push renames
            named = table.rename_columns([mapping.get(c, c) for c in table.column_names])
            join_keys = {e.name: e.dtype.to_value_type() for e in view.entity_columns}
            write_online_rows(self.store, view, table_to_rows(named, view, join_keys))
