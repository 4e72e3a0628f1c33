"""Format adapters: map real e-commerce exports onto the canonical raw contract.

`read_export(folder, format, mapping)` reads one export folder in a known layout (Taobao
UserBehavior, UCI Online Retail, Instacart, RetailRocket) or in any CSV/Parquet layout
described by a column mapping (`generic`), and returns a `SourceExport`: the source's
declared time window, a raw behaviour frame, a raw catalog frame and measured source facts.

Raw frames hold text only and keep one row per input record: records that cannot be split
into the file's fields carry `parse_error`, source-specific rejections (cancellations, fees,
order lines of unknown orders) carry `source_reason`/`source_detail`; the cleaning step
quarantines both. Whole-file problems (missing file, missing column, unknown format) raise
`LandingFileError` naming the file and the problem. docs/format_adapters.md describes each
format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path

import pandas as pd
import polars as pl

from dagster_project.contracts import (
    EVENT_COLUMNS,
    ITEM_COLUMNS,
    QUARANTINE_REASONS,
    RAW_LINEAGE_COLUMNS,
)
from dagster_project.sources.landing import LandingFileError, read_delimited

ISO_WITH_OFFSET = "%Y-%m-%dT%H:%M:%S%.f%:z"  # fraction only where there is one
NULL_TOKENS = ("",)
# Columns of the raw record frames before they are mapped onto the contract.
_LINEAGE = ["source_file", "source_line", "raw", "parse_error"]

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
TAOBAO_COLUMNS = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
INSTACART_ANCHOR = "2017-01-01"
INSTACART_ORDER_COLUMNS = [
    "order_id",
    "user_id",
    "order_number",
    "order_hour_of_day",
    "days_since_prior_order",
]
RETAILROCKET_PRICE_PROPERTY = "790"


@dataclass
class SourceExport:
    """One export mapped onto the raw contract, with its declared window and measured facts."""

    source: str
    window_start: pd.Timestamp
    window_end: pd.Timestamp
    events: pl.DataFrame
    items: pl.DataFrame
    findings: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------- reading records


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise LandingFileError(f"{path}: no such file")


def read_records(
    folder: Path,
    name: str,
    columns: list[str] | None = None,
    *,
    header: bool = True,
    required: Iterable[str] = (),
    sep: str = ",",
    null_tokens: Iterable[str] = NULL_TOKENS,
) -> pl.DataFrame:
    """One delimited text file as records: lineage columns plus one text column per field.

    Every physical line becomes one row (`source_line` counts the header as line 1). A line
    that cannot be split into exactly the file's fields gets `parse_error` and null fields.
    Field values equal to a null token (after trimming spaces) become null.
    """
    path = folder / name
    _require_file(path)
    records = read_delimited(
        path, names=None if header else list(columns or []), sep=sep, required=tuple(required)
    )
    tokens = list(null_tokens)
    fields = [c for c in records.columns if c not in ("source_line", "raw", "parse_error")]
    return records.select(
        pl.lit(name).alias("source_file"),
        "source_line",
        "raw",
        "parse_error",
        *[
            pl.when(~pl.col(c).str.strip_chars().is_in(tokens)).then(pl.col(c)).alias(c)
            for c in fields
        ],
    )


def read_parquet_records(folder: Path, name: str, required: Iterable[str] = ()) -> pl.DataFrame:
    """A Parquet file as records: `source_line` is the 1-based row number, `raw` the row as JSON."""
    path = folder / name
    _require_file(path)
    try:
        table = pl.read_parquet(path)
    except Exception as exc:  # pyarrow/polars raise several kinds for a damaged file
        raise LandingFileError(f"{path}: not a readable Parquet file ({exc})") from exc
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise LandingFileError(
            f"{path}: column(s) {', '.join(missing)} missing; the file has {table.columns}"
        )
    return table.select(
        pl.lit(name).alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_line"),
        pl.struct(pl.all()).struct.json_encode().alias("raw"),
        pl.lit(None, pl.String).alias("parse_error"),
        *[_parquet_text(c, dtype) for c, dtype in table.schema.items()],
    )


def _parquet_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """A typed Parquet column as text; timestamps as ISO 8601 (with the offset if zoned)."""
    if isinstance(dtype, pl.Datetime):
        fmt = ISO_WITH_OFFSET if dtype.time_zone else "%Y-%m-%dT%H:%M:%S%.f"
        return pl.col(name).dt.strftime(fmt)
    return pl.col(name).cast(pl.String)


# ---------------------------------------------------------------- canonical values


def content_ids(keys: pl.Series) -> pl.Series:
    """Stable event ids from record content: equal content, equal id; null content, null id."""
    return pl.Series(
        "event_id",
        [
            None if key is None else "h" + blake2b(key.encode(), digest_size=8).hexdigest()
            for key in keys.to_list()
        ],
        dtype=pl.String,
    )


def _trimmed(col: str) -> pl.Expr:
    value = pl.col(col).str.strip_chars()
    return pl.when(value != "").then(value)


# Largest magnitude per unit that is still a calendar date (year 9999), so that absurd
# numbers are reported as bad timestamps instead of wrapping around.
_EPOCH_LIMIT = {"s": 253_402_300_799, "ms": 253_402_300_799_999, "us": 253_402_300_799_999_999}


def _epoch_text(col: str, unit: str, time_zone: str = "UTC") -> pl.Expr:
    """Unix time text -> ISO 8601 with the offset of `time_zone`; text that is no date stays."""
    number = pl.col(col).str.strip_chars().cast(pl.Int64, strict=False)
    if unit in _EPOCH_LIMIT:
        number = pl.when(number.abs() <= _EPOCH_LIMIT[unit]).then(number)
    iso = (
        pl.from_epoch(number, time_unit=unit)
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone(time_zone)
        .dt.strftime(ISO_WITH_OFFSET)
    )
    return pl.coalesce(iso, pl.col(col))


def _local_time_text(col: str, fmt: str, time_zone: str) -> pl.Expr:
    """Local wall-clock text in `fmt` -> ISO 8601 with the zone's offset at that time.

    Text that does not parse (or falls in a daylight-saving gap) stays as it was, so the
    cleaning reports it as `bad_timestamp` with the original value.
    """
    local = pl.col(col).str.strip_chars().str.to_datetime(fmt, strict=False)
    iso = local.dt.replace_time_zone(
        time_zone, ambiguous="earliest", non_existent="null"
    ).dt.strftime(ISO_WITH_OFFSET)
    return pl.coalesce(iso, pl.col(col))


def _best_format(values: pl.Series, formats: list[str]) -> str:
    """The format that parses most of `values` (the first on ties)."""
    text = values.drop_nulls().str.strip_chars()
    counts = [text.str.to_datetime(f, strict=False).is_not_null().sum() for f in formats]
    return formats[counts.index(max(counts))]


def _utc(value: str | pd.Timestamp, time_zone: str = "UTC") -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(time_zone)
    return stamp.tz_convert("UTC")


def _window(
    mapping: dict, default: tuple[pd.Timestamp, pd.Timestamp] | None, source: str
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The declared window: the mapping's `window` {start, end[, timezone]} or the default."""
    declared = mapping.get("window")
    if declared is None:
        if default is None:
            raise LandingFileError(f"{source}: no declared window and no events to derive one from")
        return default
    if "start" not in declared or "end" not in declared:
        raise LandingFileError(
            f"{source}: mapping window needs 'start' and 'end', got {sorted(declared)}"
        )
    zone = declared.get("timezone", "UTC")
    start, end = _utc(declared["start"], zone), _utc(declared["end"], zone)
    if end <= start:
        raise LandingFileError(f"{source}: mapping window end {end} is not after its start {start}")
    return start, end


