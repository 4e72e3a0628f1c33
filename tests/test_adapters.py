"""Format adapters on the real samples (../shared/data), the RetailRocket fixture and generic exports.

Each sample's known problems (../shared/data/README.md) are measured here a second time with
the plain csv module and compared with what the adapter and the cleaning report. Every test
checks that no record is lost: raw rows per file = physical data lines in that file, and,
end to end, raw rows = clean + quarantined per file.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from dagster_project.contracts import (
    EVENT_COLUMNS,
    EVENT_TYPE_ALIASES,
    ITEM_COLUMNS,
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


# ---------------------------------------------------------------- Taobao


@pytest.fixture(scope="module")
def taobao() -> SourceExport:
    return read_export(sample("taobao_userbehavior"), "taobao")


def test_taobao_adapter(taobao: SourceExport) -> None:
    path = sample("taobao_userbehavior") / "UserBehavior_head84k.csv"
    rows = csv_rows(path, header=False)
    check_contract(taobao)
    assert taobao.events.height == len(rows) == data_lines(path, header=False) == 84_476
    assert taobao.events["source_line"].to_list()[:2] == [1, 2]  # no header: line 1 is data
    whole = [r for r in rows if len(r) == 5]
    torn = taobao.events.filter(pl.col("parse_error").is_not_null())
    assert torn.height == len(rows) - len(whole) == 1
    assert torn["source_line"].item() == 84_476 and torn["event_id"].item() is None
    assert torn["raw"].item() == ",".join(rows[-1])

    first = taobao.events.row(0, named=True)
    assert first["event_time"] == "2017-11-25T01:21:10+08:00"  # 1511544070 in Beijing time
    assert first["event_type"] in EVENT_TYPE_ALIASES and first["session_id"] is None
    assert taobao.window_start == datetime(2017, 11, 25, tzinfo=BEIJING)
    assert taobao.window_end == datetime(2017, 12, 4, tzinfo=BEIJING)

    # the catalog is implied by the events: one row per item, with its category
    users, items = {r[0] for r in whole}, {r[1] for r in whole}
    assert taobao.items.height == len(items) == 55_368
    assert set(taobao.items["item_id"]) == set(taobao.events["item_id"].drop_nulls())
    assert taobao.items["category"].null_count() == 0
    buys = [r for r in whole if r[3] == "buy"]
    viewed = {(r[0], r[1]) for r in whole if r[3] == "pv"}
    assert taobao.findings["users"] == len(users) == 815
    assert taobao.findings["items"] == 55_368
    assert taobao.findings["purchases"] == len(buys) == 1_750
    without_view = sum((r[0], r[1]) not in viewed for r in buys)
    assert taobao.findings["purchases_without_view"] == without_view == 541
    assert taobao.findings["purchases_without_earlier_view"] == 829
    assert (taobao.findings["events_per_user_min"], taobao.findings["events_per_user_max"]) == (
        4,
        539,
    )


def test_taobao_end_to_end(taobao: SourceExport) -> None:
    rows = csv_rows(sample("taobao_userbehavior") / "UserBehavior_head84k.csv", header=False)
    start = datetime(2017, 11, 25, tzinfo=BEIJING).timestamp()
    end = datetime(2017, 12, 4, tzinfo=BEIJING).timestamp()
    outside = [int(r[4]) for r in rows if len(r) == 5 and not start <= int(r[4]) < end]
    days = {datetime.fromtimestamp(t, BEIJING).date().isoformat() for t in outside}
    assert len(outside) == 35 and "2017-09-11" in days

    items, events = run_cleaning(taobao)
    assert items.quarantine.height == 0
    assert events.rule_hits["outside_source_window"] == len(outside)
    assert reasons(events)["outside_source_window"] == len(outside)
    assert reasons(events)["unparseable_row"] == 1
    assert events.rule_hits.get("unknown_item", 0) == 0
    assert events.rule_hits.get("duplicate_event", 0) == 0  # no exact duplicate rows


# ---------------------------------------------------------------- Online Retail


def online_retail(name: str) -> SourceExport:
    return read_export(sample("online_retail"), "online_retail", {"files": [name]})


def measured_online_retail(path: Path) -> dict[str, int]:
    """The README's Online Retail facts, measured with csv.DictReader."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"", "NA"}
    descriptions: dict[str, set[str]] = {}
    for r in rows:
        if r["Description"] not in missing:
            descriptions.setdefault(r["StockCode"], set()).add(r["Description"])
    cancelled = [r["InvoiceNo"].startswith("C") for r in rows]
    fee = [r["StockCode"] in ONLINE_RETAIL_NON_PRODUCT_CODES for r in rows]
    drop_index = [k for k in rows[0] if k != ""]
    return {
        "rows": len(rows),
        "no_customer": sum(r["CustomerID"] in missing for r in rows),
        "no_description": sum(r["Description"] in missing for r in rows),
        "cancelled": sum(cancelled),
        "non_product": sum(f and not c for f, c in zip(fee, cancelled, strict=True)),
        "quantity_not_positive": sum(float(r["Quantity"]) <= 0 for r in rows),
        "price_not_positive": sum(float(r["UnitPrice"]) <= 0 for r in rows),
        "several_descriptions": sum(len(d) > 1 for d in descriptions.values()),
        "stock_codes": len({r["StockCode"] for r in rows}),
        "repeats": len(rows) - len({tuple(r[k] for k in drop_index) for r in rows}),
    }


