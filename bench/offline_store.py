"""Point-in-time training sets on each offline store: Feast's embedded DuckDB/file store and
its Spark store (PySpark in local mode on this machine), at 1M and 5M entity rows.

    python -m bench.offline_store [--data-dir DIR] [--rows 1000000,5000000]

The entity rows are the data set's behaviour events (user, item, time), drawn with
replacement up to each size; the features are the feature service `recommender_training`,
joined by `point_in_time_features` as the `training_set` asset joins them (in chunks of 100k
entity rows, on both stores: Spark in local mode ran out of its 4 GB heap on a 1M-row
chunk). Reports seconds and rows per second per store and size, whether both stores gave
the same rows on a sample, and saves bench/results/offline_store.json with the machine after
each measurement (`--stores` and `--rows` choose which). Needs a data directory built by
`make demo`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from bench.machine import machine_info, save_figures
from dagster_project.recommender.inputs import point_in_time_features
from dagster_project.resources import FeastResource
from dagster_project.settings import layout
from devtools.outputs import training_rows_in_order

STORES = {"duckdb": "feature_store.yaml", "spark": "feature_store.spark.yaml"}


def entity_rows(data_dir: Path, rows: int, seed: int = 0) -> pd.DataFrame:
    """`rows` (user_id, item_id, event_timestamp) drawn from the behaviour events."""
    events = pd.read_parquet(
        layout(data_dir).asset_table("behaviour_events"),
        columns=["user_id", "item_id", "event_time"],
    )
    sample = events.sample(rows, replace=rows > len(events), random_state=seed)
    return sample.rename(columns={"event_time": "event_timestamp"}).reset_index(drop=True)


def join(data_dir: Path, store_name: str, entity_df: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """Seconds of one point-in-time join on `store_name`, and its rows."""
    feast = FeastResource(data_dir=str(data_dir), config_file=STORES[store_name])
    feast.apply()
    store = feast.store()
    started = time.perf_counter()
    frame = point_in_time_features(store, entity_df, "recommender_training")
    return time.perf_counter() - started, frame


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Whether two joins hold the same rows (`training_rows_in_order`)."""
    a, b = training_rows_in_order(a), training_rows_in_order(b)
    try:
        pd.testing.assert_frame_equal(a, b[a.columns], check_dtype=False)
        return True
    except AssertionError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=layout().root)
    parser.add_argument("--rows", default="1000000,5000000")
    parser.add_argument("--stores", default="duckdb,spark")
    args = parser.parse_args()
    figures: dict = {
        "data_dir": str(args.data_dir),
        "feature_service": "recommender_training",
        "machine": machine_info(),
    }
    sample = entity_rows(args.data_dir, 20_000, seed=1)
    joined = {name: join(args.data_dir, name, sample)[1] for name in STORES}
    figures["same_rows_on_20k_sample"] = _same_rows(joined["duckdb"], joined["spark"])
    del joined
    save_figures("offline_store", figures)
    for rows in map(int, args.rows.split(",")):
        entity_df = entity_rows(args.data_dir, rows)
        for name in args.stores.split(","):
            print(f"[offline_store] {name}: {rows:,} entity rows ...", flush=True)
            seconds, frame = join(args.data_dir, name, entity_df)
            figures[f"{name}_{rows}"] = {
                "rows": len(frame),
                "seconds": round(seconds, 1),
                "rows_per_second": round(len(frame) / seconds),
            }
            print(f"[offline_store] {name}: {rows:,} rows in {seconds:.1f} s", flush=True)
            del frame
            save_figures("offline_store", figures)


if __name__ == "__main__":
    main()
