"""Benchmark: a daily incremental run against a full rebuild (what `daily_refresh` builds).

    python -m bench.incremental --preset default [--data-dir DIR]

1. Generate the preset; hold back the landing files of its last day.
2. Full rebuild of every day but the last (one run over the day range), as on the eve.
3. The last day's files land: `daily_refresh` for that one partition (the incremental run).
4. Full rebuild of every day, from the same landing files, for comparison.
5. Compare the features of (3) and (4): byte-identical, except where the last day changed
   who is flagged as a bot (reported).
6. The last day's run again as a schedule runs it (`recsys backfill` for that day, in a
   process of its own): on the default executor, whose steps fork from a preloaded server,
   and in process.

Prints the figures and saves them to bench/results/incremental_<preset>.json with the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.machine import machine_info, save_figures
from dagster_project.settings import DataLayout, layout
from dagster_project.sources.synthetic.generator import generate, preset
from devtools.backfills import backfill, executor_env

FEAST_TABLES = {"user_features": "user_id", "item_features": "item_id"}


def _run(out: DataLayout, first: str, last: str) -> dict:
    """Materialize daily_refresh's assets and checks for the days first..last; time each step."""
    from dagster import DagsterInstance, materialize

    from dagster_project.automation import daily_selection
    from dagster_project.definitions import INFO_LOGGING, all_assets, all_checks
    from dagster_project.definitions import platform_resources as resources

    tags = {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }
    started = time.perf_counter()
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [*all_assets, *all_checks],  # inputs outside the selection are read from storage
            selection=daily_selection,  # with the selected assets' checks
            instance=instance,
            resources=resources(str(out.root)),
            tags=tags,
            run_config=INFO_LOGGING,
            raise_on_error=False,
        )
        stats = instance.get_run_step_stats(result.run_id)
    seconds = time.perf_counter() - started
    steps = {s.step_key: round(s.end_time - s.start_time, 2) for s in stats if s.end_time}
    if not result.success:
        raise SystemExit(f"the run for {first}..{last} failed")
    return {
        "days": f"{first}..{last}",
        "seconds": round(seconds, 1),
        "step_seconds": dict(sorted(steps.items(), key=lambda kv: -kv[1])),
    }


def _scheduled_daily_runs(root: Path, day: str) -> dict[str, float]:
    """Wall seconds of `recsys backfill` for `day` alone, in a process of its own as a
    schedule's run is (the code loaded, the run, the steps), on the default executor (steps
    forked from a preloaded server) and in process."""
    return {
        executor: round(backfill(root, executor_env(executor), days=(day, day)), 1)
        for executor in ("multiprocess", "in_process")
    }


def _feature_digests(out: DataLayout) -> dict[str, str]:
    return {
        str(p.relative_to(out.root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.features.rglob("*.parquet"))
        if "daily" in p.parts or p.stem in ("user_features", "item_features")
    }


def _flagged(out: DataLayout) -> set[str]:
    """Users behaviour_events excludes as bots, as of the latest run."""
    return set(pd.read_parquet(out.table("behaviour_exclusions"), columns=["user_id"])["user_id"])


def _differences(incremental: dict[str, pd.DataFrame], out: DataLayout, key: dict) -> dict:
    """Rows of the Feast feature tables that differ between the incremental run and the full
    rebuild, and how many of the users or items concerned the late bot flags explain."""
    report = {}
    for table, frame in incremental.items():
        full = pd.read_parquet(out.feature_table(table))
        merged = frame.merge(full, how="outer", indicator=True)
        differing = merged[merged["_merge"] != "both"]
        entities = set(differing[key[table]])
        report[table] = {"rows_differing": len(differing), "entities_differing": len(entities)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="default")
    parser.add_argument("--data-dir", default=None, help="default: a fresh temporary directory")
    args = parser.parse_args()

    root = Path(args.data_dir or tempfile.mkdtemp(prefix=f"bench-incremental-{args.preset}-"))
    out = layout(root)
    cfg = preset(args.preset)
    generate(cfg, out, progress=False)
    days = sorted(p.name.removeprefix("date=") for p in out.landing_events.glob("date=*"))
    first, last = days[0], days[-1]
    aside = root / "held_back"
    shutil.move(out.landing_events / f"date={last}", aside)

    print(f"[incremental] full rebuild of {first}..{days[-2]} (the eve)", flush=True)
    eve = _run(out, first, days[-2])
    flagged_on_eve = _flagged(out)
    shutil.move(aside, out.landing_events / f"date={last}")
    print(f"[incremental] the files of {last} land: daily_refresh for {last}", flush=True)
    daily = _run(out, last, last)
    incremental_features = _feature_digests(out)
    incremental_tables = {t: pd.read_parquet(out.feature_table(t)) for t in FEAST_TABLES}
    flagged = _flagged(out)

    shutil.rmtree(out.features / "daily")
    print(f"[incremental] full rebuild of {first}..{last}", flush=True)
    full = _run(out, first, last)
    same = _feature_digests(out) == incremental_features
    differences = _differences(incremental_tables, out, FEAST_TABLES)

    print(f"[incremental] daily_refresh for {last} again, as a schedule runs it", flush=True)
    scheduled = _scheduled_daily_runs(root, last)

    feature_steps = ("user_daily_features", "item_daily_features", "user_features", "item_features")
    figures = {
        "benchmark": "incremental",
        "preset": args.preset,
        "event_rows": cfg.n_events,
        "days": len(days),
        "daily_incremental_run": daily,
        "daily_run_as_scheduled_seconds": scheduled,
        "full_rebuild": full,
        "eve_full_rebuild": eve,
        "speedup": round(full["seconds"] / daily["seconds"], 2),
        "feature_steps_seconds": {
            "daily": round(sum(daily["step_seconds"].get(s, 0) for s in feature_steps), 2),
            "full": round(sum(full["step_seconds"].get(s, 0) for s in feature_steps), 2),
        },
        "features_byte_identical": same,
        # Bot flags are scored over each user's whole history, so the last day can flag users
        # (or clear them) whose earlier days the eve's run built: those days keep the flags
        # known then (point in time) until a backfill from the first day.
        "bots_flagged_by_the_last_day": len(flagged - flagged_on_eve),
        "bots_cleared_by_the_last_day": len(flagged_on_eve - flagged),
        "feast_table_differences": differences,
        "machine": machine_info(),
    }
    save_figures(f"incremental_{args.preset}", figures)


if __name__ == "__main__":
    main()
