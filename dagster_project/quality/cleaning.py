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

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from dagster_project.contracts import (
    EVENT_COLUMNS,
    EVENT_TYPE_ALIASES,
    ITEM_COLUMNS,
    NEAR_DUPLICATE_WINDOW,
    QUARANTINE_REASONS,
    SESSION_GAP,
)
from dagster_project.pseudonyms import pseudonym_sql, register_pseudonym_key
from dagster_project.sources.raw_table import raw_relation
from dagster_project.sql import (
    connect,
    copy_to_parquet,
    parquet_relation,
    query_polars,
    sql_text,
)
from dagster_project.storage import write_parquet_atomic

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
QUARANTINE_SCHEMA = {
    c: pl.Int64 if c == "source_line" else pl.Datetime("us", "UTC") if c == "quarantined_at"
    else pl.String
    for c in QUARANTINE_COLUMNS
}  # fmt: skip
MAX_QUANTITY = 1_000_000
# What a look-back (`clean_events(earlier=...)`) needs of earlier days' clean events, and how
# many days before a day the pipeline gives it whole: a session or a near duplicate across
# midnight needs the day before (event ids are checked against every earlier day).
LOOK_BACK_COLUMNS = ["event_id", "user_id", "session_id", "item_id", "event_type", "event_time"]
LOOK_BACK_DAYS = 2
# Where a clean day's event-id index goes under the tables (`write_event_id_hashes`; an index,
# not a table: hence the `_`). It holds DuckDB's own 64-bit hash of each id, which may change
# between DuckDB versions, so an index is read only by the version it names.
EVENT_ID_HASHES = f"_event_id_hashes/duckdb-{duckdb.__version__}"
INDEXED_FILE_KEY = "indexed_file"  # in an index's footer: its clean file's fingerprint


@dataclass
class Cleaned:
    """The outcome of cleaning one raw table."""

    clean: pl.DataFrame | None
    quarantine: pl.DataFrame
    rule_hits: dict[str, int] = field(default_factory=dict)
    clean_rows: int = 0


def _blank(col: str) -> str:
    # trim only where the first character could be a space (trim allocates: 12M rows add up)
    return f"({col} IS NULL OR (ascii({col}) <= 32 AND trim({col}) = ''))"


def _quoted(col: str) -> str:
    return f"coalesce('''' || {col} || '''', '<empty>')"


def sql_number(col: str) -> str:
    """Text -> DOUBLE; text that is not a number, inf and NaN become NULL."""
    return f"CASE WHEN isfinite(TRY_CAST({col} AS DOUBLE)) THEN TRY_CAST({col} AS DOUBLE) END"


def sql_timestamp(col: str) -> str:
    """ISO 8601 text (an offset, `Z`, or none = UTC) -> TIMESTAMPTZ in UTC, else NULL."""
    return f"TRY_CAST({col} AS TIMESTAMPTZ)"  # DuckDB's cast ignores surrounding spaces


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

    def codes(self) -> list[str]:
        """Rule codes by bit: bit 0 unparseable, bit 1 an adapter's rejection, then the rules."""
        return ["unparseable_row", "source_reason", *[code for code, _, _ in self.rules]]

    def mask_sql(self) -> str:
        """Every broken rule of a row as one bit mask (see `codes`)."""
        bits = [
            "(parse_error IS NOT NULL)::UINTEGER",
            "((source_reason IS NOT NULL)::UINTEGER << 1)",
            *[f"(({broken})::UINTEGER << {k + 2})" for k, (_, broken, _) in enumerate(self.rules)],
        ]
        return " | ".join(bits)

    def hits_sql(self) -> str:
        counts = ", ".join(f"count_if({broken}) AS {code}" for code, broken, _ in self.rules)
        return f"count_if(parse_error IS NOT NULL) AS unparseable_row, {counts}"

    def detail_sql(self, late: dict[str, str] | None = None) -> str:
        """The sentence for a quarantined row, from its `reason`."""
        words = {code: detail for code, _, detail in self.rules} | (late or {})
        whens = "".join(
            f" WHEN reason = '{code}' THEN {detail or sql_text(QUARANTINE_REASONS[code])}"
            for code, detail in words.items()
        )
        return (
            "CASE WHEN reason = 'unparseable_row' THEN 'unparseable: ' || parse_error"
            " WHEN source_reason IS NOT NULL THEN coalesce(source_detail, source_reason)"
            f"{whens} END"
        )


def _register_raw(con: duckdb.DuckDBPyConnection, raw: pl.DataFrame | Path) -> None:
    """The raw input as view `raw_input` with a row key `_row` ordered by file and line: a raw
    table folder (see sources.raw_table.ingest_landing) or a raw frame."""
    if isinstance(raw, Path):
        con.execute(f"CREATE TEMP VIEW raw_input AS SELECT * FROM {raw_relation(raw)}")
    else:
        con.register(
            "raw_frame",
            raw.with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64)).to_arrow(),
        )
        con.execute("CREATE TEMP VIEW raw_input AS SELECT * FROM raw_frame")


def _source_reason_hits(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, int]:
    rows = con.execute(
        f"SELECT source_reason, count(*) FROM {table} WHERE source_reason IS NOT NULL GROUP BY 1"
    ).fetchall()
    return {code: int(n) for code, n in rows}


