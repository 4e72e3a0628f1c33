"""Instacart Market Basket: order lines become purchases at synthetic times (the orders carry
only day gaps and hours), products with their aisle and department as the catalog."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import polars as pl

from dagster_project.sources.formats.common import (
    SourceExport,
    _check_options,
    _raw_ids,
    _reason,
    _require_folder,
    _utc,
    _with_seq,
    export,
)
from dagster_project.sources.records import ISO_WITH_OFFSET, LandingFileError, read_records

INSTACART_ANCHOR = "2017-01-01"
INSTACART_ORDER_COLUMNS = [
    "order_id",
    "user_id",
    "order_number",
    "order_hour_of_day",
    "days_since_prior_order",
]


@dataclass
class _InstacartFiles:
    """The export's record frames, one per file (`lines` joins every order-lines file)."""

    orders: pl.DataFrame
    lines: pl.DataFrame
    products: pl.DataFrame
    aisles: pl.DataFrame
    departments: pl.DataFrame


def read_instacart(folder: Path, mapping: dict) -> SourceExport:
    """Instacart Market Basket: order lines become purchases at synthetic times (see docs)."""
    _check_options("instacart", mapping, {"source", "window", "anchor"})
    source = mapping.get("source", "instacart")
    anchor = _utc(mapping.get("anchor", INSTACART_ANCHOR))
    files = _read_instacart_files(folder)
    good_orders = _good_orders(files.orders)
    timed = _timed_orders(good_orders, anchor)
    events = _instacart_events(files.lines, timed)
    items = _instacart_items(files)
    days = timed["day"].drop_nulls()
    return export(
        source,
        mapping,
        events=events,
        items=items,
        findings=_instacart_findings(files, good_orders, events, items, days),
        default_window=(anchor, anchor + pd.Timedelta(days=int(days.max() or 0) + 1)),
    )


def _read_instacart_files(folder: Path) -> _InstacartFiles:
    """Every file of the export as records; a missing file or column raises, named."""
    _require_folder(folder)
    orders = read_records(folder, "orders.csv", required=INSTACART_ORDER_COLUMNS)
    line_files = sorted(p.name for p in folder.glob("order_products__*.csv"))
    if not line_files:
        raise LandingFileError(
            f"{folder / 'order_products__prior.csv'}: no such file (no order lines)"
        )
    lines = _with_seq(
        [read_records(folder, n, required=["order_id", "product_id"]) for n in line_files]
    )
    products = read_records(
        folder, "products.csv", required=["product_id", "product_name", "aisle_id", "department_id"]
    )
    aisles = read_records(folder, "aisles.csv", required=["aisle_id", "aisle"])
    departments = read_records(folder, "departments.csv", required=["department_id", "department"])
    return _InstacartFiles(orders, lines, products, aisles, departments)


def _good_orders(orders: pl.DataFrame) -> pl.DataFrame:
    """The orders that could be split, with their numbers, day gaps and hours as numbers."""
    return orders.filter(pl.col("parse_error").is_null()).with_columns(
        pl.col("order_id").str.strip_chars(),
        pl.col("order_number").cast(pl.Int64, strict=False),
        pl.col("days_since_prior_order").cast(pl.Float64, strict=False).fill_null(0.0),
        pl.col("order_hour_of_day").cast(pl.Int64, strict=False),
    )


def _timed_orders(good_orders: pl.DataFrame, anchor: pd.Timestamp) -> pl.DataFrame:
    """Per order (first seen): its user, synthetic time and day; per user, the days since the
    prior order accumulate from `anchor`, at the order's hour of day."""
    return (
        good_orders.unique("order_id", keep="first", maintain_order=True)
        .with_columns(
            pl.col("days_since_prior_order")
            .cum_sum()
            .over("user_id", order_by=["order_number", "source_line"])
            .alias("day")
        )
        .with_columns(
            (
                pl.lit(anchor.to_pydatetime())
                + pl.duration(days=pl.col("day"))
                + pl.duration(hours=pl.col("order_hour_of_day"))
            )
            .dt.strftime(ISO_WITH_OFFSET)
            .alias("event_time")
        )
        .select("order_id", pl.col("user_id").alias("order_user"), "event_time", "day", known=True)
    )


def _unknown_order() -> pl.Expr:
    """An order line whose order is not in orders.csv."""
    return pl.col("order_id").is_not_null() & pl.col("known").is_null()


def _instacart_events(lines: pl.DataFrame, timed: pl.DataFrame) -> pl.DataFrame:
    """One purchase per order line at its order's time; lines of unknown orders rejected."""
    events = (
        lines.with_columns(pl.col("order_id").str.strip_chars())
        .join(timed, on="order_id", how="left")
        .sort("seq")
    )
    unknown = _unknown_order()
    return events.with_columns(
        _raw_ids(events),
        pl.col("order_user").alias("user_id"),
        pl.col("order_id").alias("session_id"),
        pl.col("product_id").str.strip_chars().alias("item_id"),
        pl.lit("purchase").alias("event_type"),
        pl.when(unknown).then(pl.lit(_reason("unknown_order"))).alias("source_reason"),
        pl.when(unknown)
        .then(pl.format("order {} is not in orders.csv", pl.col("order_id")))
        .alias("source_detail"),
    )


def _instacart_items(files: _InstacartFiles) -> pl.DataFrame:
    """products.csv as the catalog, with "department/aisle" categories."""
    category = pl.concat_str(
        [pl.col("department"), pl.col("aisle")], separator="/", ignore_nulls=True
    )
    return (
        files.products.join(
            files.aisles.filter(pl.col("parse_error").is_null()).select("aisle_id", "aisle"),
            on="aisle_id",
            how="left",
        )
        .join(
            files.departments.filter(pl.col("parse_error").is_null()).select(
                "department_id", "department"
            ),
            on="department_id",
            how="left",
        )
        .sort("source_line")
        .with_columns(
            pl.col("product_id").str.strip_chars().alias("item_id"),
            pl.col("product_name").str.strip_chars().alias("title"),
            pl.when(category != "").then(category).alias("category"),
        )
    )


def _instacart_findings(
    files: _InstacartFiles,
    good_orders: pl.DataFrame,
    events: pl.DataFrame,
    items: pl.DataFrame,
    days: pl.Series,
) -> dict[str, int]:
    parsed_lines = events.filter(pl.col("parse_error").is_null())
    return {
        "order_lines": parsed_lines.height,
        "order_lines_with_missing_order": parsed_lines.filter(_unknown_order()).height,
        "orders": good_orders["order_id"].n_unique(),
        "orders_without_lines": good_orders.join(
            parsed_lines.select("order_id"), on="order_id", how="anti"
        ).height,
        "users": good_orders["user_id"].n_unique(),
        "products": files.products.filter(pl.col("parse_error").is_null()).height,
        "products_without_aisle_or_department": items.filter(
            pl.col("parse_error").is_null()
            & (pl.col("aisle").is_null() | pl.col("department").is_null())
        ).height,
        "unparseable_order_rows": files.orders["parse_error"].is_not_null().sum(),
        "synthetic_days_span": int(days.max() or 0),
    }
