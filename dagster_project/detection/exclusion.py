"""Bot traffic out of the behaviour table, with an audit of every user and event excluded."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dagster_project.sql import connect, parquet_relation, sql_text
from dagster_project.storage import atomic_file

LINEAGE_COLUMNS = ("source_file", "source_line")  # the landing lines; not in behaviour events


@dataclass(frozen=True)
class BehaviourWithoutBots:
    """How many events were kept, their count per day and type, and per excluded user: events
    removed and the detector's verdict."""

    events_kept: int
    events_per_day: pd.DataFrame  # day, event_type, events (the kept ones)
    audit: pd.DataFrame
    events_excluded: int


def exclude_flagged_users(
    events: Path | Sequence[Path],
    scores: pd.DataFrame,
    kept_path: Path,
    exclude_bots: bool = True,
) -> BehaviourWithoutBots:
    """Write the events of `events` (a Parquet file, a folder of them or a list) to `kept_path`,
    without those of users the detector flagged (`scores.is_bot`) unless `exclude_bots` is off,
    and without the lineage columns (source_file, source_line); the rows keep their order
    (file by file in name order, row by row in each).

    In DuckDB, streaming from file to file: a million events took 0.5 s, against 2.7 s read
    into pandas, filtered and written again (the same file contents).
    """
    bots = scores.loc[scores["is_bot"], ["user_id"]] if exclude_bots else scores.iloc[0:0]
    bots = bots[["user_id"]].drop_duplicates()
    source = parquet_relation(events, filename=True, file_row_number=True)
    dropped = ", ".join((*LINEAGE_COLUMNS, "filename", "file_row_number"))
    flagged = "coalesce(user_id IN (SELECT user_id FROM flagged), false)"
    with contextlib.closing(connect()) as con:
        con.register("flagged", bots)
        kept = f"""SELECT * EXCLUDE ({dropped}) FROM {source} WHERE NOT {flagged}
                   ORDER BY filename, file_row_number"""
        with atomic_file(kept_path) as tmp:
            (events_kept,) = con.execute(
                f"COPY ({kept}) TO {sql_text(str(tmp))} (FORMAT parquet, COMPRESSION snappy)"
            ).fetchone()
        per_user = con.sql(
            f"SELECT user_id, count(*) AS events_excluded FROM {parquet_relation(events)} "
            f"WHERE {flagged} GROUP BY user_id ORDER BY user_id"
        ).df()
        per_day = con.sql(
            "SELECT date_trunc('day', event_time) AS day, event_type, count(*) AS events "
            f"FROM {parquet_relation(kept_path)} GROUP BY ALL ORDER BY ALL"
        ).df()
    verdicts = scores[["user_id", "bot_score", "pattern", "reasons", "detector_version"]]
    audit = per_user.merge(verdicts.drop_duplicates("user_id"), on="user_id")
    audit["events_excluded"] = audit["events_excluded"].astype("int64")
    return BehaviourWithoutBots(
        int(events_kept), per_day, audit, int(audit["events_excluded"].sum())
    )