def _quarantine_sql(table_name: str, columns: list[str], run_id: str, now: datetime) -> str:
    """SELECT list of the quarantine's shape; Parquet records keep their fields as JSON."""
    fields = ", ".join(f"{sql_text(c)}, {c}" for c in columns)
    return (
        f'{sql_text(table_name)} AS "table", source, source_file, CAST(source_line AS BIGINT) AS source_line, '
        f"coalesce(raw, CAST(json_object({fields}) AS VARCHAR)) AS raw, "
        f"reason, detail, {sql_text(run_id)} AS run_id, "
        f"TIMESTAMPTZ {sql_text(now.isoformat())} AS quarantined_at"
    )


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
    items = query_polars(
        con,
        f"""SELECT item_id, coalesce(title, '') AS title, coalesce(description, '') AS description,
            coalesce(category, 'Unknown') AS category, coalesce(brand, 'Unknown') AS brand,
            {sql_number("price")} AS price,
            lower(trim(coalesce(available, 'true'))) IN ('true', '1', 'yes', 'y') AS available,
            {sql_timestamp("listed_at")} AS listed_at, source, source_file,
            CAST(source_line AS BIGINT) AS source_line,
            TIMESTAMPTZ {sql_text(now.isoformat())} AS ingested_at
        FROM judged WHERE reason IS NULL ORDER BY source_file, source_line""",
    )
    quarantine = query_polars(
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
    cases = " ".join(
        f"WHEN {sql_text(k)} THEN {sql_text(v)}" for k, v in EVENT_TYPE_ALIASES.items()
    )
    # The canonical spellings first, so most rows skip lower() and trim().
    exact = " ".join(
        f"WHEN {sql_text(v)} THEN {sql_text(v)}" for v in sorted(set(EVENT_TYPE_ALIASES.values()))
    )
    return f"CASE event_type {exact} ELSE CASE lower(trim(event_type)) {cases} END END"


def _first_reason(mask: pl.Expr, codes: list[str]) -> pl.Expr:
    """The code of the lowest set bit of `mask` (the first rule the row broke), else null."""
    reason = pl.lit(None, pl.String)
    for bit in reversed(range(len(codes))):
        reason = pl.when((mask & (1 << bit)) != 0).then(pl.lit(codes[bit])).otherwise(reason)
    return reason


def _near_duplicate_rows(rows: pl.DataFrame) -> list[int]:
    """Rows within NEAR_DUPLICATE_WINDOW after the last *kept* event of the same exact key.

    `rows`: _row, user_id, item_id, etype, sid, t (epoch microseconds); rows with a negative
    `_row` are earlier days' events (the look-back): kept already, never judged again. Pairs
    are vectorised; only runs of three or more close events (rare) are walked one by one, so
    a chain is measured from the event that was kept.
    """
    window_us = int(NEAR_DUPLICATE_WINDOW.total_seconds() * 1_000_000)
    key = ["user_id", "item_id", "etype", "sid"]
    rows = rows.sort([*key, "t", "_row"])
    same = pl.all_horizontal([pl.col(c) == pl.col(c).shift() for c in key]).fill_null(False)
    rows = rows.with_columns(
        near=(
            same & (pl.col("t") - pl.col("t").shift() <= window_us) & (pl.col("_row") >= 0)
        ).fill_null(False),
        group=(~same).cum_sum(),
    )
    near = set(rows.filter("near")["_row"].to_list())
    chained = rows.filter(pl.col("near") & pl.col("near").shift().fill_null(False))
    for group in chained["group"].unique().to_list():
        kept_at = None
        for row, t in rows.filter(pl.col("group") == group).select("_row", "t").iter_rows():
            if row >= 0 and kept_at is not None and t - kept_at <= window_us:
                near.add(row)
            else:
                near.discard(row)
                kept_at = t
    return sorted(near)


def _event_rules(window: tuple[datetime, datetime], now: datetime) -> _Rules:
    """The row rules of behaviour events, in order, over the columns of `typed`."""
    start, end = window
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
        "t IS NULL",
        f"'timestamp ' || {_quoted('event_time')} || ' cannot be parsed'",
    )
    rules.add(
        "future_timestamp",
        f"t > TIMESTAMPTZ {sql_text(now.isoformat())}",
        f"'timestamp ' || {_quoted('event_time')} || "
        f"{sql_text(f' is after the ingestion time {now:%Y-%m-%d %H:%M} UTC')}",
    )
    rules.add(
        "outside_source_window",
        f"t < TIMESTAMPTZ {sql_text(start.isoformat())} OR t >= TIMESTAMPTZ {sql_text(end.isoformat())}",
        f"'timestamp ' || {_quoted('event_time')} || "
        + sql_text(
            f" is outside the declared window {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC"
            " (end excluded)"
        ),
    )
    rules.add(
        "bad_price",
        "price IS NOT NULL AND price_number IS NULL",
        f"'price ' || {_quoted('price')} || ' is not a finite number'",
    )
    rules.add(
        "non_positive_price",
        "price_number <= 0",
        f"'price ' || {_quoted('price')} || ' is not positive'",
    )
    rules.add(
        "bad_quantity",
        "quantity IS NOT NULL AND NOT coalesce(quantity_number > 0 AND quantity_number <= "
        f"{MAX_QUANTITY} AND quantity_number = round(quantity_number), false)",
        f"'quantity ' || {_quoted('quantity')} || ' is not a whole number between 1 and 1,000,000'",
    )
    return rules


