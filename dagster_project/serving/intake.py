"""The real-time intake: events in, checked by the batch's own rules, landed for the daily run,
and each user's recent activity advanced in the online store.

`EventIntake.receive` takes one or more request batches (JSON values, each meant to be an
event object in the contract's fields) and, for all of them at once:

1. cleans them with `quality.cleaning.clean_events`, the function the daily run uses, so the
   rules, reason codes and sentences are the batch's (an entry that is not a JSON object is
   an `unparseable_row`; an event id seen by an earlier batch of this intake is a
   `duplicate_event`);
2. appends the accepted events, as received plus their event id, to the landing area
   (`serving.landing`); the daily run cleans and counts each of them once;
3. writes the rejected ones to the intake's quarantine (the `quarantine` asset adds them),
   and answers per batch with each rejected entry's index, reason and detail;
4. advances the recent activity of the batch's users (`features.recent`) from the rows the
   online store holds and pushes the new rows (Feast push source
   `user_recent_activity_push`). The users the last daily run left out of
   `behaviour_events` as bots (`behaviour_exclusions`) are left out here too: their events
   land (detection reads them) but change nothing that is served. Users on the opt-out list are pushed like
   everyone (the daily run keeps their features too), and `/recommend` never reads their
   history: their events change nothing that is served either.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from dagster_project.contracts import (
    EVENT_COLUMNS,
    NEAR_DUPLICATE_WINDOW,
    RAW_LINEAGE_COLUMNS,
    SESSION_GAP,
)
from dagster_project.features.recent import advance_recent_activity
from dagster_project.quality.accounting import INTAKE_SOURCE_PREFIX
from dagster_project.quality.cleaning import clean_events
from dagster_project.serving.landing import LandingWriter, extend_window, write_intake_quarantine
from dagster_project.serving.online import RecentActivityStore
from dagster_project.serving.tables import FileCache
from dagster_project.settings import DataLayout
from dagster_project.sources.manifest import source_window
from dagster_project.sources.raw_table import read_raw
from dagster_project.sql import connect
from dagster_project.storage import publish_to_shared

MAX_EVENT_FIELD_CHARS = 2_000
REMEMBERED_EVENT_IDS = 1_000_000  # replays older than this many accepted events: see docs
# Accepted events kept to clean again ahead of a batch with the same (user, item, type):
# the near-duplicate window reaches back 2 s; the rest of the 30 minutes (a session's gap)
# lets the cleaning itself catch recent replays.
LOOKBACK = SESSION_GAP + NEAR_DUPLICATE_WINDOW
MAX_CONTEXT_ROWS = 500_000
CONTEXT_KEY = ["user_id", "item_id", "event_type"]


@dataclass
class BatchAnswer:
    """What one request batch got: how many events were accepted, and each rejection."""

    received: int
    accepted: int = 0
    rejected: list[dict] = field(default_factory=list)
    pushed_users: int = 0
    held_back_users: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


class EventIntake:
    """Real-time intake over one data directory (see the module's docstring)."""

    def __init__(self, out: DataLayout, activity: RecentActivityStore | None) -> None:
        self.out = out
        self.activity = activity
        self.landing = LandingWriter(out.landing)
        self.files = FileCache()
        # each batch is cleaned in a cursor of it, on one thread: batches are small, and
        # the service's workers are its parallelism
        self._database = connect(threads=1)
        self._seen: OrderedDict[str, None] = OrderedDict()
        # wall and CPU (this thread's) seconds per stage, the events received and the
        # groups they came in
        self.stage_seconds: dict[str, float] = {"events": 0, "groups": 0}
        self._recent = raw_events_frame([], self.landing.source, "").with_columns(
            _arrived=pl.lit(0.0)
        )

    def receive(self, batches: Sequence[Sequence[Any]]) -> list[BatchAnswer]:
        """Check, land, quarantine and push every event of `batches` (one answer per batch)."""
        answers = [BatchAnswer(received=len(b)) for b in batches]
        entries = [entry for batch in batches for entry in batch]
        if not entries:
            return answers
        owner = [i for i, batch in enumerate(batches) for _ in batch]
        offset = [n for batch in batches for n in range(len(batch))]
        batch_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        raw = raw_events_frame(entries, self.landing.source, INTAKE_SOURCE_PREFIX + batch_id)
        with self._timed("check"):
            clean, quarantine = self._check(raw, batch_id)
        with self._timed("land"):
            self._land(raw, clean)
            rejected = write_intake_quarantine(self.out.tables, batch_id, quarantine)
            if rejected is not None:  # for the daily run's quarantine, wherever it runs
                publish_to_shared(self.out.root, rejected)
        for line, reason, detail in quarantine.select("source_line", "reason", "detail").rows():
            answers[owner[line]].rejected.append(
                {"index": offset[line], "reason": reason, "detail": detail}
            )
        for line in clean["source_line"].to_list():
            answers[owner[line]].accepted += 1
        with self._timed("push"):
            self._push(clean, owner, answers)
        self.stage_seconds["events"] += len(entries)
        self.stage_seconds["groups"] += 1
        return answers

    @contextlib.contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        cpu = time.thread_time()
        yield
        self.stage_seconds[stage] = (
            self.stage_seconds.get(stage, 0.0) + time.perf_counter() - started
        )
        self.stage_seconds[stage + "_cpu"] = (
            self.stage_seconds.get(stage + "_cpu", 0.0) + time.thread_time() - cpu
        )

    def _check(self, raw: pl.DataFrame, batch_id: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The batch's clean and quarantined rows (source_line: the entry's place in `raw`),
        cleaned after the same users' recent events."""
        context = self._context(raw)
        now = datetime.now(UTC)
        items, quarantined_items = self._catalog()
        cleaned = clean_events(
            pl.concat([context, raw]).with_columns(
                pl.int_range(pl.len()).cast(pl.String).alias("source_line")
            ),
            items,
            self._window(now),
            f"intake-{batch_id}",
            now,
            quarantined_items,
            database=self._database,
        )
        clean, quarantine = (
            frame.filter(pl.col("source_line") >= context.height).with_columns(
                pl.col("source_line") - context.height
            )
            for frame in (cleaned.clean, cleaned.quarantine)
        )
        return self._without_replays(clean, quarantine)

    def flush(self) -> None:
        """Publish every open landing file (the daily run then sees all accepted events)."""
        self.landing.flush()

    def publish_due(self) -> None:
        self.landing.publish_due()

    # -- steps ---------------------------------------------------------------------------
    def _catalog(self) -> tuple[pl.Series, pl.Series]:
        """The clean catalog's item ids, and the ids quarantined from it (re-read when the
        daily run rewrites the catalog)."""
        clean_path = self.out.table("items_clean")

        def load(path: Path) -> tuple[pl.Series, pl.Series]:
            items = pl.read_parquet(path, columns=["item_id"])["item_id"]
            raw_ids = read_raw(self.out.raw_table("raw_items"))["item_id"]
            return items, raw_ids.filter(~raw_ids.is_in(items.implode()))

        return self.files.get(clean_path, load)

    def _window(self, now: datetime) -> tuple[datetime, datetime]:
        """The declared window, open to the end of today: events of today are in it."""
        start, end = source_window(self.out.landing)
        tomorrow = pd.Timestamp(now).tz_convert("UTC").normalize() + pd.Timedelta(days=1)
        return start, max(end, tomorrow)

    def _without_replays(
        self, clean: pl.DataFrame, quarantine: pl.DataFrame
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Clean events whose id an earlier batch accepted move to the quarantine as
        `duplicate_event`, as the daily run would put them."""
        replayed = pl.Series(
            [e in self._seen for e in clean["event_id"].to_list()], dtype=pl.Boolean
        )
        if not replayed.any():
            self._remember(clean["event_id"].to_list())
            return clean, quarantine
        again = clean.filter(replayed)
        rows = again.select(
            pl.lit("behaviour_events").alias("table"),
            "source",
            "source_file",
            "source_line",
            pl.struct(EVENT_COLUMNS).struct.json_encode().alias("raw"),
            pl.lit("duplicate_event").alias("reason"),
            ("event " + pl.col("event_id") + " was already seen").alias("detail"),
            pl.lit(quarantine["run_id"][0] if quarantine.height else "intake").alias("run_id"),
            pl.col("ingested_at").alias("quarantined_at"),
        )
        clean = clean.filter(~replayed)
        self._remember(clean["event_id"].to_list())
        return clean, pl.concat([quarantine, rows], how="vertical_relaxed").sort("source_line")

    def _context(self, raw: pl.DataFrame) -> pl.DataFrame:
        """This intake's accepted events of the last `LOOKBACK` with the same user, item and
        event type as one of the batch's, cleaned again ahead of the batch (their verdicts
        are dropped): a replay, or a near duplicate of an event of an earlier request, is
        decided as the daily run, which sees them together, decides it. (Two events within
        the near-duplicate window share a session whatever else happened, so no other
        event bears on the verdict.)"""
        cutoff = time.monotonic() - LOOKBACK.total_seconds()
        self._recent = self._recent.filter(pl.col("_arrived") >= cutoff).tail(MAX_CONTEXT_ROWS)
        keys = raw.select(CONTEXT_KEY).unique()
        return self._recent.join(keys, on=CONTEXT_KEY, how="semi").drop("_arrived")

    def _remember(self, event_ids: Iterable[str]) -> None:
        self._seen.update(dict.fromkeys(event_ids))
        while len(self._seen) > REMEMBERED_EVENT_IDS:
            self._seen.popitem(last=False)

    def _land(self, raw: pl.DataFrame, clean: pl.DataFrame) -> None:
        """Append the accepted events, as received with their event id, per event day."""
        if clean.is_empty():
            return
        accepted = (
            raw.with_row_index("line")
            .join(
                clean.select(
                    pl.col("source_line").alias("line").cast(pl.UInt32),
                    pl.col("event_id").alias("id"),
                    pl.col("event_time").dt.strftime("%Y-%m-%d").alias("day"),
                ),
                on="line",
            )
            .with_columns(pl.col("id").alias("event_id"))
        )
        for (day,), rows in accepted.partition_by("day", as_dict=True).items():
            self.landing.append(str(day), rows.select(EVENT_COLUMNS).to_pandas())
        landed = accepted.select(raw.columns).with_columns(_arrived=pl.lit(time.monotonic()))
        self._recent = pl.concat([self._recent, landed])
        last = clean["event_time"].max()
        extend_window(self.out.landing, pd.Timestamp(last).normalize() + pd.Timedelta(days=1))

    def _push(self, clean: pl.DataFrame, owner: list[int], answers: list[BatchAnswer]) -> None:
        """Advance and push the recent activity of the users served from their events."""
        if clean.is_empty() or self.activity is None:
            return
        events = clean.select(
            "event_id", "user_id", "item_id", "event_type", "event_time", "source_line"
        )
        held_back = self._held_back_users()
        first = events.select("source_line", "user_id").unique(
            "user_id", keep="first", maintain_order=True
        )
        for line, user in first.rows():
            if user in held_back:
                answers[owner[line]].held_back_users += 1
            else:
                answers[owner[line]].pushed_users += 1
        served = events.filter(
            ~pl.col("user_id").is_in(pl.Series(list(held_back), dtype=pl.String).implode())
        )
        if served.is_empty():
            return
        current = self.activity.read(served["user_id"].unique().to_list())
        self.activity.push(advance_recent_activity(current, served.drop("source_line")))

    def _held_back_users(self) -> set[str]:
        """The users the last daily run left out of `behaviour_events` as bots (its audit,
        `behaviour_exclusions`): their activity is not pushed."""
        audit = self.out.table("behaviour_exclusions")
        return self.files.get(audit, _excluded_users) if audit.exists() else set()


def _excluded_users(path: Path) -> set[str]:
    return set(pl.read_parquet(path, columns=["user_id"])["user_id"].to_list())


def _field_text(value: Any) -> str | None:
    """A JSON value as the text a landing file would hold (None stays empty)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value[:MAX_EVENT_FIELD_CHARS]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)[:MAX_EVENT_FIELD_CHARS]


def raw_events_frame(entries: Sequence[Any], source: str, source_file: str) -> pl.DataFrame:
    """Request entries as a raw frame (all text, lineage first), as ingestion would read
    them from a file: an entry that is not a JSON object is an `unparseable_row`."""
    rows = []
    for line, entry in enumerate(entries):
        is_event = isinstance(entry, dict)
        row = {c: _field_text(entry.get(c)) if is_event else None for c in EVENT_COLUMNS}
        row |= {
            "source": source,
            "source_file": source_file,
            "source_line": str(line),
            "raw": None if is_event else json.dumps(entry)[:MAX_EVENT_FIELD_CHARS],
            "parse_error": None if is_event else f"a JSON {type(entry).__name__}, not an object",
            "source_reason": None,
            "source_detail": None,
        }
        rows.append(row)
    columns = RAW_LINEAGE_COLUMNS + EVENT_COLUMNS
    return pl.DataFrame(rows, schema={c: pl.String for c in columns}).select(columns)
