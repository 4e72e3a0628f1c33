"""RetailRocket: events.csv (unix ms), item_properties_part*.csv snapshots (the catalog is each
item's latest category, availability and price), category_tree.csv (category paths)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from dagster_project.sources.formats.common import (
    _LINEAGE,
    SourceExport,
    _check_options,
    _day_window,
    _epoch_text,
    _first_seen,
    _raw_ids,
    _require_folder,
    _with_seq,
    export,
)
from dagster_project.sources.records import LandingFileError, read_records

RETAILROCKET_PRICE_PROPERTY = "790"


def read_retailrocket(folder: Path, mapping: dict) -> SourceExport:
    """RetailRocket: events.csv (unix ms), item_properties_part*.csv snapshots, category_tree.csv."""
    _check_options("retailrocket", mapping, {"source", "window"})
    source = mapping.get("source", "retailrocket")
    _require_folder(folder)
    events = _retailrocket_events(folder)
    props = _item_properties(folder)
    tree = read_records(folder, "category_tree.csv", required=["categoryid", "parentid"])
    paths = _category_paths(tree)
    catalog = _retailrocket_catalog(props, paths)
    torn = pl.concat(
        [
            props.filter(pl.col("parse_error").is_not_null()).select(_LINEAGE),
            tree.filter(pl.col("parse_error").is_not_null()).select(_LINEAGE),
        ]
    )
    return export(
        source,
        mapping,
        events=events,
        items=pl.concat([catalog, torn], how="diagonal"),
        findings=_retailrocket_findings(events, props, tree, catalog, paths),
        default_window=_day_window(events["event_time"]),
    )


def _retailrocket_events(folder: Path) -> pl.DataFrame:
    """events.csv as behaviour events, unix milliseconds as ISO times."""
    events = read_records(
        folder, "events.csv", required=["timestamp", "visitorid", "event", "itemid"]
    )
    return events.with_columns(
        _raw_ids(events),
        pl.col("visitorid").str.strip_chars().alias("user_id"),
        pl.col("itemid").str.strip_chars().alias("item_id"),
        pl.col("event").str.strip_chars().alias("event_type"),
        _epoch_text("timestamp", "ms").alias("event_time"),
    )


def _item_properties(folder: Path) -> pl.DataFrame:
    """Every item_properties*.csv record in reading order (`seq`), its time as a number."""
    property_files = sorted(p.name for p in folder.glob("item_properties*.csv"))
    if not property_files:
        raise LandingFileError(
            f"{folder / 'item_properties_part1.csv'}: no such file (no item properties)"
        )
    return _with_seq(
        [
            read_records(folder, n, required=["timestamp", "itemid", "property", "value"])
            for n in property_files
        ]
    ).with_columns(
        pl.col("itemid").str.strip_chars().alias("item_id"),
        pl.col("property").str.strip_chars(),
        pl.col("timestamp").str.strip_chars().cast(pl.Int64, strict=False).alias("ts"),
    )


def _category_paths(tree: pl.DataFrame) -> dict[str, str]:
    """categoryid -> "root/.../leaf" ids, following parentid (a cycle ends the walk)."""
    parent = {
        c: p
        for c, p in tree.filter(pl.col("parse_error").is_null())
        .select(pl.col("categoryid").str.strip_chars(), pl.col("parentid").str.strip_chars())
        .iter_rows()
        if c is not None
    }
    paths: dict[str, str] = {}
    for category in parent:
        chain, node = [category], parent.get(category)
        while node is not None and node not in chain:
            chain.append(node)
            node = parent.get(node)
        paths[category] = "/".join(reversed(chain))
    return paths


def _retailrocket_catalog(props: pl.DataFrame, paths: dict[str, str]) -> pl.DataFrame:
    """One row per item with properties: its latest category (as a path), availability and
    price, with the lineage of the record where the item first appears."""
    wanted = ["categoryid", "available", RETAILROCKET_PRICE_PROPERTY]
    latest = (
        props.filter(pl.col("parse_error").is_null() & pl.col("property").is_in(wanted))
        .sort(["ts", "seq"], nulls_last=False)
        .group_by("item_id", "property")
        .agg(pl.col("value").last().str.strip_chars())
        .pivot(on="property", index="item_id", values="value")
    )
    for prop in wanted:
        if prop not in latest.columns:
            latest = latest.with_columns(pl.lit(None, pl.String).alias(prop))
    price = pl.col(RETAILROCKET_PRICE_PROPERTY)
    return (
        _first_seen(props.filter(pl.col("parse_error").is_null()), "item_id")
        .join(latest, on="item_id", how="left")
        .with_columns(
            pl.col("categoryid")
            .replace_strict(paths, default=pl.col("categoryid"), return_dtype=pl.String)
            .alias("category"),
            pl.col("available").replace({"1": "true", "0": "false"}),
            pl.coalesce(price.str.extract(r"^n(-?\d+(?:\.\d+)?)$", 1), price).alias("price"),
            parse_error=pl.lit(None, pl.String),
        )
    )


def _retailrocket_findings(
    events: pl.DataFrame,
    props: pl.DataFrame,
    tree: pl.DataFrame,
    catalog: pl.DataFrame,
    paths: dict[str, str],
) -> dict[str, int]:
    ok = events.filter(pl.col("parse_error").is_null())
    return {
        "events": ok.height,
        "visitors": ok["user_id"].drop_nulls().n_unique(),
        "items_with_properties": catalog.height,
        "events_for_items_without_properties": ok.join(
            catalog.select("item_id"), on="item_id", how="anti"
        ).height,
        "items_without_category": catalog["categoryid"].null_count(),
        "items_with_category_missing_from_tree": catalog.filter(
            pl.col("categoryid").is_not_null() & ~pl.col("categoryid").is_in(list(paths))
        ).height,
        "categories": len(paths),
        "unparseable_property_rows": props["parse_error"].is_not_null().sum(),
        "unparseable_category_rows": tree["parse_error"].is_not_null().sum(),
    }
