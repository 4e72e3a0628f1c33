"""UCI Online Retail invoice lines (either published CSV layout): one purchase per line, with
cancellations and fee or adjustment lines rejected by name."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from dagster_project.sources.formats.common import (
    SourceExport,
    _best_format,
    _check_options,
    _csv_files,
    _first_seen,
    _local_time_text,
    _most_frequent,
    _reason,
    _trimmed,
    _utc,
    _with_seq,
    content_ids,
    export,
)
from dagster_project.sources.records import read_records

# Online Retail StockCodes that are fees, postage, discounts or manual adjustments.
ONLINE_RETAIL_NON_PRODUCT_CODES = {
    "POST": "postage",
    "DOT": "dotcom postage",
    "C2": "carriage",
    "M": "a manual adjustment",
    "m": "a manual adjustment",
    "AMAZONFEE": "an Amazon fee",
    "BANK CHARGES": "a bank charge",
    "D": "a discount",
    "S": "a samples adjustment",
    "CRUK": "a CRUK commission",
    "PADS": "a price-matching placeholder",
    "B": "a bad-debt adjustment",
}
ONLINE_RETAIL_GIFT_PREFIX = "gift_"
ONLINE_RETAIL_COLUMNS = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
]
# Seen in the published files: the UCI original, and an export with ISO dates.
ONLINE_RETAIL_DATE_FORMATS = [
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
]


def _non_product_kind(code: pl.Expr) -> pl.Expr:
    """What a non-product StockCode stands for (null for products)."""
    kind = code.replace_strict(
        ONLINE_RETAIL_NON_PRODUCT_CODES, default=None, return_dtype=pl.String
    )
    gift = code.str.starts_with(ONLINE_RETAIL_GIFT_PREFIX)
    return pl.when(gift).then(pl.lit("a gift voucher")).otherwise(kind)


def _online_retail_reason(invoice: pl.Expr | None, code: pl.Expr) -> list[pl.Expr]:
    """`source_reason`/`source_detail`: cancellations first, then fee and adjustment lines."""
    kind = _non_product_kind(code)
    cancelled = invoice.str.starts_with("C") if invoice is not None else pl.lit(False)
    reason = (
        pl.when(cancelled)
        .then(pl.lit(_reason("cancelled_order")))
        .when(kind.is_not_null())
        .then(pl.lit(_reason("non_product_line")))
    )
    detail = (
        pl.when(cancelled)
        .then(pl.format("invoice {} is a cancellation", invoice))
        .when(kind.is_not_null())
        .then(pl.format("stock code {} is {}, not a product", code, kind))
    )
    return [reason.alias("source_reason"), detail.alias("source_detail")]


def read_online_retail(folder: Path, mapping: dict) -> SourceExport:
    """UCI Online Retail invoice lines (either published CSV layout): one purchase per line."""
    _check_options("online_retail", mapping, {"source", "files", "window"})
    source = mapping.get("source", "online_retail")
    records = _online_retail_records(folder, mapping)
    title = _most_frequent(records, "StockCode", "Description")
    items = (
        _first_seen(records, "StockCode")
        .join(title, on="StockCode", how="left")
        .with_columns(
            pl.col("StockCode").alias("item_id"),
            pl.col("Description").str.strip_chars().alias("title"),
            *_online_retail_reason(None, pl.col("StockCode")),
            parse_error=pl.lit(None, pl.String),
        )
    )
    window = (_utc("2010-12-01", "Europe/London"), _utc("2011-12-10", "Europe/London"))
    return export(
        source,
        mapping,
        events=_online_retail_events(records),
        items=items,
        findings=_online_retail_findings(records, title),
        default_window=window,
    )


def _online_retail_records(folder: Path, mapping: dict) -> pl.DataFrame:
    """Every invoice line of the export's files in reading order (`seq`), its date read in the
    format that fits its file best (`iso`) and its values trimmed."""
    per_file = []
    for name in _csv_files(folder, mapping):
        rec = read_records(
            folder, name, required=ONLINE_RETAIL_COLUMNS, null_tokens=("", "NA", "NaN", "nan")
        )
        fmt = _best_format(rec["InvoiceDate"], ONLINE_RETAIL_DATE_FORMATS)
        per_file.append(
            rec.with_columns(_local_time_text("InvoiceDate", fmt, "Europe/London").alias("iso"))
        )
    return _with_seq(per_file).with_columns(
        pl.col("InvoiceNo").str.strip_chars(),
        pl.col("StockCode").str.strip_chars(),
        _trimmed("Quantity").alias("quantity"),
        _trimmed("UnitPrice").alias("price"),
        _trimmed("CustomerID").str.replace(r"^(\d+)\.0+$", "${1}").alias("user_id"),
    )


def _online_retail_events(records: pl.DataFrame) -> pl.DataFrame:
    """One purchase per invoice line, cancellations and non-product lines rejected."""
    # The id hashes the record's own fields in canonical form, so the same invoice line has
    # the same id in either layout and exact repeats share one.
    key_fields = ["InvoiceNo", "StockCode", "Description", "quantity", "iso", "price", "user_id"]
    if "Country" in records.columns:
        key_fields.append("Country")
    key = pl.when(pl.col("parse_error").is_null()).then(
        pl.concat_str([pl.col(c).fill_null("") for c in key_fields], separator="\x1f")
    )
    return records.with_columns(
        content_ids(records.select(key).to_series()),
        pl.col("InvoiceNo").alias("session_id"),
        pl.col("StockCode").alias("item_id"),
        pl.lit("purchase").alias("event_type"),
        pl.col("iso").alias("event_time"),
        *_online_retail_reason(pl.col("InvoiceNo"), pl.col("StockCode")),
    )


def _online_retail_findings(records: pl.DataFrame, title: pl.DataFrame) -> dict[str, int]:
    ok = records.filter(pl.col("parse_error").is_null())
    return {
        "invoice_lines": ok.height,
        "invoices": ok["InvoiceNo"].n_unique(),
        "customers": ok["user_id"].drop_nulls().n_unique(),
        "stock_codes": ok["StockCode"].drop_nulls().n_unique(),
        "rows_without_description": ok["Description"].null_count(),
        "stock_codes_with_several_descriptions": title.filter(pl.col("distinct_values") > 1).height,
        "stock_codes_without_description": ok["StockCode"].drop_nulls().n_unique() - title.height,
    }