def _typed_events(rows: str) -> str:
    """SELECT of `rows` (a relation of raw events) with the typed columns the rules use."""
    return f"""SELECT *,
    {_event_type_sql()} AS etype,
    {sql_timestamp("event_time")} AS t,
    {sql_number("price")} AS price_number, {sql_number("quantity")} AS quantity_number,
    CASE WHEN NOT {_blank("event_id")} THEN event_id ELSE 'h' || substr(md5(
        concat_ws('|', source, user_id, item_id, event_type, event_time)), 1, 16) END AS eid,
    CASE WHEN NOT {_blank("session_id")} THEN session_id END AS source_sid
FROM {rows}"""


def _derive_sessions(con: duckdb.DuckDBPyConnection, earlier: bool) -> None:
    """Table `derived(_row, sid)`: sessions for the standing rows whose source carried none
    (`need_session(_row)`); 30 minutes of inactivity end a session, which is named by its
    first event. With a look-back (`earlier`), the earlier days' derived sessions of the same
    users (`earlier_rows`) take part: a session that holds an earlier event keeps that
    event's session id (it began before this batch)."""
    gap_us = int(SESSION_GAP.total_seconds() * 1_000_000)
    rows = (
        "SELECT _row, user_id, t, NULL::VARCHAR AS earlier_sid FROM typed "
        "WHERE _row IN (SELECT _row FROM need_session)"
    )
    named = "user_id || '@' || strftime(min(t) OVER session, '%Y%m%dT%H%M%S.%gZ')"
    if earlier:
        rows += " UNION ALL SELECT _row, user_id, t, sid FROM earlier_rows WHERE derived"
        named = f"coalesce(first_value(earlier_sid IGNORE NULLS) OVER session, {named})"
    con.execute(
        f"""CREATE TEMP TABLE derived AS
        SELECT _row, {named} AS sid
        FROM (SELECT *, sum(new::INT) OVER (PARTITION BY user_id ORDER BY t, _row) AS n
              FROM (SELECT *, coalesce(epoch_us(t) - lag(epoch_us(t)) OVER
                    (PARTITION BY user_id ORDER BY t, _row) > {gap_us}, true) AS new
                    FROM ({rows})))
        WINDOW session AS (PARTITION BY user_id, n ORDER BY t, _row
            ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
        QUALIFY _row >= 0"""
    )


def clean_events(
    raw: pl.DataFrame | Path,
    item_ids: pl.Series,
    window: tuple[datetime, datetime],
    run_id: str,
    now: datetime,
    quarantined_item_ids: pl.Series | None = None,
    write_to: tuple[Path, Path] | None = None,
    database: duckdb.DuckDBPyConnection | None = None,
    earlier: pl.DataFrame | Sequence[Path] | None = None,
    earlier_files: Sequence[Path] = (),
    earlier_id_hashes: Sequence[Path] = (),
) -> Cleaned:
    """Raw behaviour rows -> events_clean and quarantine, checked against the clean catalog.

    `raw` is a raw frame or a raw table folder. `write_to` = (clean Parquet, quarantine
    Parquet): write there instead of returning the clean rows (the way to clean tens of
    millions of rows in bounded memory). `database`: work in a cursor on this connection's
    database (`sql.connect`), for callers that clean many small batches.

    For cleaning one day at a time, the look-back: `earlier`, clean events of the days just
    before (`LOOK_BACK_COLUMNS`, as events_clean holds them; a frame, or their clean Parquet
    files); `earlier_files`, the clean Parquet files of every earlier day (only their event
    ids are read); and `earlier_id_hashes`, the event-id indexes (`write_event_id_hashes`) of
    some of them, named as the file they index: such a day's ids are read only where its
    index holds the hash of an id of this batch (8 bytes a row read, not the ids). A row
    repeating an
    event id of either is a `duplicate_event`; a row within NEAR_DUPLICATE_WINDOW after an
    `earlier` event with the same key is a `near_duplicate_event`; a derived session that
    takes up one of theirs across midnight keeps its id. Earlier events are kept already and
    never judged again, so a day cleaned after the days before it gives the rows the whole
    history cleaned at once gives, but where an earlier day's verdict would have changed
    (docs/quality.md, "One event day at a time"): an event arriving in a later day's files
    never changes an earlier day's verdicts, only clean events carry a session across
    midnight, and a near duplicate or session needs its earlier event within `earlier`.

    One streaming pass gives every row its rule bits, its time and 64-bit hashes of its id and
    of its (user, item, type, session) key; repeated ids and near duplicates are then decided
    exactly, on the few rows whose hashes repeat; one more pass writes the clean rows.
    """
    with contextlib.closing(connect(database=database)) as con:  # closed on errors too
        _register_event_inputs(con, raw, item_ids, quarantined_item_ids)
        _pseudonymise_user_ids(con)
        rules = _event_rules(window, now)
        looking_back = bool(earlier_files) or _any_recent(earlier)
        verdicts = _row_verdicts(con, rules, looking_back)
        hits = _rule_hits(con, verdicts, rules.codes())
        standing = verdicts.filter(pl.col("mask") == 0).drop("mask")
        looked_back = _register_look_back(
            con, earlier, _EarlierDays(earlier_files, earlier_id_hashes), standing
        )
        standing, derived = _with_derived_sessions(con, standing, looked_back)
        late = _late_rejections(con, verdicts, standing, derived, looked_back)
        hits |= {code: len(rows) for code, rows in late.items()}
        rejected = _rejected_rows(verdicts, late, rules.codes())
        del verdicts, standing
        con.register("rejected", rejected.to_arrow())
        quarantine = (
            query_polars(con, _events_quarantine_sql(rules, run_id, now))
            if rejected.height
            else pl.DataFrame(schema=QUARANTINE_SCHEMA)  # binding its SQL cost ~10 ms
        )
        clean, rows = _clean_event_rows(con, _clean_events_sql(derived, now), quarantine, write_to)
        return Cleaned(clean, quarantine, hits, rows)


