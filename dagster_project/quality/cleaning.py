"""Raw frames -> clean, typed tables plus a quarantine: every raw row ends in exactly one of them.

Rules run in a fixed order and the first one that fails gives the row its reason, so a row has
exactly one stable reason code (contracts.QUARANTINE_REASONS) and a sentence saying what was
wrong. `rule_hits` also counts, per rule, every row that breaks it whatever else is wrong with
the row: that is what an analyst compares with a source's known problems.

The rules are SQL run by DuckDB (vectorised, multi-threaded, spilling to disk under its memory
limit), so the same code cleans a test's ten rows and the `large` preset's 12 million. Input is
a raw frame (polars) or a raw Parquet file; output is polars frames, or Parquet files written
by DuckDB when `write_to` is given (then `Cleaned.clean` holds no rows, only the count).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl

from dagster_project.contracts import (
    EVENT_COLUMNS,
    EVENT_TYPE_ALIASES,
    ITEM_COLUMNS,
    NEAR_DUPLICATE_WINDOW,
    QUARANTINE_REASONS,
    SESSION_GAP,
)
from dagster_project.storage import connect, write_parquet_atomic

QUARANTINE_COLUMNS = [
    "table",
    "source",
    "source_file",
    "source_line",
    "raw",
    "reason",
    "detail",
    "run_id",
    "quarantined_at",
]
MAX_QUANTITY = 1_000_000


@dataclass
class Cleaned:
    """The outcome of cleaning one raw table."""

    clean: pl.DataFrame | None
    quarantine: pl.DataFrame
    rule_hits: dict[str, int] = field(default_factory=dict)
    clean_rows: int = 0


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _blank(col: str) -> str:
    return f"({col} IS NULL OR trim({col}) = '')"


def _quoted(col: str) -> str:
    return f"coalesce('''' || {col} || '''', '<empty>')"


def sql_number(col: str) -> str:
    """Text -> DOUBLE; text that is not a number, inf and NaN become NULL."""
    return f"CASE WHEN isfinite(TRY_CAST(trim({col}) AS DOUBLE)) THEN TRY_CAST(trim({col}) AS DOUBLE) END"


def sql_timestamp(col: str) -> str:
    """ISO 8601 text (an offset, `Z`, or none = UTC) -> TIMESTAMPTZ in UTC, else NULL."""
    return f"TRY_CAST(trim({col}) AS TIMESTAMPTZ)"


class _Rules:
    """Ordered row rules over a relation: the first failing one names the row's reason."""

    def __init__(self) -> None:
        self.rules: list[tuple[str, str, str | None]] = []

    def add(self, reason: str, broken: str, detail: str | None = None) -> None:
        """Rule `reason` fails where the SQL `broken` is true; `detail` words it (SQL text)."""
        self.rules.append((reason, f"coalesce({broken}, false)", detail))

    def reason_sql(self) -> str:
        whens = "".join(f" WHEN {broken} THEN '{code}'" for code, broken, _ in self.rules)
        return (
            "CASE WHEN parse_error IS NOT NULL THEN 'unparseable_row'"
            " WHEN source_reason IS NOT NULL THEN source_reason"
            f"{whens} END"
        )

    def hits_sql(self) -> str:
        counts = ", ".join(f"count_if({broken}) AS {code}" for code, broken, _ in self.rules)
        return f"count_if(parse_error IS NOT NULL) AS unparseable_row, {counts}"

    def detail_sql(self, late: dict[str, str] | None = None) -> str:
        """The sentence for a quarantined row, from its `reason`."""
        words = {code: detail for code, _, detail in self.rules} | (late or {})
        whens = "".join(
            f" WHEN reason = '{code}' THEN {detail or _lit(QUARANTINE_REASONS[code])}"
            for code, detail in words.items()
        )
        return (
            "CASE WHEN reason = 'unparseable_row' THEN 'unparseable: ' || parse_error"
            " WHEN source_reason IS NOT NULL THEN coalesce(source_detail, source_reason)"
            f"{whens} END"
        )


