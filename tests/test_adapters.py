"""Format adapters on small fixtures (tests/fixtures), the real samples (../shared/data, where
present) and generic exports.

Each export's known problems (../shared/data/README.md, tests/fixtures/README.md) are measured
here a second time with the plain csv module and compared with what the adapter and the
cleaning report. Every test checks that no record is lost: raw rows per file = physical data
lines in that file, and, end to end, raw rows = clean + quarantined per file.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from dagster_project.contracts import (
    EVENT_COLUMNS,
    EVENT_TYPE_ALIASES,
    ITEM_COLUMNS,
    NEAR_DUPLICATE_WINDOW,
    QUARANTINE_REASONS,
    RAW_LINEAGE_COLUMNS,
)
from dagster_project.quality.cleaning import clean_events, clean_items
from dagster_project.sources.adapters import ADAPTERS, read_export
from dagster_project.sources.formats.common import SourceExport
from dagster_project.sources.formats.online_retail import ONLINE_RETAIL_NON_PRODUCT_CODES
from dagster_project.sources.raw_table import raw_rows
from dagster_project.sources.records import LandingFileError as ExportError

PROJECT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RECSYS_SHARED_DATA", PROJECT.parent / "shared" / "data"))
FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
BEIJING = timezone(timedelta(hours=8))


def sample(folder: str) -> Path:
    path = SHARED / folder
    if not path.is_dir():
        pytest.skip(f"sample {folder!r} not found at {path} (set RECSYS_SHARED_DATA)")
    return path


def csv_rows(path: Path, header: bool = True) -> list[list[str]]:
    """Data records of a CSV file with the csv module (header dropped)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    return rows[1:] if header else rows


def data_lines(path: Path, header: bool = True) -> int:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return len(lines) - (1 if header else 0)


def check_contract(export: SourceExport) -> None:
    """Column order and types of both raw frames, and tz-aware UTC windows."""
    for frame, columns in ((export.events, EVENT_COLUMNS), (export.items, ITEM_COLUMNS)):
        assert frame.columns == RAW_LINEAGE_COLUMNS + columns
        for name, dtype in frame.schema.items():
            assert dtype == (pl.Int64 if name == "source_line" else pl.String), name
        reasons = set(frame["source_reason"].drop_nulls().unique())
        assert reasons <= set(QUARANTINE_REASONS)
        # missing values are null, never empty text
        for col in columns:
            assert (frame[col] == "").sum() == 0, col
    assert export.window_start.tzname() == "UTC" and export.window_end > export.window_start
    assert all(isinstance(v, int) for v in export.findings.values())


def rows_per_file(frame: pl.DataFrame) -> dict[str, int]:
    return dict(frame.group_by("source_file").len().iter_rows())


def run_cleaning(export: SourceExport):
    """Adapter -> clean_items -> clean_events, with the row invariant checked per file."""
    items = clean_items(export.items, "test", NOW)
    window = (export.window_start.to_pydatetime(), export.window_end.to_pydatetime())
    events = clean_events(export.events, items.clean["item_id"], window, "test", NOW)
    for raw, cleaned in ((export.items, items), (export.events, events)):
        kept, dropped = rows_per_file(cleaned.clean), rows_per_file(cleaned.quarantine)
        for name, n in rows_per_file(raw).items():
            assert kept.get(name, 0) + dropped.get(name, 0) == n, name
    return items, events


def reasons(cleaned) -> Counter:
    return Counter(cleaned.quarantine["reason"].to_list())


# ---------------------------------------------------------------- fixtures and samples

# Taobao, Online Retail and Instacart run on a small fixture in tests/fixtures/<format> (cut
# from the shared sample, plus hand-made lines for what the sample lacks; see the README
# there), and on the whole shared sample where it is present. The facts each test expects are
# measured again here with the csv module and pinned per fixture and sample.
SAMPLE_FOLDERS = {
    "taobao": "taobao_userbehavior",
    "online_retail": "online_retail",
    "instacart": "instacart",
}
WHERE = ["fixture", "sample"]


class Read(NamedTuple):
    """One export read by its adapter: where from ("fixture" or "sample") and its folder."""

    where: str
    folder: Path
    export: SourceExport


def export_folder(where: str, fmt: str) -> Path:
    """The format's fixture folder, or its shared sample's (the test skips when absent)."""
    return FIXTURES / fmt if where == "fixture" else sample(SAMPLE_FOLDERS[fmt])


def near_duplicates(events: list[tuple[tuple, float]]) -> int:
    """(key, unix seconds) events within NEAR_DUPLICATE_WINDOW after the last kept one of
    their key: the cleaning's near-duplicate rule."""
    window = NEAR_DUPLICATE_WINDOW.total_seconds()
    kept: dict[tuple, float] = {}
    near = 0
    for key, t in sorted(events):
        if key in kept and t - kept[key] <= window:
            near += 1
        else:
            kept[key] = t
    return near


# ---------------------------------------------------------------- Taobao

