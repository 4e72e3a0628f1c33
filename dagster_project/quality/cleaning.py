"""Raw frames -> clean, typed tables plus a quarantine: every raw row ends in exactly one of them.

Rules run in a fixed order and the first one that fails gives the row its reason, so a row
has exactly one stable reason code and a human sentence saying what was wrong.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import numpy as np
import pandas as pd

from dagster_project.contracts import (
    EVENT_COLUMNS,
    ITEM_COLUMNS,
    NEAR_DUPLICATE_WINDOW,
    SESSION_GAP,
)

QUARANTINE_COLUMNS = [
    "table",
    "source",
    "source_file",
    "source_line",
    "raw",
    "reason",
    "detail",
    "run_id",
    "quarantined_at",
]
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
REASONS = {
    "unparseable_row": "the record could not be split into the file's columns",
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


def _blank(s: pd.Series) -> pd.Series:
    return (s.isna() | (s.str.strip() == "")).fillna(True).astype(bool)


def _raw_text(rows: pd.DataFrame, columns: list[str]) -> pd.Series:
    """The record as read: the CSV line, else the fields as JSON (Parquet)."""
    as_json = rows[columns].apply(
        lambda r: json.dumps({k: v for k, v in r.items() if not pd.isna(v)}, ensure_ascii=False),
        axis=1,
    )
    return rows["raw"].where(rows["raw"].notna(), as_json) if len(rows) else rows["raw"]


class _Verdicts:
    """Collects the first failing rule per row."""

    def __init__(self, raw: pd.DataFrame) -> None:
        self.reason = pd.Series(None, index=raw.index, dtype=object)
        self.detail = pd.Series(None, index=raw.index, dtype=object)
        # The first rule for every table: the record could not even be split into fields.
        self.fail(
            raw["parse_error"].notna(),
            "unparseable_row",
            lambda hit: "unparseable: " + raw["parse_error"][hit],
        )

    @property
    def ok(self) -> pd.Series:
        return self.reason.isna()

    def fail(
        self, mask: pd.Series, reason: str, detail: Callable[[pd.Series], pd.Series] | None = None
    ) -> None:
        """Give `reason` to the rows in `mask` that have none yet; `detail(hit)` words each one."""
        hit = mask & self.ok
        if not hit.any():
            return
        self.reason[hit] = reason
        self.detail[hit] = REASONS[reason] if detail is None else detail(hit)

    def quarantine(
        self, raw: pd.DataFrame, table: str, columns: list[str], run_id: str, now: pd.Timestamp
    ) -> pd.DataFrame:
        bad = raw[~self.ok]
        return pd.DataFrame(
            {
                "table": table,
                "source": bad["source"],
                "source_file": bad["source_file"],
                "source_line": bad["source_line"].astype("int64"),
                "raw": _raw_text(bad, columns),
                "reason": self.reason[~self.ok],
                "detail": self.detail[~self.ok],
                "run_id": run_id,
                "quarantined_at": now,
            },
            columns=QUARANTINE_COLUMNS,
        ).reset_index(drop=True)


def _quoted(column: pd.Series, template: str) -> Callable[[pd.Series], pd.Series]:
    """Detail sentences built only for the failing rows: `template` with {} as the value."""
    return lambda hit: column[hit].fillna("<empty>").map(lambda v: template.format(repr(v)))


MAX_QUANTITY = 1_000_000


def _finite_number(s: pd.Series) -> pd.Series:
    """Numbers as float64; text, inf and NaN spelled out become missing."""
    number = pd.to_numeric(s, errors="coerce").astype("float64")
    return number.where(np.isfinite(number))


def _parse_time(s: pd.Series) -> pd.Series:
    return pd.to_datetime(s, utc=True, errors="coerce", format="ISO8601")


def clean_items(
    raw: pd.DataFrame, run_id: str, now: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw catalog rows -> (items_clean, quarantine)."""
    v = _Verdicts(raw)
    v.fail(_blank(raw["item_id"]), "null_item_id")
    price = _finite_number(raw["price"])
    v.fail(price.isna(), "bad_price", _quoted(raw["price"], "price {} is not a finite number"))
    v.fail(price <= 0, "non_positive_price", _quoted(raw["price"], "price {} is not positive"))
    listed = _parse_time(raw["listed_at"])
    v.fail(
        raw["listed_at"].notna() & listed.isna(),
        "bad_timestamp",
        _quoted(raw["listed_at"], "listed_at {} cannot be parsed"),
    )
    v.fail(
        raw["item_id"].where(v.ok).duplicated(),
        "duplicate_item",
        _quoted(raw["item_id"], "item {} appears earlier in the catalog"),
    )
    ok = v.ok
    available = (
        raw["available"].fillna("true").str.strip().str.lower().isin(["true", "1", "yes", "y"])
    )
    items = pd.DataFrame(
        {
            "item_id": raw["item_id"],
            "title": raw["title"].fillna(""),
            "description": raw["description"].fillna(""),
            "category": raw["category"].fillna("Unknown"),
            "brand": raw["brand"].fillna("Unknown"),
            "price": price,
            "available": available,
            "listed_at": listed,
            "source": raw["source"],
            "source_file": raw["source_file"],
            "source_line": raw["source_line"].astype("int64"),
            "ingested_at": now,
        }
    )[ok].reset_index(drop=True)
    return items, v.quarantine(raw, "items", ITEM_COLUMNS, run_id, now)


