"""The canonical data contracts of ARCHITECTURE.md: column sets, enums and reason codes."""

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
# Columns a landing file must have (the rest may be absent and are then empty).
EVENT_REQUIRED = ["user_id", "item_id", "event_type", "event_time"]
ITEM_REQUIRED = ["item_id"]
# Every raw frame (one row per record read, all text) carries these before the contract columns:
# where the record came from, the record as read, why it could not be split into fields
# (`parse_error`), and a reason code an adapter gave it for a source-specific rejection
# (`source_reason`, a key of QUARANTINE_REASONS) with its sentence (`source_detail`).
RAW_LINEAGE_COLUMNS = [
    "source",
    "source_file",
    "source_line",
    "raw",
    "parse_error",
    "source_reason",
    "source_detail",
]
EVENT_TYPES = ["view", "favorite", "add_to_cart", "purchase"]
# How sources spell the four event types.
EVENT_TYPE_ALIASES = {
    "view": "view",
    "pv": "view",
    "click": "view",
    "favorite": "favorite",
    "fav": "favorite",
    "favourite": "favorite",
    "like": "favorite",
    "add_to_cart": "add_to_cart",
    "cart": "add_to_cart",
    "addtocart": "add_to_cart",
    "purchase": "purchase",
    "buy": "purchase",
    "transaction": "purchase",
    "order": "purchase",
}
# Stable quarantine reason codes, each with the sentence an analyst reads.
QUARANTINE_REASONS = {
    "bad_file": "the whole landing file could not be read (the detail says why); it is one record",
    "unparseable_row": "the record could not be split into the file's columns",
    "cancelled_order": "the line cancels an earlier order (its invoice starts with C)",
    "non_product_line": "the line is a fee, postage or manual adjustment, not a product",
    "unknown_order": "the order line points to an order missing from the orders file",
    "null_user_id": "the user id is missing",
    "null_item_id": "the item id is missing",
    "bad_event_type": "the event type is not one of view, favorite, add_to_cart, purchase",
    "bad_timestamp": "the timestamp cannot be parsed",
    "future_timestamp": "the timestamp lies in the future",
    "outside_source_window": "the timestamp lies outside the source's declared window",
    "bad_price": "the price is not a number",
    "non_positive_price": "the price is zero or negative",
    "bad_quantity": "the quantity is not a whole number between 1 and 1,000,000",
    "duplicate_event": "the event id was already seen",
    "near_duplicate_event": "the same user, item, event type and session within 2 seconds of a kept event",
    "unknown_item": "the item id is not in the validated catalog",
    "duplicate_item": "the item id was already seen in the catalog",
}
# The same event re-sent within this window (same user, item, type and session) is a duplicate.
NEAR_DUPLICATE_WINDOW = pd.Timedelta(seconds=2)
# 30 minutes of inactivity end a session, for sources that carry no session id.
SESSION_GAP = pd.Timedelta(minutes=30)
