"""Benchmark: read, clean, validate and quarantine the `large` preset (about 12M event rows).

    python -m bench.quality [--data-dir DIR]

Two ways over the same landing files, each in its own process (so each peak RSS is its own):
- platform: the pipeline's own code (DuckDB ingest, SQL cleaning rules, the events_clean and
  items_clean suites evaluated in SQL and stored as GX results);
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

from bench.machine import machine_info


def _platform(root: Path) -> dict:
    import polars as pl
    import pyarrow.parquet as pq

    from dagster_project.assets.quality import events_suite_parameters
    from dagster_project.quality.cleaning import clean_events, clean_items
    from dagster_project.quality.validation import SuiteRunner
    from dagster_project.settings import EXPECTATIONS_DIR, layout
    from dagster_project.sources.landing import ingest_landing, source_window

    out = layout(root)
    steps, t0 = {}, time.perf_counter()

    def lap(name: str, start: float) -> float:
        now = time.perf_counter()
        steps[name] = round(now - start, 2)
        return now

    from datetime import UTC, datetime

    t = time.perf_counter()
    ingest_landing(out.landing, "items", out.table("raw_items"))
    rows = ingest_landing(out.landing, "events", out.table("raw_events"))
    t = lap("read_landing_to_raw_tables", t)
    items = clean_items(out.table("raw_items"), "bench", datetime.now(UTC))
    out.table("items_clean").parent.mkdir(parents=True, exist_ok=True)
    items.clean.write_parquet(out.table("items_clean"))
    t = lap("clean_items", t)
    raw_items = pl.read_parquet(out.table("raw_items"), columns=["item_id"])["item_id"]
    events = clean_events(
        out.table("raw_events"),
        items.clean["item_id"],
        source_window(out.landing),
        "bench",
        datetime.now(UTC),
        raw_items.filter(~raw_items.is_in(items.clean["item_id"].implode())),
        write_to=(out.table("events_clean"), out.table("quarantine_events")),
    )
    t = lap("clean_events_and_quarantine", t)
    runner = SuiteRunner(out.gx, EXPECTATIONS_DIR)
    items_outcome = runner.validate_table("items_clean", out.table("items_clean"), run_name="bench")
    events_outcome = runner.validate_table(
        "events_clean", out.table("events_clean"), events_suite_parameters(out), "bench"
    )
    lap("validate_suites_sql_and_data_docs", t)
    return {
        "rows_read": rows,
        "rows_clean": events.clean_rows,
        "rows_quarantined": events.quarantine.height,
        "raw_events_rows_in_file": pq.ParquetFile(out.table("raw_events")).metadata.num_rows,
        "suites_success": {
            "items_clean": items_outcome.success,
            "events_clean": events_outcome.success,
        },
        "seconds": round(time.perf_counter() - t0, 2),
        "step_seconds": steps,
    }


def _naive(root: Path) -> dict:
    import pandas as pd

    from dagster_project.assets.quality import events_suite_parameters
    from dagster_project.quality.validation import SuiteRunner
    from dagster_project.settings import EXPECTATIONS_DIR, layout
    from dagster_project.sources.landing import landing_files

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
    from dagster_project.sources.generator import generate, preset

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
    figures["targets"] = {"seconds": 30, "peak_rss_mb": 4096}
    figures["machine"] = machine_info()
    target = Path(__file__).resolve().parent / "results" / f"quality_{args.preset}.json"
    target.write_text(json.dumps(figures, indent=2))
    print(json.dumps({k: v for k, v in figures.items() if k != "machine"}, indent=2))
    print(f"saved to {target}")


if __name__ == "__main__":
    main()