TAOBAO_FILE = "UserBehavior_head84k.csv"
TAOBAO_WINDOW = (datetime(2017, 11, 25, tzinfo=BEIJING), datetime(2017, 12, 4, tzinfo=BEIJING))
TAOBAO_FACTS = {
    "fixture": {
        "lines": 147,
        "torn": 1,
        "users": 12,
        "items": 116,
        "purchases": 9,
        "purchases_without_view": 4,
        "purchases_without_earlier_view": 7,
        "events_repeating_user_item_type": 20,
        "events_per_user_min": 2,
        "events_per_user_max": 80,
        "items_with_several_categories": 1,
        "outside_window": 4,
        "near_duplicates": 1,
    },
    "sample": {  # ../shared/data/README.md
        "lines": 84_476,
        "torn": 1,
        "users": 815,
        "items": 55_368,
        "purchases": 1_750,
        "purchases_without_view": 541,
        "purchases_without_earlier_view": 829,
        "events_repeating_user_item_type": 16_203,  # the README's 16,204 counts the torn line
        "events_per_user_min": 4,
        "events_per_user_max": 539,
        "items_with_several_categories": 1,
        "outside_window": 35,
        "near_duplicates": 7,
    },
}
TAOBAO_FINDINGS = [
    "users",
    "items",
    "purchases",
    "purchases_without_view",
    "purchases_without_earlier_view",
    "events_repeating_user_item_type",
    "events_per_user_min",
    "events_per_user_max",
    "items_with_several_categories",
]


def taobao_inside(rows: list[list[str]]) -> list[list[str]]:
    """The whole lines whose time is inside the declared window (Beijing days, end excluded)."""
    start, end = (d.timestamp() for d in TAOBAO_WINDOW)
    return [r for r in rows if len(r) == 5 and start <= int(r[4]) < end]


def taobao_facts(rows: list[list[str]]) -> dict[str, int]:
    """The README's Taobao facts, measured on the csv module's rows of a header-less file."""
    whole = [r for r in rows if len(r) == 5]
    per_user = Counter(r[0] for r in whole)
    categories: dict[str, set[str]] = {}
    views: dict[tuple[str, str], list[int]] = {}
    for user, item, category, kind, ts in whole:
        categories.setdefault(item, set()).add(category)
        if kind == "pv":
            views.setdefault((user, item), []).append(int(ts))
    buys = [r for r in whole if r[3] == "buy"]
    inside = taobao_inside(rows)
    return {
        "lines": len(rows),
        "torn": len(rows) - len(whole),
        "users": len(per_user),
        "items": len(categories),
        "purchases": len(buys),
        "purchases_without_view": sum((r[0], r[1]) not in views for r in buys),
        "purchases_without_earlier_view": sum(
            all(t >= int(r[4]) for t in views.get((r[0], r[1]), [])) for r in buys
        ),
        "events_repeating_user_item_type": len(whole) - len({(r[0], r[1], r[3]) for r in whole}),
        "events_per_user_min": min(per_user.values()),
        "events_per_user_max": max(per_user.values()),
        "items_with_several_categories": sum(len(c) > 1 for c in categories.values()),
        "outside_window": len(whole) - len(inside),
        "near_duplicates": near_duplicates([((r[0], r[1], r[3]), int(r[4])) for r in inside]),
    }


@pytest.fixture(scope="module", params=WHERE)
def taobao(request: pytest.FixtureRequest) -> Read:
    folder = export_folder(request.param, "taobao")
    return Read(request.param, folder, read_export(folder, "taobao"))


def test_taobao_adapter(taobao: Read) -> None:
    path = taobao.folder / TAOBAO_FILE
    rows = csv_rows(path, header=False)
    facts = taobao_facts(rows)
    assert facts == TAOBAO_FACTS[taobao.where]
    export = taobao.export
    check_contract(export)
    assert export.events.height == facts["lines"] == data_lines(path, header=False)
    assert export.events["source_line"].to_list()[:2] == [1, 2]  # no header: line 1 is data
    torn = export.events.filter(pl.col("parse_error").is_not_null())
    assert torn.height == facts["torn"] == 1
    assert torn["source_line"].item() == facts["lines"] and torn["event_id"].item() is None
    assert torn["raw"].item() == ",".join(rows[-1])

    first = export.events.row(0, named=True)
    assert first["event_time"] == datetime.fromtimestamp(int(rows[0][4]), BEIJING).isoformat()
    assert first["event_type"] == rows[0][3] and first["session_id"] is None
    assert first["event_type"] in EVENT_TYPE_ALIASES
    assert (export.window_start, export.window_end) == TAOBAO_WINDOW
    if taobao.where == "sample":
        assert first["event_time"] == "2017-11-25T01:21:10+08:00"  # 1511544070 in Beijing time

    # the catalog is implied by the events: one row per item, with its most frequent category
    # (ties: the first seen)
    whole = [r for r in rows if len(r) == 5]
    categories: dict[str, Counter] = {}
    for r in whole:
        categories.setdefault(r[1], Counter())[r[2]] += 1
    assert export.items.height == export.items["item_id"].n_unique() == facts["items"]
    assert set(export.items["item_id"]) == set(export.events["item_id"].drop_nulls())
    expected = {item: c.most_common(1)[0][0] for item, c in categories.items()}
    assert dict(export.items.select("item_id", "category").iter_rows()) == expected
    assert {k: export.findings[k] for k in TAOBAO_FINDINGS} == {
        k: facts[k] for k in TAOBAO_FINDINGS
    }
    assert export.findings["events"] == facts["lines"] - facts["torn"]


