"""The canonical data contracts of ARCHITECTURE.md: column sets and enums every stage shares."""

import pandas as pd

EVENT_COLUMNS = [
    "event_id",
    "user_id",
    "session_id",
    "item_id",
    "event_type",
    "event_time",
    "quantity",
    "price",
    "query",
]
ITEM_COLUMNS = [
    "item_id",
    "title",
    "description",
    "category",
    "brand",
    "price",
    "available",
    "listed_at",
]
EVENT_TYPES = ["view", "favorite", "add_to_cart", "purchase"]
# The same event re-sent within this window (same user, item, type and session) is a duplicate.
NEAR_DUPLICATE_WINDOW = pd.Timedelta(seconds=2)
# 30 minutes of inactivity end a session, for sources that carry no session id.
SESSION_GAP = pd.Timedelta(minutes=30)