def test_online_retail_random_rows() -> None:
    path = sample("online_retail") / "online_retail_random2709.csv"
    facts = measured_online_retail(path)
    export = online_retail(path.name)
    check_contract(export)
    assert export.events.height == facts["rows"] == data_lines(path) == 2_709
    assert export.events["source_line"].min() == 2
    assert export.events["parse_error"].null_count() == export.events.height
    assert facts == {
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
    }
    assert export.findings["rows_without_description"] == facts["no_description"]
    assert export.findings["stock_codes_with_several_descriptions"] == facts["several_descriptions"]
    source = Counter(export.events["source_reason"].drop_nulls().to_list())
    assert source == {"cancelled_order": 50, "non_product_line": facts["non_product"]}
    cancelled = export.events.filter(pl.col("source_reason") == "cancelled_order").row(
        0, named=True
    )
    assert cancelled["source_detail"] == f"invoice {cancelled['session_id']} is a cancellation"
    # one catalog row per StockCode; fees and postage are flagged there too
    assert export.items.height == export.items["item_id"].n_unique() == facts["stock_codes"]
    fees = export.items.filter(pl.col("source_reason") == "non_product_line")
    assert set(fees["item_id"]) == {"POST", "DOT", "M", "C2", "AMAZONFEE"}
    # local UK time with its offset: BST in summer, GMT in winter
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


def test_online_retail_head_rows() -> None:
    path = sample("online_retail") / "online_retail_head10k.csv"
    facts = measured_online_retail(path)
    export = online_retail(path.name)
    check_contract(export)
    assert export.events.height == facts["rows"] == data_lines(path) == 10_000
    assert facts["repeats"] == 255 and facts["price_not_positive"] == 1
    assert (
        facts["several_descriptions"]
        == export.findings["stock_codes_with_several_descriptions"]
        == 9
    )
    assert export.findings["rows_without_description"] == 0
    # "17850.0" in this layout is customer 17850, as in the other layout
    assert export.events["user_id"].str.ends_with(".0").sum() == 0
    # exact repeats share one event id
    ids = export.events["event_id"]
    assert ids.null_count() == 0 and ids.len() - ids.n_unique() == facts["repeats"]

    _, events = run_cleaning(export)
    assert events.rule_hits["duplicate_event"] == reasons(events)["duplicate_event"] == 255
    assert events.rule_hits["non_positive_price"] == 1
    assert reasons(events)["non_product_line"] == facts["non_product"] == 40
    assert events.rule_hits.get("null_user_id", 0) == 0