def test_taobao_end_to_end(taobao: Read) -> None:
    rows = csv_rows(taobao.folder / TAOBAO_FILE, header=False)
    facts = TAOBAO_FACTS[taobao.where]
    start, end = (d.timestamp() for d in TAOBAO_WINDOW)
    outside = [int(r[4]) for r in rows if len(r) == 5 and not start <= int(r[4]) < end]
    days = {datetime.fromtimestamp(t, BEIJING).date().isoformat() for t in outside}
    assert len(outside) == facts["outside_window"] and "2017-09-11" in days

    items, events = run_cleaning(taobao.export)
    assert items.quarantine.height == 0
    assert events.rule_hits["outside_source_window"] == len(outside)
    assert events.rule_hits.get("unknown_item", 0) == 0
    assert events.rule_hits.get("duplicate_event", 0) == 0  # no exact duplicate rows
    assert reasons(events) == {
        "outside_source_window": len(outside),
        "unparseable_row": facts["torn"],
        "near_duplicate_event": facts["near_duplicates"],
    }
    inside = taobao_inside(rows)
    assert events.clean.height == len(inside) - facts["near_duplicates"]
    # pv, cart, fav and buy are view, add_to_cart, favorite and purchase
    kinds = {EVENT_TYPE_ALIASES[k] for k in ("pv", "cart", "fav", "buy")}
    assert set(events.clean["event_type"]) == kinds == {EVENT_TYPE_ALIASES[r[3]] for r in inside}


def test_taobao_fixture_window_edges() -> None:
    """The hand-made lines: the window's first and last second are in, its end is out."""
    _, events = run_cleaning(read_export(FIXTURES / "taobao", "taobao"))
    path = FIXTURES / "taobao" / TAOBAO_FILE
    lines = {n: r for n, r in enumerate(csv_rows(path, header=False), 1) if r[0] == "1004000"}
    assert [r[4] for r in lines.values()] == ["1511539200", "1512316799", "1512316800"]
    kept = events.clean.filter(pl.col("source_line").is_in(list(lines)))
    assert kept["event_time"].to_list() == [
        datetime(2017, 11, 25, tzinfo=BEIJING),  # 00:00:00
        datetime(2017, 12, 3, 23, 59, 59, tzinfo=BEIJING),
    ]
    held = events.quarantine.filter(pl.col("source_line").is_in(list(lines)))
    assert held.select("source_line", "reason").rows() == [(143, "outside_source_window")]


# ---------------------------------------------------------------- Online Retail

LONDON = ZoneInfo("Europe/London")
MISSING = {"", "NA"}  # how the two layouts write a missing value
# the fixture's random-layout file holds every non-product kind the adapter knows
ALL_NON_PRODUCT_CODES = {*ONLINE_RETAIL_NON_PRODUCT_CODES, "gift_0001_20"}
RANDOM_FACTS = {
    "fixture": {
        "rows": 73,
        "no_customer": 28,
        "no_description": 4,
        "cancelled": 11,
        "non_product": 9,
        "quantity_not_positive": 14,
        "price_not_positive": 7,
        "several_descriptions": 6,
        "stock_codes": 62,
        "repeats": 0,
        "not_a_london_time": 1,
    },
    "sample": {
        "rows": 2_709,
        "no_customer": 668,
        "no_description": 8,
        "cancelled": 50,
        "non_product": 14,
        "quantity_not_positive": 57,
        "price_not_positive": 11,
        "several_descriptions": 18,
        "stock_codes": 1_395,
        "repeats": 0,
        "not_a_london_time": 0,
    },
}
RANDOM_FEES = {
    "fixture": ALL_NON_PRODUCT_CODES,
    "sample": {"POST", "DOT", "M", "C2", "AMAZONFEE"},
}
HEAD_FACTS = {
    "fixture": {
        "rows": 83,
        "no_customer": 0,
        "no_description": 0,
        "cancelled": 0,
        "non_product": 4,
        "quantity_not_positive": 0,
        "price_not_positive": 1,
        "several_descriptions": 3,
        "stock_codes": 70,
        "repeats": 3,
        "not_a_london_time": 0,
    },
    "sample": {
        "rows": 10_000,
        "no_customer": 0,
        "no_description": 0,
        "cancelled": 0,
        "non_product": 40,
        "quantity_not_positive": 0,
        "price_not_positive": 1,
        "several_descriptions": 9,
        "stock_codes": 1_822,
        "repeats": 255,
        "not_a_london_time": 0,
    },
}
LINES_IN_BOTH_LAYOUTS = {"fixture": 4, "sample": 48}
# a product on a second line of the same invoice (another quantity) is a near duplicate
NEAR_DUPLICATES_IN_HEAD = {"fixture": 1, "sample": 192}


def online_retail(folder: Path, name: str) -> SourceExport:
    return read_export(folder, "online_retail", {"files": [name]})


def invoice_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def london_time(text: str) -> datetime | None:
    """An InvoiceDate of either layout as London time; None where the clocks skip it."""
    fmt = "%m/%d/%Y %H:%M" if "/" in text else "%Y-%m-%d %H:%M:%S"
    naive = datetime.strptime(text, fmt)
    local = naive.replace(tzinfo=LONDON)
    return local if local.astimezone(UTC).astimezone(LONDON).replace(tzinfo=None) == naive else None


def non_product(code: str) -> bool:
    return code in ONLINE_RETAIL_NON_PRODUCT_CODES or code.startswith("gift_")


