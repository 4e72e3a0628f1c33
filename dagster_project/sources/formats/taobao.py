"""Tianchi/Alibaba Taobao UserBehavior: header-less `user,item,category,behavior,unix s` lines."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from dagster_project.sources.formats.common import (
    SourceExport,
    _check_options,
    _csv_files,
    _epoch_text,
    _first_seen,
    _most_frequent,
    _raw_ids,
    _utc,
    _with_seq,
    export,
)
from dagster_project.sources.records import read_records

TAOBAO_COLUMNS = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]


def read_taobao(folder: Path, mapping: dict) -> SourceExport:
    """Tianchi/Alibaba Taobao UserBehavior: header-less `user,item,category,behavior,unix s`."""
    _check_options("taobao", mapping, {"source", "files", "window"})
    source = mapping.get("source", "taobao_userbehavior")
    records = _with_seq(
        [read_records(folder, n, TAOBAO_COLUMNS, header=False) for n in _csv_files(folder, mapping)]
    )
    events = records.with_columns(
        _raw_ids(records),
        pl.col("user_id").str.strip_chars(),
        pl.col("item_id").str.strip_chars(),
        pl.col("behavior_type").str.strip_chars().alias("event_type"),
        _epoch_text("timestamp", "s", "Asia/Shanghai").alias("event_time"),
    )
    category = _most_frequent(events, "item_id", "category_id")
    items = _first_seen(events, "item_id").join(category, on="item_id", how="left")
    items = items.with_columns(
        pl.col("category_id").alias("category"), parse_error=pl.lit(None, pl.String)
    )
    declared = (_utc("2017-11-25", "Asia/Shanghai"), _utc("2017-12-04", "Asia/Shanghai"))
    return export(
        source,
        mapping,
        events=events,
        items=items,
        findings=_taobao_findings(events, category),
        default_window=declared,
    )


def _taobao_findings(events: pl.DataFrame, category: pl.DataFrame) -> dict[str, int]:
    ok = events.filter(pl.col("parse_error").is_null()).with_columns(
        pl.col("timestamp").str.strip_chars().cast(pl.Int64, strict=False).alias("ts")
    )
    first_view = (
        ok.filter(pl.col("event_type") == "pv")
        .group_by("user_id", "item_id")
        .agg(pl.col("ts").min().alias("first_view"))
    )
    buys = ok.filter(pl.col("event_type") == "buy").join(
        first_view, on=["user_id", "item_id"], how="left"
    )
    per_user = ok.group_by("user_id").len()
    return {
        "events": ok.height,
        "users": ok["user_id"].n_unique(),
        "items": ok["item_id"].n_unique(),
        "purchases": buys.height,
        # no pv of the same item by the same user anywhere in the export
        "purchases_without_view": buys.filter(pl.col("first_view").is_null()).height,
        # no pv of the same item by the same user strictly before the purchase
        "purchases_without_earlier_view": buys.filter(
            pl.col("first_view").is_null() | (pl.col("first_view") >= pl.col("ts"))
        ).height,
        "events_repeating_user_item_type": ok.height
        - ok.unique(["user_id", "item_id", "event_type"]).height,
        "events_per_user_min": int(per_user["len"].min() or 0),
        "events_per_user_max": int(per_user["len"].max() or 0),
        "items_with_several_categories": category.filter(pl.col("distinct_values") > 1).height,
    }
