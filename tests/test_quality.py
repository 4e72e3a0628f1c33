import os
import string
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagster_project.assets.quality import _drop_other_versions_of_the_index, _event_id_hashes
from dagster_project.pseudonyms import pseudonymise
from dagster_project.quality.cleaning import (
    LOOK_BACK_DAYS,
    Cleaned,
    clean_events,
    clean_items,
    ids_on_later_days,
    row_accounting,
    write_event_id_hashes,
)
from dagster_project.settings import layout
from dagster_project.sources.manifest import source_window
from dagster_project.sources.raw_table import read_landing, read_landing_file
from dagster_project.sources.records import LandingFileError
from dagster_project.sql import connect

HEADER = "event_id,user_id,session_id,item_id,event_type,event_time,quantity,price,query"
NOW = pd.Timestamp("2026-11-30", tz="UTC")
WINDOW = (pd.Timestamp("2026-09-01", tz="UTC"), pd.Timestamp("2026-10-01", tz="UTC"))
CATALOG = pl.Series(["i1", "i2"])


def _events(tmp_path: Path, lines: list[str], name: str = "events.csv") -> pl.DataFrame:
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return read_landing_file(path, "events", "test")


def _clean(raw: pl.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    cleaned = clean_events(raw, CATALOG, WINDOW, "run-1", NOW)
    return cleaned.clean.to_pandas(), cleaned.quarantine.to_pandas()


def test_every_rule_gives_its_reason(tmp_path):
    raw = _events(
        tmp_path,
        [
            "e1,u1,s1,i1,view,2026-09-02T10:00:00.000Z,,,",  # clean
            "e2,,s1,i1,view,2026-09-02T10:00:00.000Z,,,",  # null_user_id
            "e3,u1,s1,,view,2026-09-02T10:00:00.000Z,,,",  # null_item_id
            "e4,u1,s1,i1,teleport,2026-09-02T10:00:00.000Z,,,",  # bad_event_type
            "e5,u1,s1,i1,view,yesterday,,,",  # bad_timestamp
            "e6,u1,s1,i1,view,2071-01-01T00:00:00.000Z,,,",  # future_timestamp
            "e7,u1,s1,i1,view,2026-08-01T00:00:00.000Z,,,",  # outside_source_window
            "e8,u1,s1,i1,purchase,2026-09-02T11:00:00.000Z,1,-3.5,",  # non_positive_price
            "e9,u1,s1,i1,purchase,2026-09-02T11:00:00.000Z,1,cheap,",  # bad_price
            "e10,u1,s1,i1,purchase,2026-09-02T11:00:00.000Z,0.5,3,",  # bad_quantity
            "e1,u1,s1,i1,view,2026-09-02T10:00:00.000Z,,,",  # duplicate_event
            "e11,u1,s1,i1,view,2026-09-02T10:00:01.000Z,,,",  # near_duplicate_event
            "e12,u1,s1,i404,view,2026-09-02T12:00:00.000Z,,,",  # unknown_item
            "e13,u1,s1,i1,view",  # unparseable_row
            "e14,u2,s2,i2,pv,2026-09-03T12:00:00.000Z,,,",  # clean (alias pv -> view)
        ],
    )
    clean, quarantine = _clean(raw)
    assert clean["event_id"].tolist() == ["e1", "e14"]
    assert clean["event_type"].tolist() == ["view", "view"]
    assert quarantine["reason"].tolist() == [
        "null_user_id",
        "null_item_id",
        "bad_event_type",
        "bad_timestamp",
        "future_timestamp",
        "outside_source_window",
        "non_positive_price",
        "bad_price",
        "bad_quantity",
        "duplicate_event",
        "near_duplicate_event",
        "unknown_item",
        "unparseable_row",
    ]
    assert quarantine["source_line"].tolist() == list(range(3, 16))
    assert quarantine["raw"].iloc[-1] == "e13,u1,s1,i1,view"
    assert quarantine["detail"].str.len().min() > 10 and (quarantine["run_id"] == "run-1").all()


def test_cleaning_in_cursors_of_one_database_is_cleaning_alone(tmp_path):
    """Batches cleaned in cursors of one long-lived database (the real-time intake) get the
    verdicts a fresh database gives, and leave no table or view in the shared database."""
    raw = _events(
        tmp_path,
        [
            "e1,u1,s1,i1,view,2026-09-02T10:00:00.000Z,,,",
            "e1,u1,s1,i1,view,2026-09-02T10:00:00.000Z,,,",
            ",u2,,i2,view,2026-09-02T10:00:00.000Z,,,",
            "e3,u1,s1,i404,view,2026-09-02T12:00:00.000Z,,,",
        ],
    )
    alone = clean_events(raw, CATALOG, WINDOW, "run-1", NOW)
    database = connect()
    for _ in range(2):
        shared = clean_events(raw, CATALOG, WINDOW, "run-1", NOW, database=database)
        assert shared.clean.equals(alone.clean) and shared.quarantine.equals(alone.quarantine)
    left = database.sql(
        "SELECT (SELECT count(*) FROM duckdb_tables()) + "
        "(SELECT count(*) FROM duckdb_views() WHERE NOT internal)"
    ).fetchall()
    assert left == [(0,)]


def test_missing_ids_and_sessions_are_derived(tmp_path):
    raw = _events(
        tmp_path,
        [
            ",u1,,i1,view,2026-09-02T10:00:00.000Z,,,",
            ",u1,,i2,view,2026-09-02T10:10:00.000Z,,,",
            ",u1,,i1,view,2026-09-02T12:00:00.000Z,,,",
        ],
    )
    clean, quarantine = _clean(raw)
    assert quarantine.empty and clean["event_id"].str.startswith("h").all()
    sessions = clean["session_id"].tolist()
    assert sessions[0] == sessions[1] != sessions[2]  # 30 minutes of inactivity ends a session
    # The user id is pseudonymised, in derived session ids too.
    (pseudonym,) = pseudonymise(["u1"])
    assert (clean["user_id"] == pseudonym).all()
    assert all(s.startswith(f"{pseudonym}@") and "u1" not in s for s in sessions)


# -- one day at a time, with a look-back ----------------------------------------------------
DAY_ONE = [
    "e1,u1,s1,i1,view,2026-09-02T23:59:59.500Z,,,",  # clean
    ",u2,,i1,view,2026-09-02T23:50:00.000Z,,,",  # clean; a session derived for it
    "e3,u3,s3,i2,view,2026-09-02T12:00:00.000Z,,,",  # clean
]
DAY_TWO = [
    "e3,u3,s3,i2,view,2026-09-02T12:00:00.000Z,,,",  # re-sent a day later: duplicate_event
    "e4,u1,s1,i1,view,2026-09-03T00:00:00.800Z,,,",  # 1.3 s after e1: near_duplicate_event
    "e5,u1,s1,i1,view,2026-09-03T00:00:02.000Z,,,",  # 2.5 s after the kept e1: clean
    ",u2,,i2,view,2026-09-03T00:10:00.000Z,,,",  # 20 min after u2's last: the same session
    ",u2,,i1,view,2026-09-03T02:00:00.000Z,,,",  # a new session
    "e6,u4,s6,i1,view,2026-09-03T08:00:00.000Z,,,",  # clean
]


def _day_by_day(
    days: list[pl.DataFrame], items: pl.Series, window, now, files: Path | None = None
) -> Cleaned:
    """Each day cleaned after the days before it: the clean rows of the LOOK_BACK_DAYS
    before it as the look-back; with `files` (a folder), as the pipeline does it: the clean
    days as files, every earlier day's ids checked through its event-id index."""
    clean, quarantine = [], []
    for n, raw in enumerate(days):
        if files is None:
            earlier = pl.concat(clean[-LOOK_BACK_DAYS:]) if clean else None
            cleaned = clean_events(raw, items, window, "run-1", now, earlier=earlier)
        else:
            written = [files / f"{k}.parquet" for k in range(n)]
            cleaned = clean_events(
                raw, items, window, "run-1", now, earlier=written[-LOOK_BACK_DAYS:],
                earlier_files=written, earlier_id_hashes=[files / "ids" / f.name for f in written],
            )  # fmt: skip
            cleaned.clean.write_parquet(files / f"{n}.parquet")
            write_event_id_hashes(files / f"{n}.parquet", files / "ids" / f"{n}.parquet")
        clean.append(cleaned.clean)
        quarantine.append(cleaned.quarantine)
    return Cleaned(pl.concat(clean), pl.concat(quarantine))


@pytest.mark.parametrize("as_files", [False, True])
def test_a_day_cleaned_after_the_day_before_is_the_whole_history_cleaned(tmp_path, as_files):
    days = [_events(tmp_path, DAY_ONE, "day1.csv"), _events(tmp_path, DAY_TWO, "day2.csv")]
    whole = clean_events(pl.concat(days), CATALOG, WINDOW, "run-1", NOW)
    by_day = _day_by_day(days, CATALOG, WINDOW, NOW, tmp_path if as_files else None)
    assert by_day.clean.equals(whole.clean) and by_day.quarantine.equals(whole.quarantine)
    assert whole.quarantine["reason"].to_list() == ["duplicate_event", "near_duplicate_event"]
    u2 = whole.clean.filter(pl.col("user_id") == pseudonymise(["u2"])[0])["session_id"]
    assert u2[0] == u2[1] != u2[2]  # the session crossed midnight
    # Without the look-back the second day gets them wrong: the test can tell.
    alone = clean_events(days[1], CATALOG, WINDOW, "run-1", NOW)
    assert alone.clean["event_id"].head(2).to_list() == ["e3", "e4"]
    assert alone.quarantine["raw"].str.starts_with("e5,").to_list() == [True]
    assert (
        alone.clean.filter(pl.col("user_id") == pseudonymise(["u2"])[0])["session_id"][0] != u2[0]
    )


def test_the_look_back_reaches_across_midnight_and_to_derived_sessions_begun_days_ago(tmp_path):
    """No late rows pin the second day's start: its first events come just after midnight,
    and the day before ends with a near duplicate's original 1.5 s earlier and a derived
    session 25 minutes earlier. A derived session that late events stretched over three days
    keeps the id of its first event."""
    days = [
        ["e1,u1,s1,i1,view,2026-09-02T23:59:59.500Z,,,", "e2,u5,,i1,view,2026-09-02T23:40:00Z,,,"],
        ["e3,u1,s1,i1,view,2026-09-03T00:00:01.000Z,,,", "e4,u5,,i2,view,2026-09-03T00:05:00Z,,,"],
    ]
    raw = [_events(tmp_path, lines, f"day{n}.csv") for n, lines in enumerate(days)]
    whole = clean_events(pl.concat(raw), CATALOG, WINDOW, "run-1", NOW)
    by_day = _day_by_day(raw, CATALOG, WINDOW, NOW)
    assert by_day.clean.equals(whole.clean) and by_day.quarantine.equals(whole.quarantine)
    assert whole.quarantine["reason"].to_list() == ["near_duplicate_event"]
    late = [
        [",u6,,i1,view,2026-09-02T10:00:00Z,,,", ",u6,,i1,view,2026-09-02T10:50:00Z,,,"],
        [",u6,,i2,view,2026-09-02T10:25:00Z,,,"],  # arrives a day late: joins 10:00
        [",u6,,i1,view,2026-09-02T11:10:00Z,,,"],  # two days late: 10:00's session too
    ]
    raw = [_events(tmp_path, lines, f"late{n}.csv") for n, lines in enumerate(late)]
    sessions = _day_by_day(raw, CATALOG, WINDOW, NOW).clean["session_id"].to_list()
    assert sessions[0] != sessions[1] and sessions[2] == sessions[3] == sessions[0]


@pytest.mark.parametrize("indexed", [False, True])
def test_an_event_id_of_any_earlier_day_is_never_clean_again(tmp_path, indexed):
    """Ids are checked against every earlier day's clean file, not only the recent days,
    through the day's event-id index where it has one."""
    day_one = clean_events(_events(tmp_path, DAY_ONE, "day1.csv"), CATALOG, WINDOW, "run-1", NOW)
    earlier = tmp_path / "2026-09-02.parquet"
    day_one.clean.write_parquet(earlier)
    index = tmp_path / "index" / earlier.name
    if indexed:
        write_event_id_hashes(earlier, index)
    resent = _events(tmp_path, ["e3,u3,s3,i2,view,2026-09-02T12:00:00.000Z,,,"], "day5.csv")
    cleaned = clean_events(
        resent, CATALOG, WINDOW, "run-1", NOW, earlier_files=[earlier],
        earlier_id_hashes=[index] if indexed else [],
    )  # fmt: skip
    assert cleaned.clean.is_empty()
    assert cleaned.quarantine["reason"].to_list() == ["duplicate_event"]


def test_an_event_id_index_only_says_where_to_look(tmp_path):
    """An index holding the hash of a batch's id (a collision, or a row deleted since) sends
    the check to its day's ids, which decide; an index without it spares reading them."""
    earlier = tmp_path / "2026-09-02.parquet"
    clean_events(
        _events(tmp_path, DAY_ONE, "day1.csv"), CATALOG, WINDOW, "run-1", NOW
    ).clean.write_parquet(earlier)
    resent = _events(tmp_path, ["e3,u3,s3,i2,view,2026-09-02T12:00:00.000Z,,,"], "day5.csv")
    index = tmp_path / "index" / earlier.name
    index.parent.mkdir()
    with connect() as con:  # the index of a day with another id, whose hash is e3's
        con.execute(f"COPY (SELECT hash('e3') AS id_hash) TO '{index}' (FORMAT parquet)")
    other = tmp_path / "other" / earlier.name
    other.parent.mkdir()
    pl.read_parquet(earlier).filter(pl.col("event_id") != "e3").write_parquet(other)
    kept = clean_events(
        resent, CATALOG, WINDOW, "run-1", NOW, earlier_files=[other], earlier_id_hashes=[index]
    )
    assert kept.clean["event_id"].to_list() == ["e3"]
    with connect() as con:  # an index without e3's hash: its day's ids are not read
        con.execute(f"COPY (SELECT hash('e9') AS id_hash) TO '{index}' (FORMAT parquet)")
    spared = clean_events(
        resent, CATALOG, WINDOW, "run-1", NOW, earlier_files=[earlier], earlier_id_hashes=[index]
    )
    assert spared.clean["event_id"].to_list() == ["e3"]


@pytest.mark.parametrize("indexed", [True, False])
def test_ids_a_later_day_holds_too_are_found(tmp_path, indexed):
    """A day cleaned again after the days that followed it: its ids that a later day also
    holds, read through the later days' event-id indexes where they have them."""
    files = {}
    for day, ids in [("2026-09-02", ["a", "b"]), ("2026-09-03", ["c"]), ("2026-09-04", ["b", "d"])]:
        files[day] = tmp_path / f"{day}.parquet"
        pl.DataFrame({"event_id": ids}).write_parquet(files[day])
    later = [files["2026-09-03"], files["2026-09-04"]]
    indexes = [tmp_path / "index" / path.name for path in later] if indexed else []
    for path, index in zip(later, indexes, strict=False):  # none when not indexed
        write_event_id_hashes(path, index)
    assert ids_on_later_days([files["2026-09-02"]], later, indexes) == ["b"]
    assert ids_on_later_days([files["2026-09-03"]], later[1:], indexes[1:]) == []
    assert ids_on_later_days([files["2026-09-04"]], [], []) == []


def test_the_look_back_needs_the_clean_tables_columns(tmp_path):
    raw = _events(tmp_path, DAY_TWO)
    with pytest.raises(ValueError, match="session_id"):
        clean_events(raw, CATALOG, WINDOW, "run-1", NOW, earlier=pl.DataFrame({"event_id": ["e1"]}))


def test_file_level_failures_name_the_file(tmp_path):
    bad_header = tmp_path / "events.csv"
    bad_header.write_text("event_id,user,item\n1,2,3\n")
    with pytest.raises(
        LandingFileError, match=r"events\.csv: required column\(s\) user_id, item_id"
    ):
        read_landing_file(bad_header, "events", "test")
    other = tmp_path / "events.xlsx"
    other.write_text("x")
    with pytest.raises(LandingFileError, match="unknown format"):
        read_landing_file(other, "events", "test")
    broken = tmp_path / "events.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(LandingFileError, match="not a readable Parquet file"):
        read_landing_file(broken, "events", "test")


def test_catalog_rules(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text(
        "item_id,title,description,category,brand,price,available,listed_at\n"
        'i1,Mug,"A mug, blue",Home/Kitchen/Mug,Acme,4.5,True,2026-09-01T00:00:00Z\n'
        "i1,Mug,again,Home/Kitchen/Mug,Acme,4.5,True,2026-09-01T00:00:00Z\n"
        ",Nameless,x,Home/Kitchen/Mug,Acme,4.5,True,2026-09-01T00:00:00Z\n"
        "i2,Free,x,Home/Kitchen/Mug,Acme,0,True,2026-09-01T00:00:00Z\n"
    )
    cleaned = clean_items(read_landing_file(path, "items", "test"), "run-1", NOW)
    items, quarantine = cleaned.clean.to_pandas(), cleaned.quarantine.to_pandas()
    assert items["item_id"].tolist() == ["i1"] and items["description"].iloc[0] == "A mug, blue"
    assert quarantine["reason"].tolist() == ["duplicate_item", "null_item_id", "non_positive_price"]


# -- property: rows read = rows clean + rows quarantined, per file, whatever the input --------
field = st.one_of(
    st.text(alphabet=string.printable.replace("\n", "").replace("\r", ""), max_size=12),
    st.sampled_from(
        [
            "",
            "u1",
            "i1",
            "i2",
            "view",
            "pv",
            "purchase",
            "-1",
            "0",
            "1e308",
            "NaN",
            "9" * 30,
            "2026-09-02T10:00:00Z",
            "2026-09-02 10:00",
            "02/09/2026",
            "1725271200",
            "\u00e9\u00e8",
            '"quoted, comma"',
            '"unterminated',
            "e1",  # duplicate ids
            "-99999999999999999999",
            "1e-320",
            "inf",
            "0x1F",
        ]
    ),
)
odd_time = st.sampled_from(
    [
        "2026-09-02T10:00:00Z",
        "2026-09-02T10:00:00.123456789Z",
        "2026-09-02T10:00:00+05:30",
        "2026-09-02T10:00:00-0800",
        "2026-09-02 10:00:00",
        "2026-09-02",
        "2026/09/02 10:00",
        "Wed, 02 Sep 2026 10:00:00 GMT",
        "1725271200000",
        "2026-02-30T10:00:00Z",
        "0000-01-01T00:00:00Z",
        "99999-01-01T00:00:00Z",
        "2026-09-02T24:00:00Z",
        "",
    ]
)
# Rows of the right width with plausible and odd values, so every rule is reached.
shaped = st.tuples(
    st.sampled_from(["e1", "e2", "", "e3"]),
    st.sampled_from(["u1", "", " ", "u2"]),
    st.sampled_from(["s1", ""]),
    st.sampled_from(["i1", "i2", "i9", ""]),
    st.sampled_from(["view", "pv", "PURCHASE", "teleport", ""]),
    odd_time,
    st.sampled_from(["", "1", "0", "-2", "2.5", "1e9", "x"]),
    st.sampled_from(["", "9.99", "0", "-1", "nan", "1e400", "abc"]),
    st.sampled_from(["", "red shoes", '"a, b"']),
).map(lambda fields: ",".join(fields))
row = st.lists(field, min_size=0, max_size=12).map(lambda fields: ",".join(fields))
line = st.one_of(
    shaped,
    shaped,
    row,
    row.map(lambda r: r.replace(",", ";")),  # wrong delimiter
    row.map(lambda r: r.replace(",", "\t")),
    row.map(lambda r: r[: len(r) // 2]),  # truncated
)


# One database for the examples below, each cleaned in a cursor of it, as the intake cleans
# its small batches: opening a database per example was a third of the test's time.
EXAMPLES_DATABASE = connect(threads=1)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(line, min_size=1, max_size=40),
    bad_bytes=st.booleans(),
    line_end=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
)
def test_rows_read_equal_clean_plus_quarantined(tmp_path_factory, lines, bad_bytes, line_end, bom):
    folder = tmp_path_factory.mktemp("prop")
    path = folder / "events.csv"
    payload = (line_end.join([HEADER, *lines]) + line_end).encode()
    if bad_bytes:
        payload = payload.replace(b"u1", b"u\xff1").replace(b"i2", "i\u00e9".encode("latin-1"))
    if bom:
        payload = b"\xef\xbb\xbf" + payload
    path.write_bytes(payload)
    raw = read_landing_file(path, "events", "test")
    cleaned = clean_events(raw, CATALOG, WINDOW, "run-1", NOW, database=EXAMPLES_DATABASE)
    clean, quarantine = cleaned.clean, cleaned.quarantine
    accounting = row_accounting(raw, clean, quarantine, database=EXAMPLES_DATABASE)
    assert accounting["balanced"].all()
    # every line, in order; a record over several lines (RFC 4180) is numbered by its first
    numbered = raw["source_line"].to_list()
    assert numbered[0] == 2 and numbered == sorted(set(numbered))
    assert sum((r or "").count("\n") + 1 for r in raw["raw"].to_list()) == len(lines)
    assert len(raw) == len(clean) + len(quarantine)
    assert quarantine["reason"].null_count() == 0 and quarantine["detail"].null_count() == 0


def test_non_finite_numbers_and_near_duplicate_chains(tmp_path):
    raw = _events(
        tmp_path,
        [
            "e1,u1,s1,i1,purchase,2026-09-02T11:00:00.000Z,1e30,3,",  # bad_quantity (absurd)
            "e2,u1,s1,i1,purchase,2026-09-02T11:00:00.000Z,1,inf,",  # bad_price (not finite)
            "e3,u1,s1,i2,view,2026-09-02T12:00:00.000Z,,,",  # kept
            "e4,u1,s1,i2,view,2026-09-02T12:00:01.500Z,,,",  # near duplicate of e3
            "e5,u1,s1,i2,view,2026-09-02T12:00:03.000Z,,,",  # 3 s after the kept e3: kept
        ],
    )
    clean, quarantine = _clean(raw)
    assert quarantine["reason"].tolist() == ["bad_quantity", "bad_price", "near_duplicate_event"]
    assert clean["event_id"].tolist() == ["e3", "e5"]


# -- the two suite engines agree ---------------------------------------------------------------
def test_sql_engine_gives_gx_verdicts(tmp_path):
    """The pipeline's SQL evaluation of a suite matches GX's pandas engine, count for count."""
    from dagster_project.quality.validation import SuiteRunner
    from dagster_project.settings import EXPECTATIONS_DIR

    events = pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e2", "e4", None, "e6"],
            "user_id": ["u1", None, "u2", "u3", "u4", "u5"],
            "session_id": ["s1"] * 6,
            "item_id": ["i1", "i2", "i404", "i1", "i2", "i1"],
            "event_type": ["view", "view", "teleport", "purchase", "view", "view"],
            "event_time": pd.to_datetime(
                [
                    "2026-09-02",
                    "2026-09-03",
                    "2026-10-09",
                    "2026-09-04",
                    "2026-09-05",
                    "2071-01-01",
                ],
                utc=True,
            ),
            "quantity": [None, None, None, 0, None, None],
            "price": [None, None, None, -1.0, None, 5.0],
            "query": [None] * 6,
            "source": ["t"] * 6,
            "source_file": ["f"] * 6,
            "source_line": range(6),
            "ingested_at": pd.Timestamp("2026-11-30", tz="UTC"),
        }
    )
    path = tmp_path / "events_clean.parquet"
    events.to_parquet(path)
    parameters = {
        "known_item_ids": ["i1", "i2"],
        "window_start": WINDOW[0],
        "window_end": WINDOW[1],
        "now": NOW,
    }
    runner = SuiteRunner(tmp_path / "gx", EXPECTATIONS_DIR)
    sql = runner.validate_table("events_clean", path, parameters, run_name="test")
    gx_pandas = runner.validate("events_clean", events, parameters)

    def verdicts(outcome):
        return sorted(
            (
                o.expectation,
                o.column or "",
                o.success,
                o.unexpected_count,
                round(o.unexpected_percent, 9),
            )
            for o in outcome.outcomes
        )

    assert verdicts(sql) == verdicts(gx_pandas)
    assert not sql.success and len(sql.failed) >= 5
    assert sql.docs_page and Path(sql.docs_page).is_file()  # stored as a GX result, rendered


def test_drift_measures_shifts():
    import numpy as np

    from dagster_project.quality.drift import numeric_psi, psi

    rng = np.random.default_rng(0)
    same = numeric_psi(rng.normal(10, 2, 20_000), rng.normal(10, 2, 20_000))
    shifted = numeric_psi(rng.normal(10, 2, 20_000), rng.normal(10, 2, 20_000) * 100)  # cents
    assert same < 0.01 and shifted > 1
    assert psi(np.array([80, 10, 8, 2]), np.array([80, 10, 8, 2])) == 0
    assert psi(np.array([80, 10, 8, 2]), np.array([40, 30, 20, 10])) > 0.25


def test_drift_reads_the_latest_day_and_its_reference_window_alone(tmp_path):
    """Days older than the reference window change nothing: 40 days of events, the oldest
    priced in cents; the figures are those of the last 29 days alone."""
    import numpy as np

    from dagster_project.quality.drift import REFERENCE_DAYS, drift_figures

    out = layout(tmp_path)
    out.table("events_clean").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n, day in enumerate(pd.date_range("2026-10-01", periods=40, freq="D", tz="UTC")):
        rows = 300
        pd.DataFrame(
            {
                "user_id": rng.integers(0, 100, rows).astype(str),
                "event_type": rng.choice(["view", "add_to_cart", "purchase"], rows),
                "event_time": (
                    day + pd.to_timedelta(rng.integers(0, 86_400, rows), unit="s")
                ).astype("datetime64[us, UTC]"),
                "price": rng.normal(20, 4, rows) * (100 if n < 40 - REFERENCE_DAYS - 1 else 1),
                "query": None,
            }
        ).to_parquet(out.day_file("events_clean", f"{day:%Y-%m-%d}"))
    days, verdicts = drift_figures(out)
    assert len(days) == REFERENCE_DAYS and str(days["day"].iloc[0]) == "2026-10-13"
    observed = verdicts.set_index("metric")["observed"]
    assert observed["price_psi_vs_reference"] < 0.1  # the cents of the old days are not read
    assert not verdicts["warn"].any(), verdicts


def test_a_runs_event_days_are_read_from_its_partition_tags():
    from dagster_project.assets.quality import run_event_days

    assert run_event_days({"dagster/partition": "2026-11-05"}) == ["2026-11-05"]
    assert run_event_days(
        {
            "dagster/asset_partition_range_start": "2026-10-30",
            "dagster/asset_partition_range_end": "2026-11-02",
        }
    ) == ["2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02"]
    assert run_event_days({"recsys/trigger": "make demo"}) == []


def test_check_history_says_since_when(tmp_path):
    from dagster_project.quality.report import check_history
    from dagster_project.quality.validation import SuiteRunner
    from dagster_project.settings import EXPECTATIONS_DIR

    runner = SuiteRunner(tmp_path / "gx", EXPECTATIONS_DIR)
    items = pd.DataFrame(
        {
            "item_id": ["i1", "i2"],
            "title": ["a", "b"],
            "description": ["", ""],
            "category": ["A/B", "A/B"],
            "brand": ["x", "x"],
            "price": [1.0, 2.0],
            "available": [True, True],
            "listed_at": pd.Timestamp("2026-09-01", tz="UTC"),
            "source": "t",
            "source_file": "f",
            "source_line": [2, 3],
            "ingested_at": pd.Timestamp("2026-11-30", tz="UTC"),
        }
    )
    path = tmp_path / "items_clean.parquet"
    items.to_parquet(path)
    assert runner.validate_table("items_clean", path, run_name="r1").success
    items.loc[1, "item_id"] = "i1"  # a duplicate id from the second run on
    items.to_parquet(path)
    second = runner.validate_table("items_clean", path, run_name="r2")
    runner.validate_table("items_clean", path, run_name="r3")
    assert not second.success
    history = check_history(runner.validations_dir)
    failing = history[history["status"] == "FAILED"]
    assert len(failing) >= 1 and (failing["runs"] == 3).all()
    # failing since the second run: after the first (which passed), before the last
    assert (failing["failing_since"] > failing["first_run"]).all()
    assert (failing["failing_since"] < failing["last_run"]).all()


@pytest.mark.parametrize(
    ("sessions", "as_files"), [("from the source", True), ("derived", False), ("derived", True)]
)
def test_the_tiny_shop_cleaned_day_by_day_is_the_shop_cleaned_whole(
    tiny_layout, sessions, as_files, tmp_path
):
    """Every day of the generated shop (its planted duplicates and near duplicates included)
    cleaned after the day before gives what cleaning the whole history at once gives; with
    the source's session ids removed, the derived sessions that cross midnight too; with the
    look-back in memory and in files, as the pipeline keeps it."""
    landing = tiny_layout.landing
    items = clean_items(read_landing(landing, "items"), "run-1", NOW).clean["item_id"]
    raw = read_landing(landing, "events")
    if sessions == "derived":
        raw = raw.with_columns(session_id=pl.lit(None, pl.String))
    day = pl.col("source_file").str.extract(r"date=(\d{4}-\d{2}-\d{2})")
    days = [part for _, part in raw.with_columns(day=day).group_by("day", maintain_order=True)]
    assert len(days) > 3 and [d["day"][0] for d in days] == sorted(d["day"][0] for d in days)
    window = source_window(landing)
    whole = clean_events(raw, items, window, "run-1", NOW)
    by_day = _day_by_day(
        [d.drop("day") for d in days], items, window, NOW, tmp_path if as_files else None
    )
    assert by_day.clean.equals(whole.clean)
    assert by_day.quarantine.equals(whole.quarantine)
    assert {"duplicate_event", "near_duplicate_event"} <= set(whole.quarantine["reason"])


def test_a_clean_days_id_index_follows_its_file(tmp_path):
    """The pipeline writes a day's event-id index when it is missing, and again when it was
    written from another version of its file (a day cleaned again, a customer's rows
    deleted, an index of another copy), whatever the files' dates: an index fetched before
    its file (a machine of the shared store) is kept."""
    out = layout(tmp_path)
    day = out.day_file("events_clean", "2026-09-02")
    day.parent.mkdir(parents=True)
    pl.DataFrame({"event_id": ["e1", "e2"]}).write_parquet(day)
    with connect() as con:
        hashes = con.sql("SELECT hash('e1'), hash('e2'), hash('e3')").fetchall()[0]
    index = _event_id_hashes(out, day)
    assert sorted(pl.read_parquet(index)["id_hash"].to_list()) == sorted(hashes[:2])
    # the day cleaned again (same length), its file dated before its old index
    pl.DataFrame({"event_id": ["e3", "e1"]}).write_parquet(day)
    os.utime(day, (index.stat().st_mtime - 5, index.stat().st_mtime - 5))
    assert sorted(pl.read_parquet(_event_id_hashes(out, day))["id_hash"].to_list()) == sorted(
        [hashes[2], hashes[0]]
    )
    # an index without its file's fingerprint (of another copy, or of older code)
    pl.DataFrame({"id_hash": [1, 2]}, schema={"id_hash": pl.UInt64}).write_parquet(index)
    assert sorted(pl.read_parquet(_event_id_hashes(out, day))["id_hash"].to_list()) == sorted(
        [hashes[2], hashes[0]]
    )
    # a current index is left alone, even dated before its file (fetched first)
    os.utime(day, (index.stat().st_mtime + 10, index.stat().st_mtime + 10))
    written = index.stat().st_mtime_ns
    assert _event_id_hashes(out, day).stat().st_mtime_ns == written


def test_the_id_index_of_another_duckdb_version_is_removed(tmp_path):
    """After a DuckDB upgrade the old version's index (hashes it alone reads) is removed; this
    version's stays."""
    out = layout(tmp_path)
    day = out.day_file("events_clean", "2026-09-02")
    day.parent.mkdir(parents=True)
    pl.DataFrame({"event_id": ["e1"]}).write_parquet(day)
    current = _event_id_hashes(out, day)
    old = current.parent.with_name("duckdb-0.9.2") / day.name
    old.parent.mkdir()
    old.write_bytes(current.read_bytes())
    assert _drop_other_versions_of_the_index(out) == ["duckdb-0.9.2"]
    assert not old.parent.exists() and current.exists()
    assert _drop_other_versions_of_the_index(out) == []