def _register_raw(con: duckdb.DuckDBPyConnection, raw: pl.DataFrame | Path) -> None:
    """The raw input as view `raw_input` with a row key `_row` in raw order."""
    if isinstance(raw, Path):
        con.execute(
            "CREATE VIEW raw_input AS SELECT * EXCLUDE (file_row_number), file_row_number AS _row "
            f"FROM read_parquet({_lit(str(raw))}, file_row_number = true)"
        )
    else:
        con.register("raw_frame", raw.with_row_index("_row").to_arrow())
        con.execute("CREATE VIEW raw_input AS SELECT * FROM raw_frame")


def _source_reason_hits(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, int]:
    rows = con.execute(
        f"SELECT source_reason, count(*) FROM {table} WHERE source_reason IS NOT NULL GROUP BY 1"
    ).fetchall()
    return {code: int(n) for code, n in rows}


def _quarantine_sql(table_name: str, columns: list[str], run_id: str, now: datetime) -> str:
    """SELECT list of the quarantine's shape; Parquet records keep their fields as JSON."""
    fields = ", ".join(f"{_lit(c)}, {c}" for c in columns)
    return (
        f'{_lit(table_name)} AS "table", source, source_file, CAST(source_line AS BIGINT) AS source_line, '
        f"coalesce(raw, CAST(json_object({fields}) AS VARCHAR)) AS raw, "
        f"reason, detail, {_lit(run_id)} AS run_id, "
        f"TIMESTAMPTZ {_lit(now.isoformat())} AS quarantined_at"
    )


def _to_polars(con: duckdb.DuckDBPyConnection, query: str) -> pl.DataFrame:
    return pl.from_arrow(con.sql(query).to_arrow_table())  # type: ignore[return-value]


def clean_items(raw: pl.DataFrame | Path, run_id: str, now: datetime) -> Cleaned:
    """Raw catalog rows -> items_clean and quarantine."""
    con = connect()
    _register_raw(con, raw)
    rules = _Rules()
    rules.add("null_item_id", _blank("item_id"))
    rules.add(
        "bad_price",
        f"price IS NOT NULL AND {sql_number('price')} IS NULL",
        f"'price ' || {_quoted('price')} || ' is not a finite number'",
    )
    rules.add(
        "non_positive_price",
        f"{sql_number('price')} <= 0",
        f"'price ' || {_quoted('price')} || ' is not positive'",
    )
    rules.add(
        "bad_timestamp",
        f"listed_at IS NOT NULL AND {sql_timestamp('listed_at')} IS NULL",
        f"'listed_at ' || {_quoted('listed_at')} || ' cannot be parsed'",
    )
    con.execute(
        f"CREATE TEMP TABLE checked AS SELECT *, {rules.reason_sql()} AS reason0 FROM raw_input"
    )
    hits = dict(zip(*_hits(con, rules), strict=True))
    hits |= _source_reason_hits(con, "checked")
    con.execute(
        "CREATE TEMP TABLE judged AS SELECT *, coalesce(reason0, CASE WHEN row_number() OVER "
        "(PARTITION BY item_id ORDER BY source_file, source_line) > 1 THEN 'duplicate_item' END) AS reason "
        "FROM checked"
    )
    hits["duplicate_item"] = con.execute(
        "SELECT count(*) FROM judged WHERE reason = 'duplicate_item'"
    ).fetchall()[0][0]
    detail = rules.detail_sql(
        {"duplicate_item": f"'item ' || {_quoted('item_id')} || ' appears earlier in the catalog'"}
    )
    items = _to_polars(
        con,
        f"""SELECT item_id, coalesce(title, '') AS title, coalesce(description, '') AS description,
            coalesce(category, 'Unknown') AS category, coalesce(brand, 'Unknown') AS brand,
            {sql_number("price")} AS price,
            lower(trim(coalesce(available, 'true'))) IN ('true', '1', 'yes', 'y') AS available,
            {sql_timestamp("listed_at")} AS listed_at, source, source_file,
            CAST(source_line AS BIGINT) AS source_line,
            TIMESTAMPTZ {_lit(now.isoformat())} AS ingested_at
        FROM judged WHERE reason IS NULL ORDER BY source_file, source_line""",
    )
    quarantine = _to_polars(
        con,
        f"SELECT {_quarantine_sql('items', ITEM_COLUMNS, run_id, now)} FROM "
        f"(SELECT *, {detail} AS detail FROM judged WHERE reason IS NOT NULL) ORDER BY source_file, source_line",
    )
    con.close()
    return Cleaned(items, quarantine, {k: int(v) for k, v in hits.items()}, items.height)