def test_online_retail_both_layouts_share_event_ids() -> None:
    """The folder read whole: a line present in both files is one event, the repeat a duplicate."""
    folder = sample("online_retail")

    def key(r: dict[str, str]) -> tuple:
        fmt = "%m/%d/%Y %H:%M" if "/" in r["InvoiceDate"] else "%Y-%m-%d %H:%M:%S"
        customer = r["CustomerID"].removesuffix(".0")
        when = datetime.strptime(r["InvoiceDate"], fmt)
        return (r["InvoiceNo"], r["StockCode"], r["Quantity"], when, r["UnitPrice"], customer)

    keys = {}
    for name in ("online_retail_head10k.csv", "online_retail_random2709.csv"):
        with (folder / name).open(newline="") as f:
            keys[name] = [key(r) for r in csv.DictReader(f)]
    head = set(keys["online_retail_head10k.csv"])
    overlap = sum(k in head for k in keys["online_retail_random2709.csv"])
    assert overlap == 48

    export = read_export(folder, "online_retail")
    check_contract(export)
    assert rows_per_file(export.events) == {
        "online_retail_head10k.csv": 10_000,
        "online_retail_random2709.csv": 2_709,
    }
    _, events = run_cleaning(export)
    assert events.rule_hits["duplicate_event"] == 255 + overlap


# ---------------------------------------------------------------- Instacart


@pytest.fixture(scope="module")
def instacart() -> SourceExport:
    return read_export(sample("instacart"), "instacart")


def test_instacart_adapter(instacart: SourceExport) -> None:
    folder = sample("instacart")
    orders = {r[0]: r for r in csv_rows(folder / "orders.csv")}
    lines = csv_rows(folder / "order_products__prior.csv")
    missing = sum(r[0] not in orders for r in lines)
    assert missing == 2_169 and round(missing / len(lines), 3) == 0.067
    check_contract(instacart)
    assert instacart.events.height == len(lines) == data_lines(folder / "order_products__prior.csv")
    assert instacart.findings["order_lines_with_missing_order"] == missing
    unknown = instacart.events.filter(pl.col("source_reason") == "unknown_order")
    assert unknown.height == missing
    assert unknown["source_detail"][0] == f"order {unknown['session_id'][0]} is not in orders.csv"
    # catalog: products.csv with "department/aisle" categories
    assert instacart.items.height == data_lines(folder / "products.csv") == 9_288
    first = instacart.items.row(0, named=True)
    assert (first["item_id"], first["title"], first["category"]) == (
        "1",
        "Chocolate Sandwich Cookies",
        "snacks/cookies cakes",
    )
    # synthetic times: per user, days since the prior order accumulate from the anchor
    user = instacart.events.filter(pl.col("user_id") == "105152")
    times = dict(user.select("session_id", "event_time").unique().iter_rows())
    assert times == {"827105": "2017-01-06T08:00:00+00:00", "181036": "2017-01-12T12:00:00+00:00"}
    assert instacart.window_start == datetime(2017, 1, 1, tzinfo=UTC)


def test_instacart_end_to_end(instacart: SourceExport) -> None:
    items, events = run_cleaning(instacart)
    assert items.quarantine.height == 0
    assert reasons(events)["unknown_order"] == instacart.findings["order_lines_with_missing_order"]
    assert events.clean.height == instacart.events.height - 2_169
    assert events.rule_hits.get("unknown_item", 0) == 0


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
    from dagster_project.definitions import platform_resources
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
        refused = materialize(
            selection[:4],
            instance=instance,
            resources=platform_resources(str(tmp_path)),
            raise_on_error=False,
        )
        assert not refused.success
        [failure] = refused.get_step_failure_events()
        assert "RECSYS_PSEUDONYM_KEY is not set" in failure.event_specific_data.error.message
        monkeypatch.setenv("RECSYS_PSEUDONYM_KEY", "a secret for this test")
        result = materialize(
            selection, instance=instance, resources=platform_resources(str(tmp_path))
        )
    assert result.success
    held = pl.read_parquet(out.table("quarantine"))
    assert held.filter(pl.col("reason") == "outside_source_window").height == 35
    raw = raw_rows(out.raw_table("raw_events"))
    clean = pl.read_parquet(out.table("events_clean")).height
    assert (
        raw == 84_476 and raw == clean + held.filter(pl.col("table") == "behaviour_events").height
    )
