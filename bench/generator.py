"""Benchmark: the synthetic shop generator on one preset (rows/s and peak memory).

    python -m bench.generator --preset large [--data-dir DIR]

Prints the figures and saves them to bench/results/generator_<preset>.json with the machine.
"""

from __future__ import annotations

import argparse
import resource
import shutil
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
    parser.add_argument("--preset", default="large")
    parser.add_argument(
        "--data-dir", default=None, help="default: a temporary directory, removed afterwards"
    )
    args = parser.parse_args()
    root = Path(args.data_dir or tempfile.mkdtemp(prefix=f"bench-gen-{args.preset}-"))
    cfg = preset(args.preset)
    started = time.perf_counter()
    manifest = generate(cfg, layout(root))
    seconds = time.perf_counter() - started
    landing_bytes = sum(p.stat().st_size for p in (root / "landing").rglob("*") if p.is_file())
    figures = {
        "benchmark": "generator",
        "preset": args.preset,
        "users": cfg.n_users,
        "items": cfg.n_items,
        "event_rows": manifest["event_rows"],
        "catalog_rows": manifest["catalog_rows"],
        "chunks": -(-cfg.n_users // cfg.users_per_chunk),
        "seconds": round(seconds, 2),
        "event_rows_per_second": round(manifest["event_rows"] / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "landing_mb": round(landing_bytes / 2**20, 1),
        "event_format": cfg.event_format,
        "machine": machine_info(),
    }
    if args.data_dir is None:
        shutil.rmtree(root, ignore_errors=True)
    save_figures(f"generator_{args.preset}", figures)


if __name__ == "__main__":
    main()
