"""The users' recent activity in Feast's online store: read for a request, pushed by the intake."""

from __future__ import annotations

import time

import pandas as pd
from feast import FeatureStore, FeatureView
from feast.data_source import PushMode
from feast.type_map import feast_value_type_to_python_type

from dagster_project.features.recent import (
    LIST_COLUMNS,
    RECENT_ACTIVITY_COLUMNS,
    RECENT_VIEW,
    TODAY_COLUMNS,
    empty_recent_activity,
)
from dagster_project.privacy import entity_keys
from recsys_feast.internals import online_store

PUSH_SOURCE = "user_recent_activity_push"
STORED_COLUMNS = [*LIST_COLUMNS, "activity_day", *TODAY_COLUMNS.values()]


class RecentActivityStore:
    """Reads and pushes rows of the Feast view `user_recent_activity`."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._looked_up: tuple[float, FeatureView] | None = None

    def read(self, user_ids: list[str]) -> pd.DataFrame:
        """The stored rows of `user_ids` (users without one are left out).

        Read through the online store of Feast's provider (the store the configuration
        names, SQLite or Redis; `recsys_feast.internals.online_store`) rather than
        `get_online_features`, whose request planning cost several times the read itself
        for one user."""
        if not user_ids:
            return empty_recent_activity()
        view = self._view()
        keys = entity_keys("user_id", user_ids)
        rows = online_store(self.store).online_read(self.store.config, view, keys, STORED_COLUMNS)
        found = [
            {
                "user_id": user,
                **{
                    c: feast_value_type_to_python_type(values[c])
                    for c in STORED_COLUMNS
                    if c in values
                },
            }
            for user, (_, values) in zip(user_ids, rows, strict=True)
            if values and "activity_day" in values
        ]
        if not found:
            return empty_recent_activity()
        frame = pd.DataFrame(found)
        for column in TODAY_COLUMNS.values():
            frame[column] = frame[column].fillna(0).astype("int64")
        return frame.reindex(columns=RECENT_ACTIVITY_COLUMNS)

    def _view(self) -> FeatureView:
        """The view's definition, looked up again once per registry refresh (rebuilding it
        from the registry's proto took longer than the read)."""
        ttl = self.store.config.registry.cache_ttl_seconds or 60
        now = time.monotonic()
        if self._looked_up is None or now - self._looked_up[0] >= ttl:
            self._looked_up = (
                now,
                self.store.get_feature_view(RECENT_VIEW, allow_registry_cache=True),
            )
        return self._looked_up[1]

    def history(self, user_id: str) -> pd.DataFrame:
        """One user's recent events (item_id, event_type, event_time), oldest first."""
        rows = self.read([user_id])
        if rows.empty:
            return pd.DataFrame(columns=["item_id", "event_type", "event_time"])
        row = rows.iloc[0]
        return pd.DataFrame(
            {
                "item_id": row["recent_items"],
                "event_type": row["recent_event_types"],
                "event_time": pd.to_datetime(row["recent_event_times"], unit="ms", utc=True),
            }
        )

    def push(self, rows: pd.DataFrame) -> None:
        """Write advanced rows (RECENT_ACTIVITY_COLUMNS) to the online store."""
        if len(rows):
            self.store.push(PUSH_SOURCE, rows, to=PushMode.ONLINE)