def measured_online_retail(path: Path) -> dict[str, int]:
    """The README's Online Retail facts, measured with csv.DictReader."""
    rows = invoice_rows(path)
    descriptions: dict[str, set[str]] = {}
    for r in rows:
        if r["Description"] not in MISSING:
            descriptions.setdefault(r["StockCode"], set()).add(r["Description"])
    cancelled = [r["InvoiceNo"].startswith("C") for r in rows]
    fee = [non_product(r["StockCode"]) for r in rows]
    drop_index = [k for k in rows[0] if k != ""]
    return {
        "rows": len(rows),
        "no_customer": sum(r["CustomerID"] in MISSING for r in rows),
        "no_description": sum(r["Description"] in MISSING for r in rows),
        "cancelled": sum(cancelled),
        "non_product": sum(f and not c for f, c in zip(fee, cancelled, strict=True)),
        "quantity_not_positive": sum(float(r["Quantity"]) <= 0 for r in rows),
        "price_not_positive": sum(float(r["UnitPrice"]) <= 0 for r in rows),
        "several_descriptions": sum(len(d) > 1 for d in descriptions.values()),
        "stock_codes": len({r["StockCode"] for r in rows}),
        "repeats": len(rows) - len({tuple(r[k] for k in drop_index) for r in rows}),
        "not_a_london_time": sum(london_time(r["InvoiceDate"]) is None for r in rows),
    }


def expected_titles(rows: list[dict[str, str]]) -> dict[str, str | None]:
    """Per StockCode its most frequent Description (ties: the first seen), trimmed."""
    descriptions: dict[str, Counter] = {r["StockCode"]: Counter() for r in rows}
    for r in rows:
        if r["Description"] not in MISSING:
            descriptions[r["StockCode"]][r["Description"]] += 1
    return {code: c.most_common(1)[0][0].strip() if c else None for code, c in descriptions.items()}


def line_key(r: dict[str, str]) -> tuple:
    """An invoice line's content in either layout (dates parsed, "17850.0" is 17850)."""
    description = "" if r["Description"] in MISSING else r["Description"]
    customer = "" if r["CustomerID"] in MISSING else r["CustomerID"].removesuffix(".0")
    when = london_time(r["InvoiceDate"]) or r["InvoiceDate"]
    return (
        r["InvoiceNo"],
        r["StockCode"],
        description,
        r["Quantity"],
        when,
        r["UnitPrice"],
        customer,
        r["Country"],
    )


def expected_reasons(rows: list[dict[str, str]]) -> Counter:
    """Each invoice line's first broken rule in the cleaning's order, in plain Python: the
    adapter's rejections, the row rules, exact repeats of a kept line, then near duplicates
    (the same product again in one invoice at the same minute, see docs/format_adapters.md)."""
    out: Counter = Counter()
    kept: set[tuple] = set()
    for r in rows:
        if r["InvoiceNo"].startswith("C"):
            out["cancelled_order"] += 1
        elif non_product(r["StockCode"]):
            out["non_product_line"] += 1
        elif r["CustomerID"] in MISSING:
            out["null_user_id"] += 1
        elif london_time(r["InvoiceDate"]) is None:
            out["bad_timestamp"] += 1
        elif float(r["UnitPrice"]) <= 0:
            out["non_positive_price"] += 1
        elif float(r["Quantity"]) <= 0:
            out["bad_quantity"] += 1
        elif line_key(r) in kept:
            out["duplicate_event"] += 1
        else:
            kept.add(line_key(r))
    # line_key: invoice, code, description, quantity, time, price, customer, country
    near = near_duplicates([((k[6], k[1], k[0]), k[4].timestamp()) for k in kept])
    return out + Counter(near_duplicate_event=near)


@pytest.mark.parametrize("where", WHERE)
def test_online_retail_random_rows(where: str) -> None:
    path = export_folder(where, "online_retail") / "online_retail_random2709.csv"
    facts = measured_online_retail(path)
    assert facts == RANDOM_FACTS[where]
    export = online_retail(path.parent, path.name)
    check_contract(export)
    assert export.events.height == facts["rows"] == data_lines(path)
    assert export.events["source_line"].min() == 2
    assert export.events["parse_error"].null_count() == export.events.height
    assert export.findings["rows_without_description"] == facts["no_description"]
    assert export.findings["stock_codes_with_several_descriptions"] == facts["several_descriptions"]
    source = Counter(export.events["source_reason"].drop_nulls().to_list())
    assert source == {
        "cancelled_order": facts["cancelled"],
        "non_product_line": facts["non_product"],
    }
    cancelled = export.events.filter(pl.col("source_reason") == "cancelled_order").row(
        0, named=True
    )
    assert cancelled["source_detail"] == f"invoice {cancelled['session_id']} is a cancellation"
    # one catalog row per StockCode; fees and postage are flagged there too
    assert export.items.height == export.items["item_id"].n_unique() == facts["stock_codes"]
    fees = export.items.filter(pl.col("source_reason") == "non_product_line")
    assert set(fees["item_id"]) == RANDOM_FEES[where]
    titles = dict(export.items.select("item_id", "title").iter_rows())
    assert titles == expected_titles(invoice_rows(path))
    # local UK time with its offset: BST in summer, GMT in winter (both files start alike)
    times = dict(export.events.select("source_line", "event_time").iter_rows())
    assert times[3] == "2011-06-12T12:34:00+01:00"  # "6/12/2011 12:34"
    assert times[4] == "2011-01-09T11:27:00+00:00"  # "1/9/2011 11:27"

    _, events = run_cleaning(export)
    hits = events.rule_hits
    assert hits["null_user_id"] == facts["no_customer"]
    assert hits["cancelled_order"] == reasons(events)["cancelled_order"] == facts["cancelled"]
    assert reasons(events)["non_product_line"] == facts["non_product"]
    assert hits["bad_quantity"] == facts["quantity_not_positive"]
    assert hits["non_positive_price"] == facts["price_not_positive"]
    assert hits.get("bad_timestamp", 0) == facts["not_a_london_time"]
    assert reasons(events) == expected_reasons(invoice_rows(path))
    assert events.clean.height == facts["rows"] - sum(reasons(events).values())


