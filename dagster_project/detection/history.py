"""Bot scores as they were known each day: the point-in-time history the feature snapshots
join, so that a snapshot of day D carries a score computed from events up to D only.

Each run scores the users over the detection window ending on the last event day L
(`detector.DETECTION_WINDOW_DAYS`; the users it did not see keep their earlier score); that
score is the history's row for L, and the rows of earlier runs stay as they were. Days that
no run ever scored (the first run over a month of landed data) get a checkpoint every
`CHECKPOINT_DAYS` days, scored over the detection window's days up to that day; a snapshot
reads the latest score dated on or before its day (`features.build.finish_user_features`).
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import polars as pl

from dagster_project.detection.detector import detect_bots, detection_window

CHECKPOINT_DAYS = 7
HISTORY_COLUMNS = ["user_id", "day", "bot_score"]
DAY_DTYPE = "datetime64[us, UTC]"


def checkpoint_days(first_day: pd.Timestamp, last_day: pd.Timestamp) -> list[pd.Timestamp]:
    """Every `CHECKPOINT_DAYS`-th day from the first event day's week, at least
    `CHECKPOINT_DAYS` / 2 days before the last day. One closer to it is left to a later run
    (which scores it then): until that run, the days after the previous checkpoint read that
    checkpoint's scores, up to 1.5 x `CHECKPOINT_DAYS` days old, never a later day's."""
    days = pd.date_range(
        first_day + pd.Timedelta(days=CHECKPOINT_DAYS - 1), last_day, freq=f"{CHECKPOINT_DAYS}D"
    )
    return [d for d in days if (last_day - d).days * 2 >= CHECKPOINT_DAYS]


def score_history(
    events: pl.LazyFrame,
    catalog: pl.DataFrame,
    latest: pd.DataFrame,
    earlier: pd.DataFrame | None,
    say: Callable[[str], None] = print,
) -> pd.DataFrame:
    """The history (user_id, day, bot_score): `earlier` rows before the last event day, the
    missing checkpoints scored over the detection window up to their day, and `latest` (this
    run's scores, the users it carried included) dated on the last event day."""
    span = events.select(
        pl.col("event_time").min().alias("first"), pl.col("event_time").max().alias("last")
    ).collect()
    first_day = pd.Timestamp(span["first"][0]).floor("D")
    last_day = pd.Timestamp(span["last"][0]).floor("D")
    kept = _empty() if earlier is None else earlier[earlier["day"] < last_day]
    frames = [kept]
    for day in checkpoint_days(first_day, last_day):
        if (kept["day"] == day).any():
            continue
        say(f"bot score history: scoring the events up to {day:%Y-%m-%d} (a checkpoint) ...")
        upto, window = detection_window(events, day)
        frames.append(_dated(detect_bots(upto, catalog, window).users, day))
    frames.append(_dated(latest, last_day))
    history = pd.concat([f for f in frames if len(f)], ignore_index=True)
    return history.sort_values(["day", "user_id"], kind="stable").reset_index(drop=True)


def _dated(scores: pd.DataFrame, day: pd.Timestamp) -> pd.DataFrame:
    frame = scores[["user_id", "bot_score"]].copy()
    frame["day"] = pd.Series(day, index=frame.index).astype(DAY_DTYPE)  # days are UTC
    return frame[HISTORY_COLUMNS]


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series(dtype=str),
            "day": pd.Series(dtype=DAY_DTYPE),
            "bot_score": pd.Series(dtype=float),
        }
    )
