"""The day-by-day feature engine: each event day's running totals from the day before's and
the day's events, then the day's snapshots from the totals of the day and of 1, 7 and 30 days
before. Files per day under features/daily/ (`DailyTable`); the Dagster assets call
`run_days` for the days of their partitions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dagster_project.features.build import WINDOWS
from dagster_project.features.daily import UserTotals
from dagster_project.settings import FIRST_EVENT_DAY_ENV, DataLayout
from dagster_project.storage import shared_storage, write_parquet_atomic

DAY = pd.Timedelta(days=1)


class MissingDaysError(RuntimeError):
    """A day needs the totals of earlier days that were never built: backfill them first."""


class DailyTable:
    """The files of one entity's day-by-day features: running totals and snapshots per day."""

    def __init__(self, out: DataLayout, entity: str) -> None:
        self.out, self.entity = out, entity
        self.totals_names = (
            ("user_totals", "user_category_totals") if entity == "user" else ("item_totals",)
        )
        self.shared = shared_storage(out.root)  # None: the data directory alone

    def load(self, day: pd.Timestamp) -> UserTotals | pd.DataFrame | None:
        paths = [self.out.daily_file(n, f"{day:%Y-%m-%d}") for n in self.totals_names]
        if not all(p.exists() for p in paths):
            return None
        frames = [pd.read_parquet(p) for p in paths]
        return UserTotals(*frames) if self.entity == "user" else frames[0]

    def save(self, day: pd.Timestamp, totals, snapshots: pd.DataFrame) -> None:
        frames = [totals.users, totals.categories] if self.entity == "user" else [totals]
        for name, frame in zip(self.totals_names, frames, strict=True):
            self._write(frame, self.out.daily_file(name, f"{day:%Y-%m-%d}"))
        self._write(snapshots, self.out.daily_file(self.snapshots, f"{day:%Y-%m-%d}"))

    def _write(self, frame: pd.DataFrame, path: Path) -> None:
        write_parquet_atomic(frame, path)
        if self.shared:  # for the steps on other machines
            self.shared.publish(path)

    @property
    def snapshots(self) -> str:
        return f"{self.entity}_snapshots"

    def remove_after(self, day: pd.Timestamp) -> int:
        """Delete the files of days after `day`; return how many there were."""
        names = [*self.totals_names, self.snapshots]
        stale = [
            f
            for name in names
            for f in self.out.daily_folder(name).glob("????-??-??.parquet")
            if f.stem > f"{day:%Y-%m-%d}"
        ]
        for f in stale:
            f.unlink()
            if self.shared:
                self.shared.remove(f)
        return len(stale)

    def all_snapshots(self) -> pd.DataFrame:
        """Every day's snapshots, in day order (the input of the Feast table)."""
        files = sorted(self.out.daily_folder(self.snapshots).glob("????-??-??.parquet"))
        if not files:
            raise MissingDaysError(
                f"no {self.snapshots} in {self.out.daily_folder(self.snapshots)}: materialize "
                f"{self.entity}_daily_features for the event days first (a backfill)"
            )
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


@dataclass(frozen=True)
class DaysRun:
    """What `run_days` built: per day its events and snapshots, and the last day's snapshots."""

    per_day: pd.DataFrame  # day, events, snapshots
    last_snapshots: pd.DataFrame


def run_days(
    table: DailyTable,
    days: list[pd.Timestamp],
    first_day: pd.Timestamp,
    events_path: Path,
    advance: Callable,
    snapshots_of: Callable,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] = print,
) -> DaysRun:
    """Run `days` (consecutive, in order): totals from the day before's and the day's events
    (`advance`), then the day's snapshots from the totals of the day and of 1, 7 and 30 days
    before (`snapshots_of`). Starting at `first_day`, every earlier event folds into it and
    later days' files (built from older totals) are removed."""
    folds_history = days[0] == first_day
    previous = _totals_before(table, days[0], first_day)
    events = _events_of(events_path, days, folds_history)
    event_day = events["event_time"].dt.floor("D")
    if folds_history and (event_day < first_day).any():
        warn(
            f"{(event_day < first_day).sum():,} events fall before the first event day "
            f"{first_day:%Y-%m-%d} (from {event_day.min():%Y-%m-%d}): they count in its totals, "
            f"and its windows reach no further back. Set ${FIRST_EVENT_DAY_ENV} to the data's "
            "first day for exact windows."
        )
    written, built = [], {}  # built: this run's totals by day, so they are not read back
    snapshots = pd.DataFrame()
    for day in days:
        # The first partition also takes every event before it.
        today = events[(event_day <= day) if day == first_day else (event_day == day)]
        totals = advance(previous, today, day)
        earlier = _earlier_totals(table, day, first_day, built, previous)
        snapshots = snapshots_of(day, totals, earlier)
        table.save(day, totals, snapshots)
        written.append(
            {"day": f"{day:%Y-%m-%d}", "events": len(today), "snapshots": len(snapshots)}
        )
        log(
            f"{table.entity}_daily_features {day:%Y-%m-%d}: {len(today):,} events, "
            f"{len(snapshots):,} snapshots"
        )
        previous = built[day] = totals
        built.pop(day - max(WINDOWS) * DAY, None)  # no later day of the run looks back to it
    if folds_history:  # a rebuild from the first day: later days' files are from old totals
        stale = table.remove_after(days[-1])
        if stale:
            warn(f"removed {stale} file(s) of days after {days[-1]:%Y-%m-%d}")
    return DaysRun(pd.DataFrame(written), snapshots)


def _totals_before(table: DailyTable, day: pd.Timestamp, first_day: pd.Timestamp):
    """The totals of the day before `day` (None on the first day); missing ones are an error."""
    if day == first_day:
        return None
    previous = table.load(day - DAY)
    if previous is None:
        raise MissingDaysError(
            f"{table.entity}_daily_features {day:%Y-%m-%d} needs the totals of the day "
            f"before, which are missing: backfill from {first_day:%Y-%m-%d} (or from the "
            "first day missing)"
        )
    return previous


def _events_of(events_path: Path, days: list[pd.Timestamp], folds_history: bool) -> pd.DataFrame:
    """The events of `days` (and every earlier one when the run starts at the first day)."""
    filters = [("event_time", "<", (days[-1] + DAY).to_pydatetime())]
    if not folds_history:
        filters.append(("event_time", ">=", days[0].to_pydatetime()))
    return pd.read_parquet(events_path, filters=filters)


def _earlier_totals(
    table: DailyTable, day: pd.Timestamp, first_day: pd.Timestamp, built: dict, previous
) -> dict:
    """The totals 1, 7 and 30 days before `day`: built by this run, else read back; a day
    missing on or after the first day is an error."""
    earlier = {w: previous if w == 1 else built.get(day - w * DAY) for w in WINDOWS}
    earlier = {  # the day before is `previous`, never read back
        w: table.load(day - w * DAY) if t is None and w != 1 else t for w, t in earlier.items()
    }
    gaps = [w for w, t in earlier.items() if t is None and day - w * DAY >= first_day]
    if gaps:
        raise MissingDaysError(
            f"{table.entity}_daily_features {day:%Y-%m-%d} needs the totals of "
            f"{', '.join(f'{day - w * DAY:%Y-%m-%d}' for w in gaps)}, which are missing: "
            "backfill those days first"
        )
    return earlier
