"""Benchmark: generate a preset and materialize the whole asset graph; time every step.

    python -m bench.pipeline --preset default [--data-dir DIR]

Prints the figures and saves them to bench/results/pipeline_<preset>.json with the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from bench.machine import machine_info, save_figures
from dagster_project.settings import layout
from dagster_project.sources.synthetic.generator import generate, preset


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="default")
    parser.add_argument("--data-dir", default=None, help="default: a fresh temporary directory")
    args = parser.parse_args()

    from dagster import DagsterInstance, materialize

    from dagster_project.definitions import (
        INFO_LOGGING,
        all_assets,
        all_checks,
        every_event_day,
        platform_resources,
    )

    root = Path(args.data_dir or tempfile.mkdtemp(prefix=f"bench-{args.preset}-"))
    out = layout(root)
    started = time.perf_counter()
    manifest = generate(preset(args.preset), out)
    generated = time.perf_counter()
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [*all_assets, *all_checks],
            instance=instance,
            resources=platform_resources(str(root)),
            tags=every_event_day(root),
            raise_on_error=False,
            run_config=INFO_LOGGING,
        )
        stats = instance.get_run_step_stats(result.run_id)
    finished = time.perf_counter()
    steps = {
        s.step_key: round(s.end_time - s.start_time, 2)
        for s in stats
        if s.end_time and s.start_time
    }
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        "benchmark": "pipeline",
        "preset": args.preset,
        "success": result.success,
        "event_rows": manifest["event_rows"],
        "generate_seconds": round(generated - started, 2),
        "materialize_seconds": round(finished - generated, 2),
        "total_seconds": round(finished - started, 2),
        "events_per_second_end_to_end": round(manifest["event_rows"] / (finished - started)),
        "peak_rss_mb": round(peak_mb),
        "step_seconds": dict(sorted(steps.items(), key=lambda kv: -kv[1])),
        "evaluation": json.loads((out.reports / "evaluation.json").read_text())["models"]
        if result.success
        else None,
        "machine": machine_info(),
    }
    save_figures(f"pipeline_{args.preset}", figures)


if __name__ == "__main__":
    main()