def test_online_retail_fixture_known_problems() -> None:
    """The hand-made lines of the fixture: every non-product kind, an invoice starting with
    "A", and a time the clocks skip (BST starts at 01:00 on 2011-03-27)."""
    export = online_retail(FIXTURES / "online_retail", "online_retail_random2709.csv")
    rows = export.events.filter(pl.col("raw").str.starts_with('"",'))
    assert rows.height == 9
    detail = dict(rows.select("item_id", "source_detail").iter_rows())
    assert detail["B"] == "stock code B is a bad-debt adjustment, not a product"  # invoice A563185
    assert detail["gift_0001_20"] == "stock code gift_0001_20 is a gift voucher, not a product"
    assert detail["m"] == "stock code m is a manual adjustment, not a product"
    assert detail["D"] == "invoice C536379 is a cancellation"  # cancellation before fee
    assert detail["22423"] is None
    skipped = rows.filter(pl.col("item_id") == "22423")["event_time"].item()
    assert skipped == "3/27/2011 1:30"  # kept as written, so the cleaning reports it
    _, events = run_cleaning(export)
    [held] = events.quarantine.filter(pl.col("reason") == "bad_timestamp").to_dicts()
    assert held["source_line"] == 74 and "3/27/2011 1:30" in held["detail"]


@pytest.mark.parametrize("where", WHERE)
def test_online_retail_head_rows(where: str) -> None:
    path = export_folder(where, "online_retail") / "online_retail_head10k.csv"
    facts = measured_online_retail(path)
    assert facts == HEAD_FACTS[where]
    export = online_retail(path.parent, path.name)
    check_contract(export)
    assert export.events.height == facts["rows"] == data_lines(path)
    assert export.findings["stock_codes_with_several_descriptions"] == facts["several_descriptions"]
    assert export.findings["rows_without_description"] == 0
    assert export.findings["stock_codes"] == export.items.height == facts["stock_codes"]
    # "17850.0" in this layout is customer 17850, as in the other layout
    assert export.events["user_id"].str.ends_with(".0").sum() == 0
    assert export.events["user_id"].null_count() == 0
    # exact repeats share one event id
    ids = export.events["event_id"]
    assert ids.null_count() == 0 and ids.len() - ids.n_unique() == facts["repeats"]
    # a description with a comma inside quotes is one field
    titles = dict(export.items.select("item_id", "title").iter_rows())
    assert titles == expected_titles(invoice_rows(path))
    assert titles["82567"] == "AIRLINE LOUNGE,METAL SIGN"

    _, events = run_cleaning(export)
    assert events.rule_hits["duplicate_event"] == reasons(events)["duplicate_event"]
    assert reasons(events)["duplicate_event"] == facts["repeats"]
    assert events.rule_hits["non_positive_price"] == facts["price_not_positive"]
    assert reasons(events)["non_product_line"] == facts["non_product"]
    assert reasons(events)["near_duplicate_event"] == NEAR_DUPLICATES_IN_HEAD[where]
    assert events.rule_hits.get("null_user_id", 0) == 0
    assert reasons(events) == expected_reasons(invoice_rows(path))


@pytest.mark.parametrize("where", WHERE)
def test_online_retail_both_layouts_share_event_ids(where: str) -> None:
    """The folder read whole: a line present in both files is one event, the repeat a duplicate."""
    folder = export_folder(where, "online_retail")
    head = invoice_rows(folder / "online_retail_head10k.csv")
    random = invoice_rows(folder / "online_retail_random2709.csv")
    in_head = {line_key(r) for r in head}
    overlap = sum(line_key(r) in in_head for r in random)
    assert overlap == LINES_IN_BOTH_LAYOUTS[where]

    export = read_export(folder, "online_retail")
    check_contract(export)
    assert rows_per_file(export.events) == {
        "online_retail_head10k.csv": len(head),
        "online_retail_random2709.csv": len(random),
    }
    _, events = run_cleaning(export)
    repeats = HEAD_FACTS[where]["repeats"]
    assert events.rule_hits["duplicate_event"] == repeats + overlap
    assert reasons(events) == expected_reasons(head + random)  # files are read by name


# ---------------------------------------------------------------- Instacart

INSTACART_FACTS = {
    # cut: users 105152 and 32099 (orders listed out of order), train and test orders, lines
    # of orders missing from orders.csv, products with commas and broken quoting in their
    # names; hand-made: a user whose first order has no days_since_prior_order, an exact
    # repeat of an order row, a torn order row and a torn line, a line of an unknown product,
    # order_products__train.csv and a product whose aisle is not in aisles.csv
    "fixture": {
        "order_lines": 112,
        "order_lines_with_missing_order": 7,
        "orders": 20,
        "orders_without_lines": 3,
        "users": 16,
        "products": 103,
        "products_without_aisle_or_department": 1,
        "unparseable_order_rows": 1,
        "synthetic_days_span": 30,
        "torn_lines": 1,
        "lines_with_unknown_product": 1,
    },
    "sample": {
        "order_lines": 32_290,
        "order_lines_with_missing_order": 2_169,  # 6.7%
        "orders": 3_220,
        "orders_without_lines": 207,
        "users": 3_159,
        "products": 9_288,
        "products_without_aisle_or_department": 0,
        "unparseable_order_rows": 0,
        "synthetic_days_span": 60,
        "torn_lines": 0,
        "lines_with_unknown_product": 0,
    },
}
ORDER_COLUMNS = 7  # order_id, user_id, eval_set, order_number, order_dow, hour, days