def _register_event_inputs(
    con: duckdb.DuckDBPyConnection,
    raw: pl.DataFrame | Path,
    item_ids: pl.Series,
    quarantined_item_ids: pl.Series | None,
) -> None:
    """What the event rules read: view `raw_input`, the clean catalog's ids (`catalog`), the
    ids quarantined from it (`catalog_quarantined`) and `typed` (raw rows, typed): a view
    over a raw table folder, streamed by each query, and a table for a frame, which is in
    memory already (the intake's small batches then type their rows once, not once per
    query: binding the typing's SQL cost more than running it)."""
    _register_raw(con, raw)
    con.register("catalog", pa.table({"item_id": item_ids.cast(pl.String).to_arrow()}))
    held = (
        quarantined_item_ids if quarantined_item_ids is not None else pl.Series([], dtype=pl.String)
    )
    con.register("catalog_quarantined", pa.table({"item_id": held.cast(pl.String).to_arrow()}))
    kind = "VIEW" if isinstance(raw, Path) else "TABLE"
    con.execute(f"CREATE TEMP {kind} typed AS {_typed_events('raw_input')}")


def _row_verdicts(
    con: duckdb.DuckDBPyConnection, rules: _Rules, looking_back: bool
) -> pl.DataFrame:
    """One streaming pass over `typed`: per row its broken rules as bits (`mask`), its time
    (`t`, epoch microseconds), hashes of its id and of its (user, item, type, session) key,
    whether its item is in the catalog and whether its source gave no session; for a
    look-back, also the hash of its (user, item, type) (`item_key_hash`, see
    `_with_look_back_candidates`)."""
    item_key = ", hash(user_id, item_id, etype) AS item_key_hash" if looking_back else ""
    return query_polars(
        con,
        f"""SELECT _row, {rules.mask_sql()} AS mask, epoch_us(t) AS t, hash(eid) AS id_hash,
                hash(user_id, item_id, etype, source_sid) AS key_hash{item_key},
                item_id IN (SELECT item_id FROM catalog) AS known, source_sid IS NULL AS no_session
            FROM typed""",
    )


def _rule_hits(
    con: duckdb.DuckDBPyConnection, verdicts: pl.DataFrame, codes: list[str]
) -> dict[str, int]:
    """Rows breaking each row rule, whatever else is wrong with them, then the rows of each
    reason an adapter rejected (see `_Rules.codes`)."""
    mask = pl.col("mask")
    counts = verdicts.select(
        [((mask & (1 << b)) != 0).sum().alias(str(b)) for b in range(len(codes))]
    ).row(0)
    hits = {code: int(n) for code, n in zip(codes, counts, strict=True) if code != "source_reason"}
    if verdicts.select(((mask & 2) != 0).any()).item():
        hits |= _source_reason_hits(con, "raw_input")
    return hits


def _any_recent(earlier: pl.DataFrame | Sequence[Path] | None) -> bool:
    return earlier is not None and (
        earlier.height > 0 if isinstance(earlier, pl.DataFrame) else len(earlier) > 0
    )


def _register_recent(
    con: duckdb.DuckDBPyConnection, earlier: pl.DataFrame | Sequence[Path] | None
) -> None:
    """The look-back's recent events as `earlier` (LOOK_BACK_COLUMNS): a frame, or clean
    files read where they lie (only the rows the look-back needs are ever materialised)."""
    if not _any_recent(earlier):
        earlier = pl.DataFrame(schema=dict.fromkeys(LOOK_BACK_COLUMNS, pl.String)).with_columns(
            pl.col("event_time").cast(pl.Datetime("us", "UTC"))
        )
    if isinstance(earlier, pl.DataFrame):
        columns, relation = earlier.columns, "recent_frame"
        con.register(relation, earlier.to_arrow())
    else:
        relation = parquet_relation(list(earlier))
        columns = [name for name, *_ in con.sql(f"DESCRIBE SELECT * FROM {relation}").fetchall()]
    missing = [c for c in LOOK_BACK_COLUMNS if c not in columns]
    if missing:
        raise ValueError(
            f"the look-back's events lack column(s) {missing}: give events_clean's rows"
        )
    con.execute(
        f"CREATE TEMP VIEW earlier AS SELECT {', '.join(LOOK_BACK_COLUMNS)} FROM {relation}"
    )


