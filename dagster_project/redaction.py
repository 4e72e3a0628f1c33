"""A user's ids in the bytes of every file, found and redacted.

After a deletion request has removed a user's rows from the tables, their ids can still
stand in text the platform keeps beside them: Dagster's run and event-log databases (log
lines, asset metadata previews), captured stdout and stderr, the HTML data-quality reports,
Great Expectations' results and data docs, JSON summaries, and the free pages of a SQLite
file whose rows were deleted. This module searches every byte under a folder for the ids,
Parquet read uncompressed and gzip unpacked so that compression hides nothing, and
redacts what can be redacted in place:

- a text file: each mention replaced with `[forgotten]`, written atomically;
- a SQLite database: each text value that mentions an id rewritten the same way, then
  `VACUUM`, which drops deleted rows' bytes from free pages and the write-ahead log.

Anything else that still mentions an id (a Parquet file, a binary value) is returned as
left over, for the caller to report: rows are removed from tables by the deletion itself
(`privacy.forget_user_files`), never by rewriting bytes.
"""

from __future__ import annotations

import gzip
import io
import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import pyarrow.parquet as pq

from dagster_project.sql import sql_identifier
from dagster_project.storage import atomic_file

REDACTED = "[forgotten]"
SQLITE_MAGIC = b"SQLite format 3\x00"
PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"
_ID_CHARACTER = rb"[A-Za-z0-9_]"


def mention_pattern(ids: Iterable[str]) -> re.Pattern[bytes]:
    """Any of `ids` as a whole token (u12 does not match u123), in UTF-8 bytes."""
    tokens = sorted({str(i).encode() for i in ids if str(i)}, key=len, reverse=True)
    if not tokens:
        raise ValueError("no ids to look for")
    either = b"|".join(re.escape(t) for t in tokens)
    return re.compile(
        rb"(?<!" + _ID_CHARACTER + rb")(?:" + either + rb")(?!" + _ID_CHARACTER + rb")"
    )


def plain_bytes(path: Path) -> bytes:
    """A file's bytes as a byte search must see them: Parquet rewritten without compression
    or dictionaries, gzip unpacked, anything else as stored."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if head == PARQUET_MAGIC:
        buffer = io.BytesIO()
        pq.write_table(pq.read_table(path), buffer, compression="none", use_dictionary=False)
        return buffer.getvalue()
    if head[:2] == GZIP_MAGIC:
        return gzip.decompress(path.read_bytes())
    return path.read_bytes()


def files_mentioning(
    folder: Path, pattern: re.Pattern[bytes], skip: Iterable[Path] = ()
) -> dict[Path, int]:
    """Every file under `folder` (hidden ones included) whose plain bytes match `pattern`,
    with the number of matches; files under any folder of `skip` are not searched. A file
    that cannot be read as its kind is searched as stored."""
    skipped = [Path(s).resolve() for s in skip]
    hits: dict[Path, int] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or any(path.resolve().is_relative_to(s) for s in skipped):
            continue
        try:
            content = plain_bytes(path)
        except Exception:  # a damaged Parquet or gzip file: its bytes as they are
            content = path.read_bytes()
        count = len(pattern.findall(content))
        if count:
            hits[path] = count
    return hits


def _kind(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(8192)
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith((PARQUET_MAGIC, GZIP_MAGIC)) or b"\x00" in head:
        return "binary"
    return "text"


def _redact_text(path: Path, pattern: re.Pattern[bytes]) -> None:
    content = pattern.sub(REDACTED.encode(), path.read_bytes())
    with atomic_file(path, mode=path.stat().st_mode & 0o777) as tmp:
        tmp.write_bytes(content)


def _columns(connection: sqlite3.Connection) -> list[tuple[str, str]]:
    """(table, column) of every rowid table of a database."""
    tables = [
        name
        for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND sql NOT LIKE '%WITHOUT ROWID%'"
        )
    ]
    return [
        (table, column[1])
        for table in tables
        for column in connection.execute(f"PRAGMA table_info({sql_identifier(table)})")
    ]


def _redact_sqlite(path: Path, pattern: re.Pattern[bytes], ids: list[str]) -> None:
    """Rewrite every text value that mentions an id (SQLite picks the candidates by
    substring, the pattern decides), then VACUUM (deleted rows' bytes leave the free pages;
    the write-ahead log is checkpointed and emptied)."""
    text = re.compile(pattern.pattern.decode())
    contains = " OR ".join(["instr({column}, ?) > 0"] * len(ids))
    connection = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        for table, column in _columns(connection):
            quoted, name = sql_identifier(column), sql_identifier(table)
            rows = connection.execute(
                f"SELECT rowid, {quoted} FROM {name} WHERE typeof({quoted}) = 'text' "
                f"AND ({contains.format(column=quoted)})",
                ids,
            ).fetchall()
            for rowid, value in rows:
                redacted = text.sub(REDACTED, value)
                if redacted != value:
                    connection.execute(
                        f"UPDATE {name} SET {quoted} = ? WHERE rowid = ?", (redacted, rowid)
                    )
        connection.execute("COMMIT")
        connection.execute("VACUUM")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


def redact_mentions(
    folder: Path, ids: Iterable[str], skip: Iterable[Path] = ()
) -> tuple[list[Path], dict[Path, int]]:
    """Redact `ids` in every text file and SQLite database under `folder` that mentions
    them (see the module docstring). Returns (files redacted, files still mentioning an id
    with their counts), searching again after redacting."""
    ids = [str(i) for i in ids if str(i)]
    pattern = mention_pattern(ids)
    redacted: list[Path] = []
    for path in files_mentioning(folder, pattern, skip):
        for suffix in ("-wal", "-journal"):  # a database's log: redact the database
            if path.name.endswith(suffix) and path.with_name(path.name[: -len(suffix)]).is_file():
                path = path.with_name(path.name[: -len(suffix)])
        if path in redacted:
            continue
        kind = _kind(path)
        if kind == "sqlite":
            _redact_sqlite(path, pattern, ids)
        elif kind == "text":
            _redact_text(path, pattern)
        else:
            continue
        redacted.append(path)
    return redacted, files_mentioning(folder, pattern, skip)