INSTACART_FINDINGS = {
    "order_lines",
    "order_lines_with_missing_order",
    "orders",
    "orders_without_lines",
    "users",
    "products",
    "products_without_aisle_or_department",
    "unparseable_order_rows",
    "synthetic_days_span",
}


def instacart_facts(folder: Path) -> dict[str, int]:
    """The adapter's findings, measured with the csv module over every file of the export."""
    order_rows = csv_rows(folder / "orders.csv")
    orders: dict[str, list[str]] = {}
    for r in order_rows:
        if len(r) == ORDER_COLUMNS:
            orders.setdefault(r[0], r)  # the first row of a repeated order counts
    lines = [r for f in sorted(folder.glob("order_products__*.csv")) for r in csv_rows(f)]
    whole = [r for r in lines if len(r) == 4]
    products = csv_rows(folder / "products.csv")
    aisles = {r[0] for r in csv_rows(folder / "aisles.csv")}
    departments = {r[0] for r in csv_rows(folder / "departments.csv")}
    days: Counter = Counter()
    for r in orders.values():
        days[r[1]] += float(r[6] or 0)  # a first order has no days since the prior one
    known_products = {r[0] for r in products}
    return {
        "order_lines": len(whole),
        "order_lines_with_missing_order": sum(r[0] not in orders for r in whole),
        "orders": len(orders),
        "orders_without_lines": len(set(orders) - {r[0] for r in whole}),
        "users": len({r[1] for r in orders.values()}),
        "products": len(products),
        "products_without_aisle_or_department": sum(
            r[2] not in aisles or r[3] not in departments for r in products
        ),
        "unparseable_order_rows": sum(len(r) != ORDER_COLUMNS for r in order_rows),
        "synthetic_days_span": int(max(days.values())),
        "torn_lines": len(lines) - len(whole),
        "lines_with_unknown_product": sum(
            r[0] in orders and r[1] not in known_products for r in whole
        ),
    }


@pytest.fixture(scope="module", params=WHERE)
def instacart(request: pytest.FixtureRequest) -> Read:
    folder = export_folder(request.param, "instacart")
    return Read(request.param, folder, read_export(folder, "instacart"))


def test_instacart_adapter(instacart: Read) -> None:
    folder, export = instacart.folder, instacart.export
    facts = instacart_facts(folder)
    assert facts == INSTACART_FACTS[instacart.where]
    check_contract(export)
    line_files = sorted(folder.glob("order_products__*.csv"))
    assert export.events.height == sum(data_lines(f) for f in line_files)
    assert rows_per_file(export.events) == {f.name: data_lines(f) for f in line_files}
    assert export.findings == {k: facts[k] for k in export.findings}
    assert set(export.findings) == INSTACART_FINDINGS  # none dropped, none added
    unknown = export.events.filter(pl.col("source_reason") == "unknown_order")
    assert unknown.height == facts["order_lines_with_missing_order"]
    assert unknown["source_detail"][0] == f"order {unknown['session_id'][0]} is not in orders.csv"
    assert export.events["parse_error"].drop_nulls().len() == facts["torn_lines"]
    # catalog: products.csv with "department/aisle" categories, names as the csv module reads
    products = csv_rows(folder / "products.csv")
    assert export.items.height == data_lines(folder / "products.csv") == facts["products"]
    assert export.items["title"].to_list() == [r[1] for r in products]
    first = export.items.row(0, named=True)
    assert (first["item_id"], first["title"], first["category"]) == (
        "1",
        "Chocolate Sandwich Cookies",
        "snacks/cookies cakes",
    )
    # synthetic times: per user, days since the prior order accumulate from the anchor, in
    # order_number order (this user's orders are listed 31 then 5)
    user = export.events.filter(pl.col("user_id") == "105152")
    times = dict(user.select("session_id", "event_time").unique().iter_rows())
    assert times == {"827105": "2017-01-06T08:00:00+00:00", "181036": "2017-01-12T12:00:00+00:00"}
    assert export.window_start == datetime(2017, 1, 1, tzinfo=UTC)
    span = timedelta(days=facts["synthetic_days_span"] + 1)
    assert export.window_end == datetime(2017, 1, 1, tzinfo=UTC) + span


def test_instacart_fixture_known_problems() -> None:
    """The fixture's hand-made rows: a first order without days_since_prior_order starts at
    the anchor, "7.0" days count as 7, a train order's lines come from its own file, a
    product whose aisle is unknown keeps its department, a torn order row's lines have no
    order."""
    export = read_export(FIXTURES / "instacart", "instacart")
    user = export.events.filter(pl.col("user_id") == "206300")
    times = dict(user.select("session_id", "event_time").unique().iter_rows())
    assert times == {"3300001": "2017-01-01T10:00:00+00:00", "3300002": "2017-01-08T14:00:00+00:00"}
    train = export.events.filter(pl.col("source_file") == "order_products__train.csv")
    assert set(train["session_id"]) == {"323079"} and train["source_reason"].null_count() == 2
    items = {r["item_id"]: r for r in export.items.iter_rows(named=True)}
    assert items["49700"]["category"] == "beverages"
    torn_order = export.events.filter(pl.col("session_id") == "2815180")  # its row is torn
    assert set(torn_order["source_reason"]) == {"unknown_order"}