def _day_window(iso_times: pl.Series) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """[first day 00:00 UTC, day after the last day) of the parseable times, or None."""
    text = iso_times.str.strip_chars()
    times = pl.select(
        pl.coalesce(
            text.str.to_datetime(fmt, time_zone="UTC", time_unit="us", strict=False)
            for fmt in ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%dT%H:%M:%S%.f")
        )
    ).to_series()
    times = times.drop_nulls()
    if times.is_empty():
        return None
    start = pd.Timestamp(times.min()).floor("D")
    return start, pd.Timestamp(times.max()).floor("D") + pd.Timedelta(days=1)


def _most_frequent(records: pl.DataFrame, key: str, value: str) -> pl.DataFrame:
    """Per key: the most frequent non-null value (ties: first seen) and how many distinct ones.

    `records` must be in reading order (its `seq` column).
    """
    counted = (
        records.filter(pl.col(key).is_not_null() & pl.col(value).is_not_null())
        .group_by(key, value)
        .agg(pl.len().alias("n"), pl.col("seq").min().alias("first"))
        .sort([key, "n", "first"], descending=[False, True, False])
    )
    return counted.group_by(key, maintain_order=True).agg(
        pl.col(value).first(), pl.col(value).n_unique().alias("distinct_values")
    )


def _first_seen(records: pl.DataFrame, key: str) -> pl.DataFrame:
    """Per key, the lineage of the record where it first appears."""
    return (
        records.filter(pl.col(key).is_not_null())
        .sort("seq")
        .group_by(key, maintain_order=True)
        .agg(pl.col("source_file", "source_line", "raw").first())
    )