@dataclass(frozen=True)
class _EarlierDays:
    """The clean files of every earlier day, and the event-id indexes of some of them."""

    files: Sequence[Path]
    id_hashes: Sequence[Path]

    def seen_sql(self, con: duckdb.DuckDBPyConnection) -> str:
        """SELECT of the earlier days' event ids that `typed` repeats: a day with an index
        is read only when its index holds the hash of one of the batch's ids
        (`batch_id_hashes`); a day without, whole."""
        indexed = {p.name: p for p in self.id_hashes}
        to_read = [f for f in self.files if f.name not in indexed]
        indexes = [indexed[f.name] for f in self.files if f.name in indexed]
        if indexes:
            hit = con.sql(
                f"""SELECT DISTINCT parse_filename(filename) AS day
                FROM {parquet_relation(indexes, filename=True)}
                WHERE id_hash IN (SELECT id_hash FROM batch_id_hashes)"""
            ).fetchall()
            days = {name for (name,) in hit}
            to_read += [f for f in self.files if f.name in days]
        if not to_read:
            return "SELECT NULL::VARCHAR AS event_id WHERE false"
        return f"SELECT event_id FROM {parquet_relation(to_read)}"


def ids_on_later_days(
    day_files: Sequence[Path], later_files: Sequence[Path], later_id_hashes: Sequence[Path]
) -> list[str]:
    """The event ids of the clean `day_files` that a later day's clean file holds too (a day
    cleaned again after the days that followed it, which were not): sorted. Each later day
    with an index (`write_event_id_hashes`) is read only where it holds one of the ids'
    hashes."""
    if not day_files or not later_files:
        return []
    days = parquet_relation(list(day_files))
    with contextlib.closing(connect()) as con:
        con.execute(
            f"CREATE TEMP TABLE batch_id_hashes AS SELECT DISTINCT hash(event_id) AS id_hash "
            f"FROM {days}"
        )
        seen = _EarlierDays(later_files, later_id_hashes).seen_sql(con)
        repeated = con.sql(
            f"""SELECT DISTINCT event_id FROM ({seen})
            WHERE event_id IN (SELECT event_id FROM {days}) ORDER BY event_id"""
        ).fetchall()
    return [event_id for (event_id,) in repeated]


def clean_file_fingerprint(clean_file: Path) -> str:
    """What tells one version of a clean day file from another without reading its rows: its
    size and a digest of its Parquet footer (row counts, column statistics, page offsets).
    Unlike its modification time, it survives a copy (a machine fetching the shared store)."""
    with clean_file.open("rb") as file:
        size = file.seek(0, 2)
        file.seek(size - 8)
        footer_length = int.from_bytes(file.read(4), "little")
        file.seek(size - 8 - footer_length)
        footer = file.read(footer_length)
    return f"{size}:{hashlib.sha256(footer).hexdigest()[:32]}"


def index_is_current(index_file: Path, clean_file: Path) -> bool:
    """Whether the event-id index was written from this version of its clean file."""
    if not index_file.exists():
        return False
    written_from = (pq.read_metadata(index_file).metadata or {}).get(INDEXED_FILE_KEY.encode())
    return written_from == clean_file_fingerprint(clean_file).encode()


def write_event_id_hashes(clean_file: Path, index_file: Path) -> None:
    """The event-id index of a clean day file: `hash(event_id)` of each of its rows, which a
    later day's cleaning reads instead of the ids (`clean_events(earlier_id_hashes=...)`);
    keep it at `EVENT_ID_HASHES`, the hash's version, and write it again when its file
    changes (`index_is_current`: the file's fingerprint is in the index's footer)."""
    fingerprint = clean_file_fingerprint(clean_file)
    with contextlib.closing(connect()) as con:
        copy_to_parquet(
            con,
            f"SELECT hash(event_id) AS id_hash FROM {parquet_relation(clean_file)}",
            index_file,
            metadata={INDEXED_FILE_KEY: fingerprint},
        )


