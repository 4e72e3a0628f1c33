"""`kill -9` of the pipeline at five moments, each followed by the next run without a hand.

The line `pipeline_kills` of `bench.faults`. On the tiny preset:

1. a clean `demo` (the three runs of `make demo`) in one data directory;
2. in a second directory with the same landing files, a chain of `demo` processes: each is
   killed (`SIGKILL` to its process group) once a moment's step has run for half of its
   clean duration, and the next `demo` starts at once; the moments are ingest
   (`raw_events`), cleaning (`events_clean`), a backfill day (`user_daily_features`), the
   Feast write (`feast_online`) and training (`embedding_model`). The last `demo` runs to
   the end.

Must hold: after every kill the next writing run starts within 2 minutes (the command line
marks the dead run failed before it starts; the daemon's `dead_runs_sensor` does the same
every 30 s), and every table and feature file of the killed chain equals the clean run's,
row for row (lineage aside: when a row was ingested, quarantined or created, by which run,
and the ingestion time a `future_timestamp` quarantine detail names), but the outputs that
cannot repeat (`devtools.outputs.NOT_REPEATABLE`: trained under a time budget, or MiniLM's
floats).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from devtools.outputs import NOT_REPEATABLE, output_digests

MOMENTS = {  # moment -> the step killed while it runs
    "ingest": "raw_events",
    "cleaning": "events_clean",
    "backfill day": "user_daily_features",
    "Feast write": "feast_online",
    "training": "embedding_model",
}
START_LIMIT_S = 120.0
PROJECT = Path(__file__).resolve().parents[1]


def _demo(data_dir: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "dagster_project.cli", "demo", "--preset", "tiny"]
    return subprocess.Popen(
        [*command, "--data-dir", str(data_dir)],
        cwd=PROJECT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the kill takes every child too
    )


def _step_times(instance, step: str) -> list[tuple[str, float, float | None]]:
    """(run id, start, end or None) of every execution of `step`, oldest first."""
    from dagster import DagsterEventType

    times = []
    for run in reversed(instance.get_runs()):
        start = end = None
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None or event.step_key != step:
                continue
            if event.event_type == DagsterEventType.STEP_START:
                start = entry.timestamp
            elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
                end = entry.timestamp
        if start is not None:
            times.append((run.run_id, start, end))
    return times


def _wait_for(condition, timeout: float, process: subprocess.Popen) -> float | None:
    """Seconds until `condition()` holds (None: timed out or the process ended first)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if condition():
            return time.perf_counter() - started
        if process.poll() is not None:
            return None
        time.sleep(0.5)
    return None


def _clean_durations(home: Path) -> dict[str, float]:
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        return {
            moment: max(end - start for _, start, end in _step_times(instance, step) if end)
            for moment, step in MOMENTS.items()
        }


def _kill_at(data_dir: Path, moment: str, after_s: float, log: Path) -> dict:
    """Start a demo, wait for its first run to start, kill it once `moment`'s step has run
    `after_s` seconds."""
    from dagster import DagsterInstance, DagsterRunStatus

    with DagsterInstance.from_config(str(data_dir / "dagster_home")) as instance:
        known = {r.run_id for r in instance.get_runs()}
        started = {run_id for run_id, _, _ in _step_times(instance, MOMENTS[moment])}
        process = _demo(data_dir, log)

        def a_new_run_started() -> bool:
            return any(
                r.run_id not in known and r.status != DagsterRunStatus.QUEUED
                for r in instance.get_runs(limit=3)
            )

        waited = _wait_for(a_new_run_started, START_LIMIT_S, process)

        def step_running() -> bool:
            return any(
                run_id not in started and time.time() - start >= after_s
                for run_id, start, _ in _step_times(instance, MOMENTS[moment])
            )

        reached = waited is not None and _wait_for(step_running, 900, process) is not None
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return {
        "moment": moment,
        "step": MOMENTS[moment],
        "killed_after_s_in_step": round(after_s, 2),
        "next_run_started_after_s": None if waited is None else round(waited, 1),
        "killed_in_step": reached,
    }


def pipeline_kills(root: Path) -> dict:
    """The clean run, the chain of killed runs, the comparison (see the module docstring)."""
    import shutil

    from dagster_project.cli import prepare_dagster_home

    clean, faulted = root / "clean", root / "faulted"
    logs = root / "logs"
    logs.mkdir(parents=True)
    print("[faults] pipeline_kills: a clean run of the tiny preset ...", flush=True)
    if _demo(clean, logs / "clean.log").wait() != 0:
        return {"pass": False, "not_run": f"the clean demo failed: see {logs / 'clean.log'}"}
    durations = _clean_durations(clean / "dagster_home")
    faulted.mkdir()
    prepare_dagster_home(faulted)
    for folder in ("landing", "ground_truth"):
        shutil.copytree(clean / folder, faulted / folder)
    kills = []
    for number, moment in enumerate(MOMENTS):
        print(f"[faults] pipeline_kills: kill -9 during {moment} ...", flush=True)
        kills.append(_kill_at(faulted, moment, durations[moment] / 2, logs / f"kill{number}.log"))
        print(f"[faults]   {kills[-1]}", flush=True)
    print("[faults] pipeline_kills: the run after the last kill, to the end ...", flush=True)
    started = time.perf_counter()
    finished = _demo(faulted, logs / "last.log").wait() == 0
    # Every file, the not repeatable ones too: a difference there is reported, not a failure.
    expected, got = output_digests(clean, skip=set()), output_digests(faulted, skip=set())
    differ = sorted(n for n in expected.keys() | got.keys() if expected.get(n) != got.get(n))
    unexpected = [n for n in differ if Path(n).stem not in NOT_REPEATABLE]
    checks = {
        "killed inside each step": all(k["killed_in_step"] for k in kills),
        "next run started within 2 minutes of each kill": all(
            k["next_run_started_after_s"] is not None for k in kills
        ),
        "the run after the last kill succeeded": finished,
        "every table equals the clean run's (trained outputs aside)": finished and not unexpected,
    }
    return {
        "clean_step_seconds": {m: round(s, 1) for m, s in durations.items()},
        "kills": kills,
        "last_run_seconds": round(time.perf_counter() - started, 1),
        "files_compared": len(expected),
        "files_differing": differ,
        "checks": checks,
        "pass": all(checks.values()),
    }