def _contract(frame: pl.DataFrame, source: str, columns: list[str]) -> pl.DataFrame:
    """Lineage + contract columns in contract order and types; values of unparseable rows null."""
    parsed = pl.col("parse_error").is_null()
    out = []
    for col in RAW_LINEAGE_COLUMNS + columns:
        if col == "source":
            out.append(pl.lit(source, pl.String).alias(col))
        elif col == "source_line":
            out.append(pl.col(col).cast(pl.Int64))
        elif col not in frame.columns:
            out.append(pl.lit(None, pl.String).alias(col))
        elif col in ("source_file", "raw", "parse_error"):
            out.append(pl.col(col).cast(pl.String))
        else:
            out.append(pl.when(parsed).then(pl.col(col).cast(pl.String)).alias(col))
    return frame.select(out)


def _with_seq(records: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(records, how="diagonal").with_row_index("seq")


def _csv_files(folder: Path, mapping: dict, pattern: str = "*.csv") -> list[str]:
    if not folder.is_dir():
        raise LandingFileError(f"{folder}: no such export folder")
    names = mapping.get("files") or sorted(p.name for p in folder.glob(pattern) if p.is_file())
    if not names:
        raise LandingFileError(f"{folder}: no {pattern} file in the export folder")
    return list(names)


def _check_options(source: str, mapping: dict, allowed: set[str]) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise LandingFileError(
            f"{source}: unknown mapping key(s) {unknown}; this format accepts {sorted(allowed)}"
        )


def _reason(code: str) -> str:
    assert code in QUARANTINE_REASONS, code
    return code


# ---------------------------------------------------------------- Taobao


def read_taobao(folder: Path, mapping: dict) -> SourceExport:
    """Tianchi/Alibaba Taobao UserBehavior: header-less `user,item,category,behavior,unix s`."""
    _check_options("taobao", mapping, {"source", "files", "window"})
    source = mapping.get("source", "taobao_userbehavior")
    records = _with_seq(
        [read_records(folder, n, TAOBAO_COLUMNS, header=False) for n in _csv_files(folder, mapping)]
    )
    events = records.with_columns(
        content_ids(records["raw"].set(records["parse_error"].is_not_null(), None)),
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
    start, end = _window(mapping, declared, source)
    return SourceExport(
        source=source,
        window_start=start,
        window_end=end,
        events=_contract(events, source, EVENT_COLUMNS),
        items=_contract(items, source, ITEM_COLUMNS),
        findings=_taobao_findings(events, category),
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


# ---------------------------------------------------------------- Online Retail


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
    per_file = []
    for name in _csv_files(folder, mapping):
        rec = read_records(
            folder, name, required=ONLINE_RETAIL_COLUMNS, null_tokens=("", "NA", "NaN", "nan")
        )
        fmt = _best_format(rec["InvoiceDate"], ONLINE_RETAIL_DATE_FORMATS)
        per_file.append(
            rec.with_columns(_local_time_text("InvoiceDate", fmt, "Europe/London").alias("iso"))
        )
    records = _with_seq(per_file).with_columns(
        pl.col("InvoiceNo").str.strip_chars(),
        pl.col("StockCode").str.strip_chars(),
        _trimmed("Quantity").alias("quantity"),
        _trimmed("UnitPrice").alias("price"),
        _trimmed("CustomerID").str.replace(r"^(\d+)\.0+$", "${1}").alias("user_id"),
    )
    # The id hashes the record's own fields in canonical form, so the same invoice line has
    # the same id in either layout and exact repeats share one.
    key_fields = ["InvoiceNo", "StockCode", "Description", "quantity", "iso", "price", "user_id"]
    if "Country" in records.columns:
        key_fields.append("Country")
    key = pl.when(pl.col("parse_error").is_null()).then(
        pl.concat_str([pl.col(c).fill_null("") for c in key_fields], separator="\x1f")
    )
    events = records.with_columns(
        content_ids(records.select(key).to_series()),
        pl.col("InvoiceNo").alias("session_id"),
        pl.col("StockCode").alias("item_id"),
        pl.lit("purchase").alias("event_type"),
        pl.col("iso").alias("event_time"),
        *_online_retail_reason(pl.col("InvoiceNo"), pl.col("StockCode")),
    )
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
    start, end = _window(mapping, window, source)
    ok = records.filter(pl.col("parse_error").is_null())
    findings = {
        "invoice_lines": ok.height,
        "invoices": ok["InvoiceNo"].n_unique(),
        "customers": ok["user_id"].drop_nulls().n_unique(),
        "stock_codes": ok["StockCode"].drop_nulls().n_unique(),
        "rows_without_description": ok["Description"].null_count(),
        "stock_codes_with_several_descriptions": title.filter(pl.col("distinct_values") > 1).height,
        "stock_codes_without_description": ok["StockCode"].drop_nulls().n_unique() - title.height,
    }
    return SourceExport(
        source=source,
        window_start=start,
        window_end=end,
        events=_contract(events, source, EVENT_COLUMNS),
        items=_contract(items, source, ITEM_COLUMNS),
        findings=findings,
    )


# ---------------------------------------------------------------- Instacart


def read_instacart(folder: Path, mapping: dict) -> SourceExport:
    """Instacart Market Basket: order lines become purchases at synthetic times (see docs)."""
    _check_options("instacart", mapping, {"source", "window", "anchor"})
    source = mapping.get("source", "instacart")
    anchor = _utc(mapping.get("anchor", INSTACART_ANCHOR))
    if not folder.is_dir():
        raise LandingFileError(f"{folder}: no such export folder")
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

    good_orders = orders.filter(pl.col("parse_error").is_null()).with_columns(
        pl.col("order_id").str.strip_chars(),
        pl.col("order_number").cast(pl.Int64, strict=False),
        pl.col("days_since_prior_order").cast(pl.Float64, strict=False).fill_null(0.0),
        pl.col("order_hour_of_day").cast(pl.Int64, strict=False),
    )
    timed = (
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
    events = (
        lines.with_columns(pl.col("order_id").str.strip_chars())
        .join(timed, on="order_id", how="left")
        .sort("seq")
    )
    unknown = pl.col("order_id").is_not_null() & pl.col("known").is_null()
    events = events.with_columns(
        content_ids(events["raw"].set(events["parse_error"].is_not_null(), None)),
        pl.col("order_user").alias("user_id"),
        pl.col("order_id").alias("session_id"),
        pl.col("product_id").str.strip_chars().alias("item_id"),
        pl.lit("purchase").alias("event_type"),
        pl.when(unknown).then(pl.lit(_reason("unknown_order"))).alias("source_reason"),
        pl.when(unknown)
        .then(pl.format("order {} is not in orders.csv", pl.col("order_id")))
        .alias("source_detail"),
    )

    category = pl.concat_str(
        [pl.col("department"), pl.col("aisle")], separator="/", ignore_nulls=True
    )
    items = (
        products.join(
            aisles.filter(pl.col("parse_error").is_null()).select("aisle_id", "aisle"),
            on="aisle_id",
            how="left",
        )
        .join(
            departments.filter(pl.col("parse_error").is_null()).select(
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
    days = timed["day"].drop_nulls()
    derived = (anchor, anchor + pd.Timedelta(days=int(days.max() or 0) + 1))
    start, end = _window(mapping, derived, source)
    parsed_lines = events.filter(pl.col("parse_error").is_null())
    findings = {
        "order_lines": parsed_lines.height,
        "order_lines_with_missing_order": parsed_lines.filter(unknown).height,
        "orders": good_orders["order_id"].n_unique(),
        "orders_without_lines": good_orders.join(
            parsed_lines.select("order_id"), on="order_id", how="anti"
        ).height,
        "users": good_orders["user_id"].n_unique(),
        "products": products.filter(pl.col("parse_error").is_null()).height,
        "products_without_aisle_or_department": items.filter(
            pl.col("parse_error").is_null()
            & (pl.col("aisle").is_null() | pl.col("department").is_null())
        ).height,
        "unparseable_order_rows": orders["parse_error"].is_not_null().sum(),
        "synthetic_days_span": int(days.max() or 0),
    }
    return SourceExport(
        source=source,
        window_start=start,
        window_end=end,
        events=_contract(events, source, EVENT_COLUMNS),
        items=_contract(items, source, ITEM_COLUMNS),
        findings=findings,
    )


# ---------------------------------------------------------------- RetailRocket


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


def read_retailrocket(folder: Path, mapping: dict) -> SourceExport:
    """RetailRocket: events.csv (unix ms), item_properties_part*.csv snapshots, category_tree.csv."""
    _check_options("retailrocket", mapping, {"source", "window"})
    source = mapping.get("source", "retailrocket")
    if not folder.is_dir():
        raise LandingFileError(f"{folder}: no such export folder")
    events = read_records(
        folder, "events.csv", required=["timestamp", "visitorid", "event", "itemid"]
    )
    events = events.with_columns(
        content_ids(events["raw"].set(events["parse_error"].is_not_null(), None)),
        pl.col("visitorid").str.strip_chars().alias("user_id"),
        pl.col("itemid").str.strip_chars().alias("item_id"),
        pl.col("event").str.strip_chars().alias("event_type"),
        _epoch_text("timestamp", "ms").alias("event_time"),
    )
    property_files = sorted(p.name for p in folder.glob("item_properties*.csv"))
    if not property_files:
        raise LandingFileError(
            f"{folder / 'item_properties_part1.csv'}: no such file (no item properties)"
        )
    props = _with_seq(
        [
            read_records(folder, n, required=["timestamp", "itemid", "property", "value"])
            for n in property_files
        ]
    ).with_columns(
        pl.col("itemid").str.strip_chars().alias("item_id"),
        pl.col("property").str.strip_chars(),
        pl.col("timestamp").str.strip_chars().cast(pl.Int64, strict=False).alias("ts"),
    )
    tree = read_records(folder, "category_tree.csv", required=["categoryid", "parentid"])
    paths = _category_paths(tree)

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
    catalog = (
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
    torn = pl.concat(
        [
            props.filter(pl.col("parse_error").is_not_null()).select(_LINEAGE),
            tree.filter(pl.col("parse_error").is_not_null()).select(_LINEAGE),
        ]
    )
    items = pl.concat([catalog, torn], how="diagonal")
    start, end = _window(mapping, _day_window(events["event_time"]), source)
    ok = events.filter(pl.col("parse_error").is_null())
    findings = {
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
    return SourceExport(
        source=source,
        window_start=start,
        window_end=end,
        events=_contract(events, source, EVENT_COLUMNS),
        items=_contract(items, source, ITEM_COLUMNS),
        findings=findings,
    )


# ---------------------------------------------------------------- generic


def load_mapping(path: Path) -> dict:
    """A generic-format mapping from a JSON or YAML file."""
    if not path.is_file():
        raise LandingFileError(f"{path}: no such mapping file")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        loaded = yaml.safe_load(text)
    else:
        loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise LandingFileError(f"{path}: a mapping must be an object, got {type(loaded).__name__}")
    return loaded


def _generic_records(
    folder: Path, spec: dict, kind: str, allowed: list[str], required: list[str]
) -> tuple[pl.DataFrame, dict[str, str]]:
    """Read the file a mapping section names; resolve its column mapping against the file.

    A file column already named as a contract column is used when the mapping names none.
    """
    if "path" not in spec:
        raise LandingFileError(f"generic mapping: section {kind!r} needs a 'path'")
    mapped: dict[str, str] = dict(spec.get("columns", {}))
    unknown = sorted(set(mapped) - set(allowed))
    if unknown:
        raise LandingFileError(
            f"generic mapping: {kind}.columns maps unknown contract column(s) {unknown}; "
            f"expected some of {allowed}"
        )
    name = spec["path"]
    path = folder / name
    _require_file(path)
    if path.suffix == ".parquet":
        records = read_parquet_records(folder, name)
    else:
        records = read_records(folder, name, sep=spec.get("separator", ","))
    present = [c for c in records.columns if c not in _LINEAGE]
    missing = [f"{src!r} (for {dst})" for dst, src in mapped.items() if src not in present]
    if missing:
        raise LandingFileError(
            f"{path}: mapped column {', '.join(missing)} missing; the file has {present}"
        )
    columns = {c: c for c in allowed if c in present} | mapped
    unmapped = [c for c in required if c not in columns]
    if unmapped:
        raise LandingFileError(
            f"{path}: no column for {', '.join(unmapped)}; map one in {kind}.columns "
            f"(the file has {present})"
        )
    return records, columns


def _generic_time(col: str, spec: dict) -> pl.Expr:
    unit, fmt = spec.get("unit"), spec.get("format")
    zone = spec.get("timezone", "UTC")
    if unit is not None:
        if unit not in ("s", "ms", "us", "ns"):
            raise LandingFileError(
                f"generic mapping: timestamp unit {unit!r} is not one of s, ms, us, ns"
            )
        return _epoch_text(col, unit, zone)
    if fmt is not None:
        return _local_time_text(col, fmt, zone)
    return pl.col(col)


def read_generic(folder: Path, mapping: dict) -> SourceExport:
    """Any CSV/Parquet export whose columns a mapping names (see docs/format_adapters.md)."""
    _check_options("generic", mapping, {"source", "events", "items", "window"})
    if "events" not in mapping:
        raise LandingFileError("generic mapping: an 'events' section is required")
    source = mapping.get("source", folder.name)
    spec = mapping["events"]
    records, columns = _generic_records(
        folder,
        spec,
        "events",
        [*EVENT_COLUMNS, "category", "title"],
        ["user_id", "item_id", "event_type", "event_time"],
    )
    values = {dst: _trimmed(src) for dst, src in columns.items()}
    events = records.with_columns(**values)
    events = events.with_columns(
        _generic_time("event_time", spec.get("timestamp", {})),
        pl.col("event_type").replace(spec.get("event_types", {})),
    )
    if "event_id" not in columns:
        skip = set(spec.get("ignore_in_id", []))
        fields = [c for c in records.columns if c not in _LINEAGE and c not in skip]
        key = pl.when(pl.col("parse_error").is_null()).then(
            pl.concat_str([pl.col(c).fill_null("") for c in fields], separator="\x1f")
            if skip
            else pl.col("raw")
        )
        events = events.with_columns(content_ids(events.select(key).to_series()))

    if "items" in mapping:
        item_records, item_columns = _generic_records(
            folder, mapping["items"], "items", ITEM_COLUMNS, ["item_id"]
        )
        items = item_records.with_columns(
            **{dst: _trimmed(src) for dst, src in item_columns.items()}
        )
    else:  # the export implies its catalog: every item the events name
        seq = events.with_row_index("seq")
        items = _first_seen(seq, "item_id").with_columns(parse_error=pl.lit(None, pl.String))
        for attr in ("category", "title"):
            if attr in columns:
                items = items.join(_most_frequent(seq, "item_id", attr), on="item_id", how="left")

    start, end = _window(mapping, _day_window(events["event_time"]), source)
    ok = events.filter(pl.col("parse_error").is_null())
    findings = {
        "events": ok.height,
        "users": ok["user_id"].drop_nulls().n_unique(),
        "items": items.filter(pl.col("parse_error").is_null()).height,
    }
    return SourceExport(
        source=source,
        window_start=start,
        window_end=end,
        events=_contract(events, source, EVENT_COLUMNS),
        items=_contract(items, source, ITEM_COLUMNS),
        findings=findings,
    )


# ---------------------------------------------------------------- entry point

ADAPTERS: dict[str, Callable[[Path, dict], SourceExport]] = {
    "taobao": read_taobao,
    "online_retail": read_online_retail,
    "instacart": read_instacart,
    "retailrocket": read_retailrocket,
    "generic": read_generic,
}


def read_export(
    folder: Path, format: str, mapping: dict | str | Path | None = None
) -> SourceExport:
    """Read one export folder in a named format (a key of ADAPTERS).

    `mapping` holds the format's options (for `generic`, the column mapping); a string or path
    names a JSON/YAML file holding them, relative to `folder` unless absolute.
    """
    folder = Path(folder)
    if format not in ADAPTERS:
        raise LandingFileError(
            f"{folder}: unknown export format {format!r}; known formats: {sorted(ADAPTERS)}"
        )
    if isinstance(mapping, str | Path):
        mapping = load_mapping(folder / mapping)
    if format == "generic" and not mapping:
        raise LandingFileError(f"{folder}: the generic format needs a column mapping")
    return ADAPTERS[format](folder, dict(mapping or {}))