def test_instacart_end_to_end(instacart: Read) -> None:
    facts = INSTACART_FACTS[instacart.where]
    items, events = run_cleaning(instacart.export)
    assert items.quarantine.height == 0
    expected = {
        "unknown_order": facts["order_lines_with_missing_order"],
        "unparseable_row": facts["torn_lines"],
        "unknown_item": facts["lines_with_unknown_product"],
    }
    assert reasons(events) == {k: n for k, n in expected.items() if n}
    assert events.clean.height == instacart.export.events.height - sum(expected.values())
    assert events.rule_hits.get("outside_source_window", 0) == 0


# ---------------------------------------------------------------- RetailRocket fixture


@pytest.fixture(scope="module")
def retailrocket() -> SourceExport:
    return read_export(FIXTURES / "retailrocket", "retailrocket")


def test_retailrocket_adapter(retailrocket: SourceExport) -> None:
    folder = FIXTURES / "retailrocket"
    check_contract(retailrocket)
    assert retailrocket.events.height == data_lines(folder / "events.csv") == 20
    torn = retailrocket.events.filter(pl.col("parse_error").is_not_null())
    assert torn["source_line"].to_list() == [17]
    assert torn["parse_error"].item() == "3 fields where 5 were expected"
    first = retailrocket.events.row(0, named=True)
    assert first["event_time"] == "2015-06-02T05:02:12.117+00:00"  # unix ms keep their ms
    assert retailrocket.window_start == datetime(2015, 6, 2, tzinfo=UTC)
    assert retailrocket.window_end == datetime(2015, 6, 4, tzinfo=UTC)

    items = {r["item_id"]: r for r in retailrocket.items.iter_rows(named=True) if r["item_id"]}
    assert set(items) == {"460429", "206783", "395014", "59481", "156781", "5411"}
    # latest value per item and property, across both parts
    assert (items["460429"]["price"], items["460429"]["available"]) == ("600.000", "false")
    assert items["460429"]["category"] == "885/1691/536"
    assert items["395014"]["category"] == "378/542/1146"  # recategorised in part 2
    assert items["206783"]["price"] is None and items["59481"]["category"] is None
    assert items["5411"]["category"] == "9999"  # not in the tree: the id alone
    assert retailrocket.items["parse_error"].drop_nulls().len() == 1  # torn property line
    assert retailrocket.findings["events_for_items_without_properties"] == 2
    assert retailrocket.findings["items_with_category_missing_from_tree"] == 1


def test_retailrocket_end_to_end(retailrocket: SourceExport) -> None:
    items, events = run_cleaning(retailrocket)
    assert reasons(items) == {"unparseable_row": 1}
    assert reasons(events) == {
        "unparseable_row": 1,
        "bad_event_type": 1,  # removefromcart
        "unknown_item": 2,  # item 999999 has no properties
        "duplicate_event": 1,  # line 12 repeats line 11
    }


# ---------------------------------------------------------------- generic


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


MAPPING = {
    "source": "shop",
    "events": {
        "path": "events.csv",
        "columns": {
            "user_id": "customer",
            "item_id": "sku",
            "event_type": "action",
            "event_time": "ts",
            "price": "amount",
        },
        "event_types": {"clicked": "view", "bought": "purchase"},
        "timestamp": {"format": "%d/%m/%Y %H:%M", "timezone": "Europe/Paris"},
    },
    "items": {"path": "items.csv", "columns": {"item_id": "sku", "title": "name"}},
    "window": {"start": "2024-03-01", "end": "2024-04-01"},
}


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    write(
        tmp_path / "events.csv",
        "customer,sku,action,ts,amount\n"
        "u1,A,clicked,01/03/2024 10:00,\n"
        "u1,A,bought,01/03/2024 10:05,9.90\n"
        "u1,A,bought,01/03/2024 10:05,9.90\n"
        "u2,B,clicked,31/03/2024 23:30\n"
        "u2,B,hovered,not a date,\n",
    )
    write(tmp_path / "items.csv", 'sku,name\nA,"Mug, blue"\nB,Plate\n')
    return tmp_path


def test_generic_csv(shop: Path) -> None:
    export = read_export(shop, "generic", MAPPING)
    check_contract(export)
    assert export.source == "shop" and export.events.height == 5
    assert export.events["source_line"].to_list() == [2, 3, 4, 5, 6]
    rows = export.events.to_dicts()
    assert rows[0]["event_type"] == "view" and rows[1]["event_type"] == "purchase"
    assert rows[0]["event_time"] == "2024-03-01T10:00:00+01:00" and rows[0]["price"] is None
    assert rows[1]["event_id"] == rows[2]["event_id"] != rows[0]["event_id"]
    assert rows[3]["parse_error"] == "4 fields where 5 were expected"
    assert rows[4]["event_time"] == "not a date" and rows[4]["event_type"] == "hovered"
    assert export.items["title"].to_list() == ["Mug, blue", "Plate"]
    assert export.window_start == datetime(2024, 3, 1, tzinfo=UTC)

    _, events = run_cleaning(export)
    assert reasons(events) == {
        "duplicate_event": 1,
        "unparseable_row": 1,
        "bad_event_type": 1,
    }
    assert events.rule_hits["bad_timestamp"] == 2  # "not a date" and the torn line