def _hits(con: duckdb.DuckDBPyConnection, rules: _Rules) -> tuple[list[str], tuple]:
    names = ["unparseable_row", *[code for code, _, _ in rules.rules]]
    return names, con.execute(f"SELECT {rules.hits_sql()} FROM checked").fetchall()[0]


def _event_type_sql() -> str:
    cases = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in EVENT_TYPE_ALIASES.items())
    return f"CASE lower(trim(event_type)) {cases} END"


def _near_duplicates(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Rows within NEAR_DUPLICATE_WINDOW after the last *kept* event of the same key.

    Pairs are found in SQL; only runs of three or more close events (rare) are walked one by
    one, so a chain is measured from the event that was kept.
    """
    window_us = int(NEAR_DUPLICATE_WINDOW.total_seconds() * 1_000_000)
    con.execute(
        f"""CREATE TEMP TABLE near_pairs AS SELECT * FROM (
            SELECT _row, user_id, item_id, etype, sid, t,
                epoch_us(t) - lag(epoch_us(t)) OVER w <= {window_us}
                    AND lag(user_id) OVER w = user_id AND lag(item_id) OVER w = item_id
                    AND lag(etype) OVER w = etype AND lag(sid) OVER w = sid AS near,
                lag(_row) OVER w AS previous
            FROM survivors WHERE NOT duplicate
            WINDOW w AS (PARTITION BY hash(user_id, item_id, etype, sid)
                         ORDER BY t, source_file, source_line)
        ) WHERE near"""
    )
    near = {r[0] for r in con.execute("SELECT _row FROM near_pairs").fetchall()}
    chained = con.execute(
        "SELECT DISTINCT user_id, item_id, etype, sid FROM near_pairs WHERE previous IN "
        "(SELECT _row FROM near_pairs)"
    ).fetchall()
    for key in chained:
        members = con.execute(
            "SELECT _row, epoch_us(t) FROM survivors WHERE NOT duplicate AND user_id = ? AND "
            "item_id = ? AND etype = ? AND sid = ? ORDER BY t, source_file, source_line",
            list(key),
        ).fetchall()
        kept_at = None
        for row, t in members:
            if kept_at is not None and t - kept_at <= window_us:
                near.add(row)
            else:
                near.discard(row)
                kept_at = t
    return sorted(near)


def clean_events(
    raw: pl.DataFrame | Path,
    item_ids: pl.Series,
    window: tuple[datetime, datetime],
    run_id: str,
    now: datetime,
    quarantined_item_ids: pl.Series | None = None,
    write_to: tuple[Path, Path] | None = None,
) -> Cleaned:
    """Raw behaviour rows -> events_clean and quarantine, checked against the clean catalog.

    `write_to` = (clean Parquet, quarantine Parquet): write there instead of returning the
    clean rows (the way to clean tens of millions of rows in bounded memory).
    """
    start, end = window
    con = connect()
    _register_raw(con, raw)
    con.register("catalog", pl.DataFrame({"item_id": item_ids.cast(pl.String)}).to_arrow())
    con.register(
        "catalog_quarantined",
        pl.DataFrame(
            {
                "item_id": (
                    quarantined_item_ids
                    if quarantined_item_ids is not None
                    else pl.Series([], dtype=pl.String)
                ).cast(pl.String)
            }
        ).to_arrow(),
    )
    t, price, qty = "t", "price_number", "quantity_number"
    rules = _Rules()
    rules.add("null_user_id", _blank("user_id"))
    rules.add("null_item_id", _blank("item_id"))
    rules.add(
        "bad_event_type",
        "etype IS NULL",
        f"'event type ' || {_quoted('event_type')} || ' is unknown'",
    )
    rules.add(
        "bad_timestamp",
        f"{t} IS NULL",
        f"'timestamp ' || {_quoted('event_time')} || ' cannot be parsed'",
    )
    rules.add(
        "future_timestamp",
        f"{t} > TIMESTAMPTZ {_lit(now.isoformat())}",
        f"'timestamp ' || {_quoted('event_time')} || "
        f"{_lit(f' is after the ingestion time {now:%Y-%m-%d %H:%M} UTC')}",
    )
    rules.add(
        "outside_source_window",
        f"{t} < TIMESTAMPTZ {_lit(start.isoformat())} OR {t} >= TIMESTAMPTZ {_lit(end.isoformat())}",
        f"'timestamp ' || {_quoted('event_time')} || "
        + _lit(
            f" is outside the declared window {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC"
            " (end excluded)"
        ),
    )
    rules.add(
        "bad_price",
        f"price IS NOT NULL AND {price} IS NULL",
        f"'price ' || {_quoted('price')} || ' is not a finite number'",
    )
    rules.add(
        "non_positive_price",
        f"{price} <= 0",
        f"'price ' || {_quoted('price')} || ' is not positive'",
    )
    rules.add(
        "bad_quantity",
        f"quantity IS NOT NULL AND NOT coalesce({qty} > 0 AND {qty} <= {MAX_QUANTITY} "
        f"AND {qty} = round({qty}), false)",
        f"'quantity ' || {_quoted('quantity')} || ' is not a whole number between 1 and 1,000,000'",
    )
    # Typed columns first (one projection); the reason refers to them.
    con.execute(
        f"""CREATE TEMP TABLE checked AS SELECT *, {rules.reason_sql()} AS reason0 FROM (
            SELECT *, {_event_type_sql()} AS etype, {sql_timestamp("event_time")} AS {t},
            {sql_number("price")} AS {price}, {sql_number("quantity")} AS {qty},
            CASE WHEN NOT {_blank("event_id")} THEN event_id ELSE 'h' || substr(md5(
                concat_ws('|', source, user_id, item_id, event_type, event_time)), 1, 16) END AS eid,
            CASE WHEN NOT {_blank("session_id")} THEN session_id END AS sid
        FROM raw_input)"""
    )
    names, values = _hits(con, rules)
    hits = dict(zip(names, values, strict=True)) | _source_reason_hits(con, "checked")

    # Sessions the source did not carry: 30 minutes of inactivity end one.
    gap_us = int(SESSION_GAP.total_seconds() * 1_000_000)
    con.execute(
        f"""CREATE TEMP TABLE derived_sessions AS
        SELECT _row, user_id || '@' || strftime(first_value({t}) OVER (PARTITION BY user_id, n ORDER BY {t}, _row), '%Y%m%dT%H%M%S.%gZ') AS derived
        FROM (SELECT _row, user_id, {t}, sum(new::INT) OVER (PARTITION BY user_id ORDER BY {t}, _row) AS n
              FROM (SELECT _row, user_id, {t}, coalesce(epoch_us({t}) - lag(epoch_us({t})) OVER
                    (PARTITION BY user_id ORDER BY {t}, _row) > {gap_us}, true) AS new
                    FROM checked WHERE reason0 IS NULL AND sid IS NULL))"""
    )
    con.execute(
        """CREATE TEMP TABLE survivors AS
        SELECT c._row, c.eid, coalesce(c.sid, d.derived) AS sid, c.user_id, c.item_id, c.etype, c.t,
            c.source_file, c.source_line, false AS duplicate
        FROM checked c LEFT JOIN derived_sessions d USING (_row) WHERE c.reason0 IS NULL"""
    )
    # Later rules, on the rows still standing: repeated ids, near duplicates, unknown items.
    # Repeated ids: candidates by a 64-bit hash, then compared exactly; the first occurrence
    # (by file and line) is kept.
    con.execute(
        """UPDATE survivors SET duplicate = true WHERE _row IN (
            SELECT _row FROM (
                SELECT _row, row_number() OVER (PARTITION BY eid ORDER BY source_file, source_line) AS n
                FROM survivors WHERE hash(eid) IN (
                    SELECT h FROM (SELECT hash(eid) AS h FROM survivors) GROUP BY h HAVING count(*) > 1))
            WHERE n > 1)"""
    )
    near = _near_duplicates(con)
    con.register("near_rows", pl.DataFrame({"_row": near}, schema={"_row": pl.Int64}).to_arrow())
    con.execute(
        """CREATE TEMP TABLE late AS
        SELECT _row, 'duplicate_event' AS late_reason FROM survivors WHERE duplicate
        UNION ALL SELECT _row, 'near_duplicate_event' FROM near_rows
        UNION ALL SELECT _row, 'unknown_item' FROM survivors s
            WHERE NOT duplicate AND _row NOT IN (SELECT _row FROM near_rows)
            AND NOT EXISTS (SELECT 1 FROM catalog c WHERE c.item_id = s.item_id)"""
    )
    for code, n in con.execute("SELECT late_reason, count(*) FROM late GROUP BY 1").fetchall():
        hits[code] = int(n)
    for code in ("duplicate_event", "near_duplicate_event", "unknown_item"):
        hits.setdefault(code, 0)

    clean_sql = f"""SELECT c.eid AS event_id, c.user_id, coalesce(c.sid, d.derived) AS session_id,
            c.item_id, c.etype AS event_type, CAST(c.{t} AS TIMESTAMPTZ) AS event_time,
            CAST(c.{qty} AS BIGINT) AS quantity, c.{price} AS price, c.query, c.source,
            c.source_file, CAST(c.source_line AS BIGINT) AS source_line,
            TIMESTAMPTZ {_lit(now.isoformat())} AS ingested_at
        FROM checked c LEFT JOIN derived_sessions d USING (_row)
        WHERE c.reason0 IS NULL AND NOT EXISTS (SELECT 1 FROM late l WHERE l._row = c._row)"""
    detail = rules.detail_sql(
        {
            "duplicate_event": f"'event ' || {_quoted('eid')} || ' was already seen'",
            "near_duplicate_event": None,
            "unknown_item": f"""CASE WHEN item_id IN (SELECT item_id FROM catalog_quarantined)
                THEN 'item ' || {_quoted("item_id")} || ' was quarantined from the catalog'
                ELSE 'item ' || {_quoted("item_id")} || ' is not in the catalog' END""",
        }
    )
    quarantine_sql = f"""SELECT {_quarantine_sql("behaviour_events", EVENT_COLUMNS, run_id, now)} FROM (
        SELECT *, {detail} AS detail FROM (
            SELECT c.*, coalesce(c.reason0, l.late_reason) AS reason
            FROM checked c LEFT JOIN late l USING (_row)
            WHERE c.reason0 IS NOT NULL OR l.late_reason IS NOT NULL))
        ORDER BY source_file, source_line"""
    quarantine = _to_polars(con, quarantine_sql)
    if write_to is None:
        clean = _to_polars(con, clean_sql)
        rows = clean.height
    else:
        clean_path, quarantine_path = write_to
        write_parquet_atomic(quarantine, quarantine_path)
        clean, rows = None, _copy_parquet(con, clean_sql, clean_path)
    con.close()
    return Cleaned(clean, quarantine, {k: int(v) for k, v in hits.items()}, rows)


def _copy_parquet(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> int:
    """COPY a query to Parquet (zstd) atomically (temporary file, then rename); returns rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        con.execute(
            f"COPY ({query}) TO {_lit(str(tmp))} "
            "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 500000)"
        )
        rows = con.execute(f"SELECT count(*) FROM read_parquet({_lit(str(tmp))})").fetchall()[0][0]
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return int(rows)


def row_accounting(
    raw: pl.DataFrame, clean: pl.DataFrame, quarantine: pl.DataFrame
) -> pl.DataFrame:
    """Per source file: rows read, clean, quarantined, and whether they add up."""

    def count(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        return frame.group_by("source_file").agg(pl.len().cast(pl.Int64).alias(name))

    out = (
        count(raw, "rows_read")
        .join(count(clean, "rows_clean"), on="source_file", how="full", coalesce=True)
        .join(count(quarantine, "rows_quarantined"), on="source_file", how="full", coalesce=True)
        .fill_null(0)
        .sort("source_file")
    )
    return out.with_columns(
        balanced=pl.col("rows_read") == pl.col("rows_clean") + pl.col("rows_quarantined")
    )
