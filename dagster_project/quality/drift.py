"""Statistical checks: how the latest day of behaviour compares with the day before and with a
reference window (the `REFERENCE_DAYS` days before it). Pure functions over a DuckDB relation
of events_clean; `drift_figures` reads only the window's day files, so the check costs the same
however long the history.

Thresholds and notes live in `expectations/events_clean.drift.json`, reviewed like the suites.
Population stability index (PSI): < 0.1 stable, 0.1-0.25 moderate, > 0.25 a real shift.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from dagster_project.contracts import EVENT_TYPES
from dagster_project.settings import EXPECTATIONS_DIR, DataLayout
from dagster_project.sql import connect, parquet_relation, query_pandas

EPSILON = 1e-4
# The reference window: four weeks, so every weekday weighs the same and last month's
# behaviour, not last year's, is what a day is compared with.
REFERENCE_DAYS = 28
# The UTC event day as a day number (cheaper than a time-zone aware cast to DATE).
DAY = "epoch_us(event_time) // 86400000000"


def _as_date(frame: pd.DataFrame) -> pd.DataFrame:
    """`day` (a day number) as a date, keeping the number in `day_number`."""
    frame["day_number"] = frame["day"]
    frame["day"] = pd.to_datetime(frame["day"] * 86400, unit="s").dt.date
    return frame


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two distributions given as counts over the same bins."""
    ref = np.maximum(reference / max(reference.sum(), 1), EPSILON)
    cur = np.maximum(current / max(current.sum(), 1), EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def numeric_psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI of a numeric column over the reference's quantile bins."""
    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    if len(reference) == 0 or len(current) == 0:
        return float("nan")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    return psi(np.histogram(reference, edges)[0], np.histogram(current, edges)[0])


@dataclass
class DriftCheck:
    """One statistical check from the reviewed JSON."""

    name: str
    metric: str
    warn_above: float
    notes: str


def load_drift_checks(path: Path) -> list[DriftCheck]:
    """The reviewed statistical checks (`expectations/<table>.drift.json`)."""
    spec = json.loads(path.read_text())
    return [DriftCheck(**c) for c in spec["checks"]]


def daily_profile(con: duckdb.DuckDBPyConnection, relation: str) -> pd.DataFrame:
    """Per event day: rows, event-type counts, null rates, and price/activity samples."""
    types = ", ".join(f"count_if(event_type = '{t}') AS n_{t}" for t in EVENT_TYPES)
    return query_pandas(
        con,
        f"""SELECT {DAY} AS day, count(*) AS rows, {types},
            1 - count(price) / count_if(event_type IN ('add_to_cart', 'purchase'))::DOUBLE
                AS price_null_rate_on_money_events,
            1 - count(query) / count(*)::DOUBLE AS query_null_rate
        FROM {relation} GROUP BY 1 ORDER BY 1""",
    ).pipe(_as_date)


@dataclass
class DailySamples:
    """What the drift measures compare, per event day, fetched in one pass each."""

    profile: pd.DataFrame  # daily_profile
    prices: pd.DataFrame  # day (number), price (events that carry one)
    activity: pd.DataFrame  # day (number), events (one row per user and day)

    def __post_init__(self) -> None:
        self._by_day = {
            name: {day: g.to_numpy(float) for day, g in frame.groupby("day")[value]}
            for name, frame, value in (
                ("price", self.prices, "price"),
                ("events", self.activity, "events"),
            )
        }

    def _values(self, name: str, days: list) -> np.ndarray:
        parts = [self._by_day[name][d] for d in days if d in self._by_day[name]]
        return np.concatenate(parts) if parts else np.array([], float)

    def price(self, days: list) -> np.ndarray:
        return self._values("price", days)

    def events_per_user(self, days: list) -> np.ndarray:
        return self._values("events", days)


def daily_samples(con: duckdb.DuckDBPyConnection, relation: str) -> DailySamples:
    """Profile, prices and per-user activity of every event day of `relation`."""
    return DailySamples(
        profile=daily_profile(con, relation),
        prices=query_pandas(
            con, f"SELECT {DAY} AS day, price FROM {relation} WHERE price IS NOT NULL"
        ),
        activity=query_pandas(
            con, f"SELECT {DAY} AS day, count(*) AS events FROM {relation} GROUP BY user_id, {DAY}"
        ),
    )


MIX = [f"n_{t}" for t in EVENT_TYPES]


def day_over_day(samples: DailySamples) -> pd.DataFrame:
    """Every day against the day before: row-count ratio, mix PSI, price PSI, activity PSI."""
    profile = samples.profile.set_index("day_number")
    rows = []
    for previous, day in itertools.pairwise(profile.index):
        a, b = profile.loc[previous], profile.loc[day]
        rows.append(
            {
                "day": b["day"],
                "row_count_ratio": b["rows"] / a["rows"] if a["rows"] else float("nan"),
                "event_type_mix_psi": psi(a[MIX].to_numpy(float), b[MIX].to_numpy(float)),
                "price_psi": numeric_psi(samples.price([previous]), samples.price([day])),
                "events_per_user_psi": numeric_psi(
                    samples.events_per_user([previous]), samples.events_per_user([day])
                ),
                "price_null_rate_change": b["price_null_rate_on_money_events"]
                - a["price_null_rate_on_money_events"],
            }
        )
    return pd.DataFrame(rows)


def latest_against_reference(samples: DailySamples) -> dict[str, float]:
    """The latest day against the reference window (every earlier day of `samples`)."""
    profile = samples.profile
    if len(profile) < 2:
        return {}
    days = profile["day_number"]
    latest, reference = days.iloc[-1], days.iloc[:-1].tolist()
    ref_rows = profile.iloc[:-1]
    return {
        "row_count_vs_reference_mean": float(profile["rows"].iloc[-1] / ref_rows["rows"].mean()),
        "event_type_mix_psi_vs_reference": psi(
            ref_rows[MIX].sum().to_numpy(float), profile[MIX].iloc[-1].to_numpy(float)
        ),
        "price_psi_vs_reference": numeric_psi(samples.price(reference), samples.price([latest])),
        "events_per_user_psi_vs_reference": numeric_psi(
            samples.events_per_user(reference), samples.events_per_user([latest])
        ),
    }


def evaluate_drift(
    checks: list[DriftCheck], latest: dict[str, float], previous_day: dict[str, float]
) -> pd.DataFrame:
    """Each check's observed value and whether it warns. A ratio metric warns when it leaves
    [1 / warn_above, warn_above]; the others when they exceed warn_above in absolute value."""
    observed = {**{f"{k}_vs_previous_day": v for k, v in previous_day.items()}, **latest}
    rows = []
    for c in checks:
        value = observed.get(c.metric, float("nan"))
        if "ratio" in c.metric or "vs_reference_mean" in c.metric:
            warn = bool(np.isfinite(value) and not (1 / c.warn_above <= value <= c.warn_above))
        else:
            warn = bool(np.isfinite(value) and abs(value) > c.warn_above)
        rows.append(
            {
                "check": c.name,
                "metric": c.metric,
                "observed": round(float(value), 4) if np.isfinite(value) else None,
                "warn_above": c.warn_above,
                "warn": warn,
                "protects": c.notes,
            }
        )
    return pd.DataFrame(rows)


def drift_figures(out: DataLayout) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(day-over-day drift of events_clean over the latest event day and the
    `REFERENCE_DAYS` before it, the reviewed drift checks' verdicts): its newest day files
    alone are read, two more than the window for events of a day filed under the next."""
    files = sorted(out.table("events_clean").glob("*.parquet"))[-(REFERENCE_DAYS + 3) :]
    table = parquet_relation(files or out.table("events_clean"))
    with connect() as con:
        ((latest,),) = con.sql(f"SELECT max({DAY}) FROM {table}").fetchall()
        first = -1 if latest is None else latest - REFERENCE_DAYS  # no rows: none to keep
        samples = daily_samples(con, f"(SELECT * FROM {table} WHERE {DAY} >= {first})")
    days = day_over_day(samples)
    latest = latest_against_reference(samples)
    previous = days.iloc[-1].drop("day").to_dict() if len(days) else {}
    checks = load_drift_checks(EXPECTATIONS_DIR / "events_clean.drift.json")
    return days, evaluate_drift(checks, latest, previous)