def stable_event_id(frame: pd.DataFrame) -> pd.Series:
    """A stable hash of the row's content, for sources that carry no event id."""
    key = (
        frame["source"].astype(str)
        + "|"
        + frame["user_id"].astype(str)
        + "|"
        + frame["item_id"].astype(str)
        + "|"
        + frame["event_type"].astype(str)
        + "|"
        + frame["event_time"].astype(str)
    )
    return key.map(lambda k: "h" + hashlib.blake2b(k.encode(), digest_size=8).hexdigest())


def derive_sessions(user_id: pd.Series, event_time: pd.Series) -> pd.Series:
    """Session ids from 30 minutes of inactivity, for sources that carry none."""
    nanos = event_time.astype("int64").to_numpy()
    order = np.lexsort((nanos, user_id.to_numpy()))
    u = user_id.to_numpy()[order]
    t = nanos[order]
    new = np.r_[True, (u[1:] != u[:-1]) | ((t[1:] - t[:-1]) > SESSION_GAP.value)]
    number = np.cumsum(new)
    sid = pd.Series(number, index=user_id.index[order]).reindex(user_id.index)
    start = pd.Series(t[new][number - 1], index=user_id.index[order]).reindex(user_id.index)
    return "d" + pd.util.hash_pandas_object(
        pd.DataFrame({"u": user_id, "t": start, "n": sid}), index=False
    ).map("{:016x}".format)


