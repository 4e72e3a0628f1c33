"""Deletion requests: by reference, planned before anything changes, exact on odd bytes."""

import json
from pathlib import Path

import polars as pl
import pytest

from dagster_project.privacy import (
    DeletionError,
    close_deletion_request,
    file_deletion_request,
    forget_user_files,
    read_deletion_request,
)
from dagster_project.pseudonyms import pseudonym_sql, pseudonymise, register_pseudonym_key
from dagster_project.settings import layout
from dagster_project.sql import connect

HEADER = b"event_id,user_id,session_id,item_id,event_type,event_time,quantity,price,query\n"


def _data(root: Path):
    out = layout(root)
    (out.landing / "events").mkdir(parents=True)
    (out.landing / "source.json").write_text(
        json.dumps({"source": "shop", "window_start": "2026-09-01", "window_end": "2026-10-01"})
    )
    latin1 = "caf\u00e9".encode("latin-1")  # not UTF-8: must come back byte for byte
    (out.landing / "events" / "day1.csv").write_bytes(
        HEADER
        + b"e1,u1,,i1,view,2026-09-02T10:00:00Z,,,\n"
        + b"e2,u2,,i1,view,2026-09-02T10:00:00Z,,,"
        + latin1
        + b"\n"
        + b"e3,u1,,i2,view,2026-09-02T11:00:00Z,,,\n"
    )
    (user,) = pseudonymise(["u1"])
    out.tables.mkdir(parents=True)
    pl.DataFrame({"user_id": [user, "other"], "x": [1, 2]}).write_parquet(
        out.tables / "events_clean.parquet"
    )
    return out


def test_a_request_is_filed_by_reference_and_closed(tmp_path):
    out = layout(tmp_path)
    request_id = file_deletion_request(out, "u1")
    path = tmp_path / "privacy" / "requests" / f"{request_id}.txt"
    assert "u1" not in request_id and path.stat().st_mode & 0o077 == 0
    assert read_deletion_request(out, request_id) == "u1"
    close_deletion_request(out, request_id)
    with pytest.raises(ValueError, match="no deletion request"):
        read_deletion_request(out, request_id)
    with pytest.raises(ValueError, match="not a deletion request id"):
        read_deletion_request(out, "u1")


def test_forgetting_keeps_other_bytes_exact_and_changes_nothing_on_failure(tmp_path):
    out = _data(tmp_path)
    csv_path = out.landing / "events" / "day1.csv"
    table = out.tables / "events_clean.parquet"
    broken = out.tables / "zz_broken.parquet"
    broken.write_bytes(b"PAR1 not really parquet")
    before = {p: p.read_bytes() for p in (csv_path, table)}
    with pytest.raises(DeletionError, match=r"zz_broken\.parquet.*nothing was changed"):
        forget_user_files(out, "u1")
    assert {p: p.read_bytes() for p in (csv_path, table)} == before  # planned, not half done
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no staged file left behind
    broken.unlink()
    removed = forget_user_files(out, "u1")
    assert removed == {"landing/events/day1.csv": 2, "tables/events_clean.parquet": 1}
    assert csv_path.read_bytes() == HEADER + b"e2,u2,,i1,view,2026-09-02T10:00:00Z,,,caf\xe9\n"
    assert pl.read_parquet(table)["user_id"].to_list() == ["other"]


def test_mentions_are_found_under_compression_and_redacted_in_text_and_sqlite(tmp_path):
    import gzip
    import sqlite3

    from dagster_project.redaction import (
        REDACTED,
        files_mentioning,
        mention_pattern,
        redact_mentions,
    )

    (tmp_path / "report.html").write_text("<td>u12</td><td>u123</td><td>p00ff</td>")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "run.out").write_text("flagged u12, kept u1234\n")
    database = tmp_path / "runs.db"
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT, key BLOB)")
    connection.executemany(
        "INSERT INTO events (body, key) VALUES (?, ?)",
        [('{"user": "u12"}', b"a"), ('{"user": "u123"}', b"b"), ("x" * 500 + "p00ff", b"c")],
    )
    connection.commit()
    connection.execute("DELETE FROM events WHERE id = 3")  # its bytes stay in free pages
    connection.commit()
    connection.close()
    pl.DataFrame({"user_id": ["u12", "u9"]}).write_parquet(tmp_path / "t.parquet")
    (tmp_path / "export.csv.gz").write_bytes(gzip.compress(b"user_id\nu12\n"))
    pattern = mention_pattern(["u12", "p00ff"])
    found = files_mentioning(tmp_path, pattern)
    assert {p.name for p in found} >= {"report.html", "run.out", "t.parquet", "export.csv.gz"}
    assert any(p.name.startswith("runs.db") for p in found)  # the database or its log
    redacted, left = redact_mentions(tmp_path, ["u12", "p00ff"])
    assert {p.name for p in redacted} == {"report.html", "run.out", "runs.db"}
    assert {p.name for p in left} == {"t.parquet", "export.csv.gz"}  # rows: not bytes to edit
    assert (tmp_path / "report.html").read_text() == (
        f"<td>{REDACTED}</td><td>u123</td><td>{REDACTED}</td>"
    )
    assert (tmp_path / "logs" / "run.out").read_text() == f"flagged {REDACTED}, kept u1234\n"
    with sqlite3.connect(database) as connection:
        bodies = [b for (b,) in connection.execute("SELECT body FROM events ORDER BY id")]
    assert bodies == [f'{{"user": "{REDACTED}"}}', '{"user": "u123"}']
    assert b"p00ff" not in database.read_bytes()  # the deleted row's bytes are gone too


@pytest.mark.parametrize("key", [b"k", b"K" * 64, b"L" * 65, bytes(range(256))])
def test_pseudonyms_in_sql_are_the_pseudonyms(key):
    """DuckDB's HMAC (cleaning's, for whole tables) gives what `pseudonymise` gives, for
    keys shorter than, as long as and longer than SHA-256's block, and any text."""
    ids = ["u1", "ümlaut-ß", "", "x" * 200, "a'b", "42", "tab\there", "日本"]
    with connect() as con:
        register_pseudonym_key(con, key)
        con.register("ids", pl.DataFrame({"user_id": ids}).to_arrow())
        got = con.sql(f"SELECT {pseudonym_sql('user_id')} FROM ids").fetchall()
    assert [p for (p,) in got] == pseudonymise(ids, key)