def _register_look_back(
    con: duckdb.DuckDBPyConnection,
    earlier: pl.DataFrame | Sequence[Path] | None,
    earlier_days: _EarlierDays,
    standing: pl.DataFrame,
) -> bool:
    """The look-back as tables `earlier` (the recent events), `earlier_seen` (the batch's event
    ids that an earlier day holds) and `earlier_rows`: the recent events of this batch's users
    in the batch's raw form (raw user ids; derived sessions spelled as `_derive_sessions`
    spells them, `derived`), with negative row keys, oldest first. Of the events with a source
    session, only those from SESSION_GAP before the batch's first standing event on, the only
    ones that can be repeated within NEAR_DUPLICATE_WINDOW; the derived sessions' events all
    (a late event can join two of them). False without a look-back."""
    if not _any_recent(earlier) and not earlier_days.files:
        return False
    _register_recent(con, earlier)
    con.register("batch_id_hashes", standing.select("id_hash").to_arrow())
    # the recent days' ids, unless they are among the earlier files (the pipeline's case)
    recent_ids = (
        ""
        if not isinstance(earlier, pl.DataFrame) and set(earlier or ()) <= set(earlier_days.files)
        else "SELECT event_id FROM earlier UNION ALL "
    )
    con.execute(  # ids whose hash is one of the batch's: `_repeated_events` compares them
        f"""CREATE TEMP TABLE earlier_seen AS SELECT DISTINCT event_id
        FROM ({recent_ids}{earlier_days.seen_sql(con)})
        WHERE hash(event_id) IN (SELECT id_hash FROM batch_id_hashes)"""
    )
    first_us = standing["t"].min()
    reach_us = int(max(SESSION_GAP, NEAR_DUPLICATE_WINDOW).total_seconds() * 1_000_000)
    time_cut = "false" if first_us is None else f"epoch_us(e.event_time) >= {first_us - reach_us}"
    con.execute(
        f"""CREATE TEMP TABLE earlier_rows AS
        SELECT row_number() OVER (ORDER BY e.event_time, e.event_id)
                - (SELECT count(*) + 1 FROM earlier) AS _row,
            e.event_id AS eid, p.user_id, e.item_id, e.event_type AS etype,
            CAST(e.event_time AS TIMESTAMPTZ) AS t, derived,
            CASE WHEN derived THEN p.user_id || substr(e.session_id, length(e.user_id) + 1)
                ELSE e.session_id END AS sid
        FROM (SELECT *, starts_with(session_id, user_id || '@') AS derived FROM earlier) e
        JOIN pseudonyms p ON p.pseudonym = e.user_id
        WHERE derived OR {time_cut}"""
    )
    return True


def _with_derived_sessions(
    con: duckdb.DuckDBPyConnection, standing: pl.DataFrame, looked_back: bool
) -> tuple[pl.DataFrame, bool]:
    """Sessions for the standing rows whose source carried none (table `derived`), with their
    key hash taken again over the derived session; and whether any session was derived."""
    need_session = standing.filter("no_session").select("_row")
    if not need_session.height:
        return standing, False
    con.register("need_session", need_session.to_arrow())
    _derive_sessions(con, looked_back)
    rehashed = query_polars(
        con,
        "SELECT _row, hash(user_id, item_id, etype, d.sid) AS derived_hash "
        "FROM typed JOIN derived d USING (_row)",
    )
    standing = (
        standing.join(rehashed, on="_row", how="left")
        .with_columns(key_hash=pl.coalesce("derived_hash", "key_hash"))
        .drop("derived_hash")
    )
    return standing, True


def _late_rejections(
    con: duckdb.DuckDBPyConnection,
    verdicts: pl.DataFrame,
    standing: pl.DataFrame,
    derived: bool,
    looked_back: bool,
) -> dict[str, list[int]]:
    """The standing rows that rules across rows reject, by reason: repeated event ids,
    near duplicates, then (of the rest) items not in the catalog. Creates table `fetched`
    (when any row needs it)."""
    id_candidates, key_candidates = _repeat_candidates(standing)
    if looked_back:
        id_candidates, key_candidates = _with_look_back_candidates(
            con, standing, id_candidates, key_candidates
        )
    candidates = pl.concat([id_candidates.select("_row"), key_candidates.select("_row")]).unique()
    _fetch_needed_rows(con, candidates, verdicts, standing)
    late = _repeated_events(con, candidates, id_candidates, key_candidates, derived, looked_back)
    decided = late["duplicate_event"] + late["near_duplicate_event"]
    late["unknown_item"] = standing.filter(
        ~pl.col("known") & ~pl.col("_row").is_in(pl.Series(decided, dtype=pl.Int64).implode())
    )["_row"].to_list()
    return late