def clean_events(
    raw: pd.DataFrame,
    items: pd.DataFrame,
    window: tuple[pd.Timestamp, pd.Timestamp],
    run_id: str,
    now: pd.Timestamp,
    quarantined_items: pd.Series | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw behaviour rows -> (events_clean, quarantine), checked against the clean catalog."""
    v = _Verdicts(raw)
    v.fail(_blank(raw["user_id"]), "null_user_id")
    v.fail(_blank(raw["item_id"]), "null_item_id")
    event_type = (
        raw["event_type"]
        .str.strip()
        .str.lower()
        .astype("category")
        .map(EVENT_TYPE_ALIASES)
        .astype(object)
    )
    v.fail(
        event_type.isna(), "bad_event_type", _quoted(raw["event_type"], "event type {} is unknown")
    )
    event_time = _parse_time(raw["event_time"])
    v.fail(
        event_time.isna(),
        "bad_timestamp",
        _quoted(raw["event_time"], "timestamp {} cannot be parsed"),
    )
    v.fail(
        event_time > now,
        "future_timestamp",
        _quoted(
            raw["event_time"],
            f"timestamp {{}} is after the ingestion time {now:%Y-%m-%d %H:%M} UTC",
        ),
    )
    start, end = window
    v.fail(
        (event_time < start) | (event_time >= end),
        "outside_source_window",
        _quoted(
            raw["event_time"],
            f"timestamp {{}} is outside the declared window {start:%Y-%m-%d} .. {end:%Y-%m-%d}",
        ),
    )
    price = _finite_number(raw["price"])
    v.fail(
        raw["price"].notna() & price.isna(),
        "bad_price",
        _quoted(raw["price"], "price {} is not a finite number"),
    )
    v.fail(price <= 0, "non_positive_price", _quoted(raw["price"], "price {} is not positive"))
    quantity = _finite_number(raw["quantity"])
    v.fail(
        raw["quantity"].notna()
        & ~((quantity > 0) & (quantity <= MAX_QUANTITY) & (quantity == quantity.round())),
        "bad_quantity",
        _quoted(raw["quantity"], "quantity {} is not a whole number between 1 and 1,000,000"),
    )

    event_id = raw["event_id"].where(~_blank(raw["event_id"]))
    if event_id[v.ok].isna().any():
        event_id = event_id.fillna(stable_event_id(raw[event_id.isna()]))
    session_id = raw["session_id"].where(~_blank(raw["session_id"]))
    if session_id[v.ok].isna().any():
        missing = session_id.isna() & v.ok
        session_id = session_id.fillna(
            derive_sessions(raw["user_id"][missing], event_time[missing])
        )
    v.fail(
        event_id.where(v.ok).duplicated(),
        "duplicate_event",
        _quoted(event_id, "event {} was already seen"),
    )
    # Near duplicates: the same event re-sent with a new id and a slightly shifted time.
    cand = pd.DataFrame(
        {
            "u": raw["user_id"],
            "i": raw["item_id"],
            "e": event_type,
            "s": session_id,
            "t": event_time,
        }
    )[v.ok]
    v.fail(_near_duplicates(cand).reindex(raw.index, fill_value=False), "near_duplicate_event")

    def unknown_item_detail(hit: pd.Series) -> pd.Series:
        ids = raw["item_id"][hit]
        was_quarantined = ids.isin(quarantined_items if quarantined_items is not None else [])
        return ("item " + ids + " is not in the catalog").where(
            ~was_quarantined, "item " + ids + " was quarantined from the catalog"
        )

    v.fail(~raw["item_id"].isin(items["item_id"]), "unknown_item", unknown_item_detail)

    ok = v.ok
    events = (
        pd.DataFrame(
            {
                "event_id": event_id,
                "user_id": raw["user_id"],
                "session_id": session_id,
                "item_id": raw["item_id"],
                "event_type": event_type,
                "event_time": event_time,
                "quantity": quantity.where(ok).astype("Int64"),  # whole numbers on kept rows
                "price": price,
                "query": raw["query"],
                "source": raw["source"],
                "source_file": raw["source_file"],
                "source_line": raw["source_line"].astype("int64"),
                "ingested_at": now,
            }
        )[ok]
        .sort_values("event_time", kind="stable")
        .reset_index(drop=True)
    )
    return events, v.quarantine(raw, "behaviour_events", EVENT_COLUMNS, run_id, now)


def _near_duplicates(cand: pd.DataFrame) -> pd.Series:
    """True for an event within NEAR_DUPLICATE_WINDOW after the last *kept* event of its key.

    `cand`: u, i, e, s (the key) and t. Pairs are vectorised; only runs of three or more close
    events (rare) are walked one by one, so a chain is measured from the event that was kept.
    """
    cand = cand.sort_values(["u", "i", "e", "s", "t"], kind="stable")
    same = (
        (cand[["u", "i", "e", "s"]] == cand[["u", "i", "e", "s"]].shift()).all(axis=1).astype(bool)
    )
    near = (same & (cand["t"] - cand["t"].shift() <= NEAR_DUPLICATE_WINDOW)).astype(bool)
    chained = near & near.shift(fill_value=False)
    if chained.any():
        group = (~same).cumsum()
        for g in group[chained].unique():
            members = group.index[group == g]
            kept_at = None
            for idx in members:
                t = cand.at[idx, "t"]
                near.at[idx] = kept_at is not None and t - kept_at <= NEAR_DUPLICATE_WINDOW
                if not near.at[idx]:
                    kept_at = t
    return near


def row_accounting(
    raw: pd.DataFrame, clean: pd.DataFrame, quarantine: pd.DataFrame
) -> pd.DataFrame:
    """Per source file: rows read, clean, quarantined, and whether they add up."""
    read = raw.groupby("source_file").size().rename("rows_read")
    kept = clean.groupby("source_file").size().rename("rows_clean")
    held = quarantine.groupby("source_file").size().rename("rows_quarantined")
    out = pd.concat([read, kept, held], axis=1).fillna(0).astype("int64")
    out["balanced"] = out["rows_read"] == out["rows_clean"] + out["rows_quarantined"]
    return out.reset_index().rename(columns={"index": "source_file"})
