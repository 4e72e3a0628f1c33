"""A backfill (daily_refresh over every event day) on each executor profile: in process,
multiprocess, and Celery with 1 and 2 workers (a Redis broker on loopback), each on a fresh
copy of the same data set; wall time, steps per worker, and whether the outputs are the
serial run's (`devtools.outputs` digests).

    python -m bench.executors [--preset tiny|default] [--data-dir DIR]

`--data-dir` takes an existing data set (its landing files, ground truth and cached text
vectors are copied); else the preset is generated. Saves bench/results/executors_<preset>.json
with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

from bench.machine import machine_info, save_figures
from devtools.backfills import (
    RECSYS,
    backfill,
    celery_workers,
    executor_env,
    fresh_data_dir,
    steps_run_by,
)
from devtools.outputs import output_digests
from devtools.servers import redis_server

PROFILES = (("in_process", 0), ("multiprocess", 0), ("celery", 1), ("celery", 2))


def _profile(source: Path, work: Path, executor: str, workers: int, broker: str) -> dict:
    """One backfill on a fresh copy: seconds, steps per worker, output digests."""
    name = f"{executor}_{workers}" if workers else executor
    data_dir = fresh_data_dir(source, work / name)
    env = executor_env(executor, broker if workers else "")
    print(f"[executors] {name} ...", flush=True)
    if workers:
        with celery_workers(data_dir, workers, env) as logs:
            seconds = backfill(data_dir, env)
        steps = [steps_run_by(log) for log in logs]
    else:
        seconds, steps = backfill(data_dir, env), []
    print(f"[executors] {name}: {seconds:.1f} s", flush=True)
    return {
        "seconds": round(seconds, 1),
        "steps_per_worker": steps,
        "_digests": output_digests(data_dir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "default"])
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    if args.data_dir is not None:
        # A demo's data set may hold files the real-time intake landed (bench.serving's synthetic
        # traffic): not the generator's own, so the pseudonym key check would stop the run.
        os.environ.setdefault("RECSYS_ALLOW_DEVELOPMENT_KEY", "1")
    with tempfile.TemporaryDirectory() as folder, redis_server() as url:
        work = Path(folder)
        source = args.data_dir
        if source is None:
            source = work / "source"
            subprocess.run(
                [*RECSYS, "generate", "--preset", args.preset, "--data-dir", str(source)],
                check=True,
            )
        runs = {
            (f"{e}_{w}" if w else e): _profile(source, work, e, w, f"redis://{url}/0")
            for e, w in PROFILES
        }
    serial = runs["in_process"]["_digests"]
    for run in runs.values():
        run["outputs_equal_serial"] = run.pop("_digests") == serial
    preset = args.preset if args.data_dir is None else _preset_of(args.data_dir)
    figures = {
        "preset": preset,
        "data_dir": str(args.data_dir or ""),
        "job": "daily_refresh, every event day in one run (recsys backfill)",
        "runs": runs,
        "celery_2_over_1_speedup": round(
            runs["celery_1"]["seconds"] / runs["celery_2"]["seconds"], 2
        ),
        "machine": machine_info(),
    }
    save_figures(f"executors_{preset}", figures)


def _preset_of(data_dir: Path) -> str:
    """The generator preset of the data set in `data_dir` (its manifest), else "data"."""
    manifest = data_dir / "ground_truth" / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text()).get("config", {}).get("preset", "data")
    return "data"


if __name__ == "__main__":
    main()