def test_generic_parquet_and_yaml_mapping(tmp_path: Path) -> None:
    pl.DataFrame(
        {"who": ["1", "2"], "what": ["x", "y"], "kind": ["pv", "cart"], "at": [1709280000, 0]}
    ).write_parquet(tmp_path / "log.parquet")
    write(
        tmp_path / "mapping.yaml",
        "events:\n  path: log.parquet\n  columns: {user_id: who, item_id: what, "
        "event_type: kind, event_time: at}\n  timestamp: {unit: s}\n",
    )
    export = read_export(tmp_path, "generic", "mapping.yaml")
    check_contract(export)
    assert export.source == tmp_path.name
    assert export.events["event_time"].to_list() == [
        "2024-03-01T08:00:00+00:00",
        "1970-01-01T00:00:00+00:00",
    ]
    assert json.loads(export.events["raw"][0])["who"] == "1"
    assert export.events["source_line"].to_list() == [1, 2]
    # no items file: the catalog is every item the events name
    assert export.items["item_id"].to_list() == ["x", "y"]
    assert export.window_start == datetime(1970, 1, 1, tzinfo=UTC)


def test_generic_parquet_zoned_times_and_same_named_columns(tmp_path: Path) -> None:
    """Columns already named as the contract need no mapping; zoned times keep their offset."""
    paris = timezone(timedelta(hours=1))
    pl.DataFrame(
        {
            "user_id": ["u1"],
            "item_id": ["A"],
            "event_type": ["view"],
            "event_time": [datetime(2024, 3, 1, 10, tzinfo=paris)],
        }
    ).write_parquet(tmp_path / "events.parquet")
    export = read_export(tmp_path, "generic", {"events": {"path": "events.parquet"}})
    check_contract(export)
    assert export.events["event_time"].to_list() == ["2024-03-01T09:00:00+00:00"]
    assert export.events["user_id"].to_list() == ["u1"]


# ---------------------------------------------------------------- errors


def test_missing_mapped_column_names_file_and_column(shop: Path) -> None:
    mapping = json.loads(json.dumps(MAPPING))
    mapping["events"]["columns"]["user_id"] = "client"
    with pytest.raises(ExportError, match=r"events\.csv: mapped column 'client' \(for user_id\)"):
        read_export(shop, "generic", mapping)


def test_unmapped_required_column_names_file_and_column(shop: Path) -> None:
    mapping = json.loads(json.dumps(MAPPING))
    del mapping["events"]["columns"]["event_time"]
    with pytest.raises(ExportError, match=r"events\.csv: no column for event_time"):
        read_export(shop, "generic", mapping)


def test_missing_required_column_in_named_format(tmp_path: Path) -> None:
    write(tmp_path / "lines.csv", "InvoiceNo,StockCode,Quantity\n1,A,1\n")
    with pytest.raises(
        ExportError, match=r"lines\.csv: required column\(s\) Description, InvoiceDate"
    ):
        read_export(tmp_path, "online_retail")


def test_unknown_format_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown export format 'amazon'") as err:
        read_export(tmp_path, "amazon")
    for name in ADAPTERS:
        assert name in str(err.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    write(
        tmp_path / "orders.csv",
        "order_id,user_id,order_number,order_hour_of_day,days_since_prior_order\n",
    )
    with pytest.raises(ExportError, match=r"order_products__prior\.csv: no such file"):
        read_export(tmp_path, "instacart")
    with pytest.raises(ExportError, match=r"events\.csv: no such file"):
        read_export(tmp_path, "retailrocket")
    with pytest.raises(ExportError, match=r"nothing\.csv: no such file"):
        read_export(tmp_path, "taobao", {"files": ["nothing.csv"]})
    with pytest.raises(ExportError, match="unknown mapping key"):
        read_export(tmp_path, "taobao", {"file": "typo"})


@pytest.mark.pipeline  # a real `feast apply` / Dagster run
def test_pipeline_runs_on_a_real_export_through_source_json(tmp_path, monkeypatch):
    """A landing folder that declares `"format": "taobao"` runs through the same assets,
    once a secret pseudonym key is set (real users: the development key is refused)."""
    from dagster import DagsterInstance, materialize

    from dagster_project.assets import ingest, quality
    from dagster_project.definitions import every_event_day, platform_resources
    from dagster_project.settings import layout

    folder = sample("taobao_userbehavior")
    out = layout(tmp_path)
    out.landing.mkdir(parents=True)
    for f in folder.glob("*.csv"):
        (out.landing / f.name).symlink_to(f)
    (out.landing / "source.json").write_text(json.dumps({"format": "taobao"}))
    selection = [
        ingest.raw_events,
        ingest.raw_items,
        quality.items_clean,
        quality.events_clean,
        quality.quarantine,
        quality.rows_accounted_for,
        quality.items_clean_suite,
        quality.events_clean_suite,
    ]
    monkeypatch.delenv("RECSYS_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("RECSYS_ALLOW_DEVELOPMENT_KEY", raising=False)
    with DagsterInstance.ephemeral() as instance:
        # The sample's days (2017) come before the first event day: they fold into it.
        days = every_event_day(tmp_path)
        refused = materialize(
            selection[:4],
            instance=instance,
            resources=platform_resources(str(tmp_path)),
            tags=days,
            raise_on_error=False,
        )
        assert not refused.success
        [failure] = refused.get_step_failure_events()
        assert "RECSYS_PSEUDONYM_KEY is not set" in failure.event_specific_data.error.message
        monkeypatch.setenv("RECSYS_PSEUDONYM_KEY", "a secret for this test")
        result = materialize(
            selection, instance=instance, resources=platform_resources(str(tmp_path)), tags=days
        )
    assert result.success
    held = pl.read_parquet(out.table("quarantine"))
    assert held.filter(pl.col("reason") == "outside_source_window").height == 35
    raw = raw_rows(out.raw_table("raw_events"))
    clean = pl.read_parquet(out.table("events_clean")).height
    assert (
        raw == 84_476 and raw == clean + held.filter(pl.col("table") == "behaviour_events").height
    )