def _repeat_candidates(standing: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The standing rows that may repeat an event id, and those that may be near duplicates
    (an event of the same key hash within NEAR_DUPLICATE_WINDOW): supersets of the real
    repeats, found on 64-bit hashes. Sorting the hashes is much cheaper than hashing them
    again (`is_duplicated`)."""
    ids = standing["id_hash"].sort()
    repeated_ids = ids.filter(ids == ids.shift()).unique()
    id_candidates = standing.filter(pl.col("id_hash").is_in(repeated_ids.implode()))
    window_us = int(NEAR_DUPLICATE_WINDOW.total_seconds() * 1_000_000)
    keys = standing["key_hash"].sort()
    repeated_keys = keys.filter(keys == keys.shift()).unique()
    del keys
    by_key = (
        standing.filter(pl.col("key_hash").is_in(repeated_keys.implode()))
        .select("key_hash", "t")
        .sort(["key_hash", "t"])
    )
    close = by_key.filter(
        (pl.col("key_hash") == pl.col("key_hash").shift())
        & (pl.col("t") - pl.col("t").shift() <= window_us)
    )["key_hash"].unique()
    del by_key
    key_candidates = standing.filter(pl.col("key_hash").is_in(close.implode()))
    return id_candidates, key_candidates


def _with_look_back_candidates(
    con: duckdb.DuckDBPyConnection,
    standing: pl.DataFrame,
    id_candidates: pl.DataFrame,
    key_candidates: pl.DataFrame,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The candidates with the standing rows that may repeat a look-back event id (by hash)
    or be near duplicates of a look-back event (the same hash of user, item and type, within
    NEAR_DUPLICATE_WINDOW; the key and the session are compared exactly later)."""
    window_us = int(NEAR_DUPLICATE_WINDOW.total_seconds() * 1_000_000)
    earlier_hashes = query_polars(con, "SELECT hash(event_id) AS h FROM earlier_seen")["h"]
    earlier_keys = query_polars(
        con, "SELECT hash(user_id, item_id, etype) AS item_key_hash, epoch_us(t) AS t_earlier "
        "FROM earlier_rows",
    )  # fmt: skip
    close = (
        standing.select("_row", "item_key_hash", "t")
        .join(earlier_keys, on="item_key_hash")
        .filter((pl.col("t") - pl.col("t_earlier")).abs() <= window_us)["_row"]
        .unique()
    )
    return (
        pl.concat(
            [id_candidates, standing.filter(pl.col("id_hash").is_in(earlier_hashes.implode()))]
        ).unique("_row"),
        pl.concat([key_candidates, standing.filter(pl.col("_row").is_in(close.implode()))]).unique(
            "_row"
        ),
    )


def _fetch_needed_rows(
    con: duckdb.DuckDBPyConnection,
    candidates: pl.DataFrame,
    verdicts: pl.DataFrame,
    standing: pl.DataFrame,
) -> None:
    """Table `fetched` (none when no row needs it): one more scan keeps every raw row the
    rest of the work needs to see whole: the repeat candidates, the rows already rejected,
    and those whose item is not in the catalog."""
    needed = pl.concat(
        [
            candidates,
            verdicts.filter(pl.col("mask") != 0).select("_row"),
            standing.filter(~pl.col("known")).select("_row"),
        ]
    ).unique()
    if not needed.height:  # nothing to see whole: `fetched` is never read
        return
    con.register("needed", needed.to_arrow())
    con.execute(
        "CREATE TEMP TABLE fetched AS SELECT * FROM raw_input WHERE _row IN (SELECT _row FROM needed)"
    )


def _repeated_events(
    con: duckdb.DuckDBPyConnection,
    candidates: pl.DataFrame,
    id_candidates: pl.DataFrame,
    key_candidates: pl.DataFrame,
    derived: bool,
    looked_back: bool,
) -> dict[str, list[int]]:
    """Exact decisions on the candidates' typed rows: `duplicate_event`, every row of an
    event id but the first (a look-back event is always first); `near_duplicate_event`, see
    `_near_duplicate_rows` (the look-back's events of the same keys take part)."""
    late: dict[str, list[int]] = {"duplicate_event": [], "near_duplicate_event": []}
    if not candidates.height:
        return late
    con.register("candidates", candidates.to_arrow())
    only_candidates = "(SELECT * FROM fetched WHERE _row IN (SELECT _row FROM candidates))"
    sid = "coalesce(source_sid, d.sid)" if derived else "source_sid"
    join = "LEFT JOIN derived d USING (_row)" if derived else ""
    seen = "eid IN (SELECT event_id FROM earlier_seen)" if looked_back else "false"
    exact: pl.DataFrame = query_polars(
        con,
        f"""SELECT _row, eid, user_id, item_id, etype, {sid} AS sid, epoch_us(t) AS t,
                {seen} AS seen_earlier
            FROM ({_typed_events(only_candidates)}) {join}""",
    )
    repeated = exact.filter(pl.col("_row").is_in(id_candidates["_row"].implode()))
    first = repeated.group_by("eid").agg(pl.col("_row").min().alias("first"))
    late["duplicate_event"] = (
        repeated.join(first, on="eid")
        .filter((pl.col("_row") != pl.col("first")) | pl.col("seen_earlier"))["_row"]
        .to_list()
    )
    keyed = exact.filter(
        pl.col("_row").is_in(key_candidates["_row"].implode())
        & ~pl.col("_row").is_in(pl.Series(late["duplicate_event"], dtype=pl.Int64).implode())
    ).drop("seen_earlier")
    if looked_back:
        keyed = pl.concat([keyed, _earlier_of_keys(con, keyed)])
    late["near_duplicate_event"] = _near_duplicate_rows(keyed)
    return late


def _earlier_of_keys(con: duckdb.DuckDBPyConnection, keyed: pl.DataFrame) -> pl.DataFrame:
    """The look-back's events with the (user, item, type, session) of a row in `keyed`."""
    key = ["user_id", "item_id", "etype", "sid"]
    con.register("keyed", keyed.select(key).unique().to_arrow())
    return query_polars(
        con,
        """SELECT _row, eid, user_id, item_id, etype, sid, epoch_us(t) AS t FROM earlier_rows
            SEMI JOIN keyed USING (user_id, item_id, etype, sid)""",
    ).cast(dict(keyed.schema))


def _rejected_rows(
    verdicts: pl.DataFrame, late: dict[str, list[int]], codes: list[str]
) -> pl.DataFrame:
    """Every rejected row (`_row`) with its reason: the first row rule it broke, else the
    reason a rule across rows gave it (`late`)."""
    mask = pl.col("mask")
    return pl.concat(
        [
            verdicts.filter(mask != 0).select("_row", _first_reason(mask, codes).alias("reason")),
            *[
                pl.DataFrame(
                    {"_row": rows, "reason": code}, schema={"_row": pl.Int64, "reason": pl.String}
                )
                for code, rows in late.items()
            ],
        ]
    )


def _pseudonymise_user_ids(con: duckdb.DuckDBPyConnection) -> None:
    """Table `pseudonyms(user_id, pseudonym)` for every raw user id in `typed`: pseudonyms
    replace user ids in the clean rows (see `_clean_events_sql`)."""
    register_pseudonym_key(con)
    con.execute(
        f"""CREATE TEMP TABLE pseudonyms AS SELECT user_id, {pseudonym_sql("user_id")} AS pseudonym
        FROM (SELECT DISTINCT user_id FROM typed WHERE user_id IS NOT NULL)"""
    )


def _clean_events_sql(derived: bool, now: datetime) -> str:
    """SELECT of the clean events: the typed rows not `rejected`, with the pseudonym for the
    user id, in derived session ids too (they start with the user id)."""
    sid_sql = (
        "coalesce(c.source_sid, p.pseudonym || substr(d.sid, length(c.user_id) + 1))"
        if derived
        else "c.source_sid"
    )
    derived_join = "LEFT JOIN derived d USING (_row)" if derived else ""
    return f"""SELECT c.eid AS event_id, p.pseudonym AS user_id, {sid_sql} AS session_id, c.item_id,
            c.etype AS event_type, c.t AS event_time, CAST(c.quantity_number AS BIGINT) AS quantity,
            c.price_number AS price, c.query, c.source, c.source_file,
            CAST(c.source_line AS BIGINT) AS source_line,
            TIMESTAMPTZ {sql_text(now.isoformat())} AS ingested_at
        FROM typed c {derived_join} LEFT JOIN pseudonyms p ON p.user_id = c.user_id
        WHERE NOT EXISTS (SELECT 1 FROM rejected r WHERE r._row = c._row)"""


def _events_quarantine_sql(rules: _Rules, run_id: str, now: datetime) -> str:
    """SELECT of the quarantine's rows for the `rejected` events, with the sentence for each
    reason, in the order read."""
    detail = rules.detail_sql(
        {
            "duplicate_event": f"'event ' || {_quoted('eid')} || ' was already seen'",
            "near_duplicate_event": None,
            "unknown_item": f"""CASE WHEN item_id IN (SELECT item_id FROM catalog_quarantined)
                THEN 'item ' || {_quoted("item_id")} || ' was quarantined from the catalog'
                ELSE 'item ' || {_quoted("item_id")} || ' is not in the catalog' END""",
        }
    )
    return f"""SELECT {_quarantine_sql("behaviour_events", EVENT_COLUMNS, run_id, now)} FROM (
        SELECT *, {detail} AS detail FROM (
            SELECT c.*, CASE WHEN r.reason = 'source_reason' THEN c.source_reason
                ELSE r.reason END AS reason
            FROM ({_typed_events("fetched")}) c
            JOIN rejected r USING (_row)))
        ORDER BY _row"""


def _clean_event_rows(
    con: duckdb.DuckDBPyConnection,
    clean_sql: str,
    quarantine: pl.DataFrame,
    write_to: tuple[Path, Path] | None,
) -> tuple[pl.DataFrame | None, int]:
    """The clean rows in the order read, and their count; with `write_to` (clean, quarantine
    Parquet) both are written there instead and no clean rows are returned."""
    if write_to is None:
        clean = query_polars(con, clean_sql + " ORDER BY c._row")
        return clean, clean.height
    clean_path, quarantine_path = write_to
    write_parquet_atomic(quarantine, quarantine_path)
    return None, copy_to_parquet(con, clean_sql, clean_path)


def row_accounting(
    raw: pl.DataFrame | str,
    clean: pl.DataFrame | str,
    quarantine: pl.DataFrame | str,
    database: duckdb.DuckDBPyConnection | None = None,
) -> pl.DataFrame:
    """Per source file: rows read, clean, quarantined, and whether they add up.

    Each argument is a frame or a SQL relation (e.g. `read_parquet('...')`) with a
    `source_file` column; the counting happens in DuckDB, so tables of any size are fine.
    `database`: count in a cursor on this connection's database, as `clean_events` does.
    """
    with contextlib.closing(connect(database=database)) as con:
        relations = []
        for name, table in (("raw", raw), ("clean", clean), ("quarantine", quarantine)):
            if isinstance(table, pl.DataFrame):
                con.register(f"accounted_{name}", table.select("source_file").to_arrow())
                table = f"accounted_{name}"
            relations.append(table)
        return query_polars(
            con,
            f"""WITH r AS (SELECT source_file, count(*) AS rows_read FROM {relations[0]} GROUP BY 1),
                c AS (SELECT source_file, count(*) AS rows_clean FROM {relations[1]} GROUP BY 1),
                q AS (SELECT source_file, count(*) AS rows_quarantined FROM {relations[2]} GROUP BY 1)
            SELECT source_file, coalesce(rows_read, 0) AS rows_read,
                coalesce(rows_clean, 0) AS rows_clean,
                coalesce(rows_quarantined, 0) AS rows_quarantined,
                coalesce(rows_read, 0) = coalesce(rows_clean, 0) + coalesce(rows_quarantined, 0)
                    AS balanced
            FROM r FULL JOIN c USING (source_file) FULL JOIN q USING (source_file)
            ORDER BY source_file""",
        )
