"""The machine a benchmark ran on, saved beside its figures."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict:
    """CPU model, cores, memory, OS, Python and key library versions, and the time."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu
            )
        with open("/proc/meminfo") as f:
            mem_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
    except OSError:
        mem_kb = 0
    versions = {}
    for name in (
        "pandas",
        "numpy",
        "torch",
        "dagster",
        "feast",
        "great_expectations",
        "duckdb",
        "pyarrow",
    ):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": commit,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def save_figures(name: str, figures: dict) -> Path:
    """Save `figures` (with their machine) as bench/results/<name>.json, print them without
    the machine, and return the path."""
    target = RESULTS / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(figures, indent=2))
    print(json.dumps({k: v for k, v in figures.items() if k != "machine"}, indent=2))
    print(f"saved to {target}")
    return target
