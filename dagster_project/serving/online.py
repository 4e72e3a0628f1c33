"""The users' recent activity in Feast's online store: read for a request, pushed by the intake."""

from __future__ import annotations

import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode

from dagster_project.features.recent import (
    LIST_COLUMNS,
    RECENT_ACTIVITY_COLUMNS,
    TODAY_COLUMNS,
    empty_recent_activity,
)

RECENT_VIEW = "user_recent_activity"
PUSH_SOURCE = "user_recent_activity_push"
STORED_COLUMNS = [*LIST_COLUMNS, "activity_day", *TODAY_COLUMNS.values()]


class RecentActivityStore:
    """Reads and pushes rows of the Feast view `user_recent_activity`."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.features = [f"{RECENT_VIEW}:{c}" for c in STORED_COLUMNS]

    def read(self, user_ids: list[str]) -> pd.DataFrame:
        """The stored rows of `user_ids` (users without one are left out)."""
        if not user_ids:
            return empty_recent_activity()
        found = self.store.get_online_features(
            features=self.features, entity_rows=[{"user_id": u} for u in user_ids]
        ).to_dict()
        frame = pd.DataFrame({c: found[c] for c in ["user_id", *STORED_COLUMNS]})
        frame = frame[frame["activity_day"].notna()].reset_index(drop=True)
        for column in TODAY_COLUMNS.values():
            frame[column] = frame[column].astype("int64")
        return frame.reindex(columns=RECENT_ACTIVITY_COLUMNS)

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
