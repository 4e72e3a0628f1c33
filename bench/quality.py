"""Benchmark: read, clean, validate and quarantine the `large` preset (about 12M event rows).

    python -m bench.quality [--data-dir DIR]

Two ways over the same landing files, each in its own process (so each peak RSS is its own):
- platform: the pipeline's own assets and checks (raw tables, clean tables, quarantine, both
  suites evaluated in SQL and stored as GX results with Data Docs, the drift check, the row
  accounting), materialized by Dagster in one process;
- naive: pandas reads every file, types the columns, and GX's pandas engine runs the same
  events_clean suite over the whole frame (no cleaning at all, so it is the cheaper half).
Prints the figures and saves bench/results/quality_large.json with the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import machine_info, save_figures


def _platform(root: Path) -> dict:
    """The pipeline's own assets and checks, materialized in process (what a run does)."""
    from dagster import DagsterInstance, materialize

    from dagster_project.assets import ingest, quality
    from dagster_project.definitions import INFO_LOGGING, every_event_day, platform_resources
    from dagster_project.quality.accounting import accounting_by_day
    from dagster_project.settings import layout

    out = layout(root)
    selection = [
        ingest.raw_items,
        ingest.raw_events,
        quality.items_clean,
        quality.events_clean,
        quality.quarantine,
        quality.items_clean_suite,
        quality.events_clean_suite,
        quality.events_clean_drift,
        quality.rows_accounted_for,
    ]
    started = time.perf_counter()
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            selection,
            instance=instance,
            resources=platform_resources(str(root)),
            run_config=INFO_LOGGING,
            tags=every_event_day(root),  # every event day, in one run
            raise_on_error=False,
        )
        stats = instance.get_run_step_stats(result.run_id)
    seconds = time.perf_counter() - started
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    days = accounting_by_day(out)
    return {
        "success": result.success,
        "days": len(days),
        "rows_read": int(days["rows_read"].sum()),
        "rows_clean": int(days["rows_clean"].sum()),
        "rows_quarantined": int(days["rows_quarantined"].sum()),
        "checks_passed": checks,
        "seconds": round(seconds, 2),
        "step_seconds": {
            s.step_key: round(s.end_time - s.start_time, 2)
            for s in stats
            if s.end_time and s.start_time
        },
    }


def _naive(root: Path) -> dict:
    import pandas as pd

    from dagster_project.assets.quality import events_suite_parameters
    from dagster_project.quality.validation import SuiteRunner
    from dagster_project.settings import EXPECTATIONS_DIR, layout
    from dagster_project.sources.raw_table import landing_files

    out = layout(root)
    t0 = time.perf_counter()
    files = landing_files(out.landing / "events")
    frame = pd.concat(
        [
            pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p, dtype=str)
            for p in files
        ],
        ignore_index=True,
    )
    frame["event_time"] = pd.to_datetime(
        frame["event_time"], utc=True, errors="coerce", format="ISO8601"
    )
    for c in ("price", "quantity"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    frame["source"], frame["source_file"], frame["source_line"] = "naive", "", 0
    frame["ingested_at"] = pd.Timestamp.now(tz="UTC")
    read = time.perf_counter()
    outcome = SuiteRunner(Path(tempfile.mkdtemp()), EXPECTATIONS_DIR).validate(
        "events_clean", frame, events_suite_parameters(out)
    )
    done = time.perf_counter()
    return {
        "rows": len(frame),
        "seconds": round(done - t0, 2),
        "step_seconds": {
            "pandas_read_and_type": round(read - t0, 2),
            "gx_pandas_suite": round(done - read, 2),
        },
        "failed_expectations": len(outcome.failed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=None, help="default: a fresh temporary directory")
    parser.add_argument("--preset", default="large")
    parser.add_argument("--only", choices=["platform", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = Path(args.data_dir or tempfile.mkdtemp(prefix="bench-quality-"))
    if args.only:
        result = (_platform if args.only == "platform" else _naive)(root)
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps(result))
        return

    from dagster_project.settings import layout
    from dagster_project.sources.synthetic.generator import generate, preset

    out = layout(root)
    if not (out.landing / "source.json").is_file():
        print(f"generating the {args.preset} preset into {root} ...", flush=True)
        generate(preset(args.preset), out)
    figures: dict = {"benchmark": "quality", "preset": args.preset}
    for way in ("platform", "naive"):
        print(f"running the {way} way ...", flush=True)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "bench.quality", "--data-dir", str(root), "--only", way],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"{way} failed:\n{done.stderr[-3000:]}")
        figures[way] = json.loads(done.stdout.strip().splitlines()[-1])
        figures[way]["process_wall_seconds"] = round(time.perf_counter() - started, 2)
        print(json.dumps(figures[way], indent=2), flush=True)
    figures["naive_over_platform_time_ratio"] = round(
        figures["naive"]["seconds"] / figures["platform"]["seconds"], 2
    )
    figures["targets"] = {"seconds": 20, "peak_rss_mb": 2048}  # issue 18
    figures["machine"] = machine_info()
    save_figures(f"quality_{args.preset}", figures)


if __name__ == "__main__":
    main()
