"""Benchmark: the real-time service under load, on a copy of a materialized data directory.

    python -m bench.serving [--data-dir DIR] [--clients 8] [--workers 2] [--seconds 15]
                            [--requests 2000] [--skip-redis]

DIR is a data directory the pipeline has materialized (`make demo`; default
$RECSYS_DATA_DIR or ./data); it is copied first, so the events posted here never reach it.
The service (`python -m dagster_project.serving`, `--workers` uvicorn workers) runs on a
free loopback port; `--clients` client threads, each on its own keep-alive connection, send
requests until `--requests` are done or `--seconds` have passed. Measured, printed and
saved to bench/results/serving.json with the machine:

- `POST /recommend` for one user (k = 20, users active in the last week), SQLite and Redis
  profiles (a real redis-server on loopback, the views materialized into it): latency
  percentiles, requests per second, errors;
- event to visible: a client posts one event and asks `/recommend` right after; the time
  from the post to the answer that shows it (its `history_newest_at`), while the other
  clients keep asking for recommendations;
- `POST /events` in batches of 100 from every client: events accepted per second (and by
  each worker, with one worker's time per stage of the intake); then the
  service is stopped (it publishes what it landed), the daily run's ingestion and cleaning
  read the landing area, and the events they count from the intake's files are compared
  with the number accepted (none lost, none twice);
- Feast's own feature server (`dagster_project.feature_server`) under the same load,
  reading the same features (`user_recent_activity` of one user), side by side.

Targets (issue 20): /recommend p99 <= 25 ms without errors, event to visible p99 <= 1 s,
>= 5,000 events/s accepted with none lost.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from bench.feature_serving import running_feature_server
from bench.machine import machine_info
from dagster_project.resources import FeastResource
from dagster_project.settings import data_dir as default_data_dir
from dagster_project.settings import layout
from devtools.servers import free_port, redis_server

RESULTS = Path(__file__).parent / "results" / "serving.json"
EVENT_BATCH = 100
SAMPLE_DAYS = 7  # the users asked for: those active in the last week of behaviour
TARGETS = {"recommend_p99_ms": 25.0, "event_to_visible_p99_ms": 1000.0, "events_per_s": 5000.0}


def _percentiles(ms: list[float]) -> dict:
    if not ms:
        return {"calls": 0}
    values = np.asarray(ms)
    return {
        "calls": len(values),
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p95_ms": round(float(np.percentile(values, 95)), 2),
        "p99_ms": round(float(np.percentile(values, 99)), 2),
        "max_ms": round(float(values.max()), 2),
    }


@contextmanager
def running(command: list[str], port: int, env: dict[str, str]) -> Iterator[None]:
    """A server process on `port`, once GET /health answers 200; stopped by its PID (SIGTERM,
    which lets uvicorn shut its workers down and the intake publish its files)."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not _healthy(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[2]} did not start: {proc.stderr.read()[-800:]!r}")
            time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _healthy(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/health")
        ok = connection.getresponse().status == 200
        connection.close()
        return ok
    except OSError:
        return False


def _health(port: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/health")
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def _health_of_each_worker(port: int, workers: int, tries: int = 100) -> list[dict]:
    """`GET /health` of every worker process, each on a new connection until all have answered
    (the kernel spreads connections over the workers' sockets by a hash)."""
    seen: dict[int, dict] = {}
    for _ in range(tries):
        answer = _health(port)
        seen[answer["worker"]] = answer
        if len(seen) >= workers:
            break
    else:
        print(f"[serving] only {len(seen)} of {workers} workers answered /health", flush=True)
    return list(seen.values())


def _post(connection: http.client.HTTPConnection, path: str, body: object) -> tuple[int, bytes]:
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


def load(
    port: int,
    clients: int,
    requests: int,
    seconds: float,
    make: Callable[[int, int], tuple[str, object]],
    accepted: Callable[[bytes], int] | None = None,
) -> dict:
    """`clients` threads POST `make(client, n)` = (path, body) until `requests` in all or
    `seconds` have passed; latency percentiles, rate, errors, and the sum of
    `accepted(answer)` over the answers when given."""
    timings: list[float] = []
    errors: list[str] = []
    taken = [0]
    lock, stop = threading.Lock(), time.monotonic() + seconds
    share = -(-requests // clients)

    def client(c: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for n in range(share):
            if time.monotonic() > stop:
                break
            path, body = make(c, n)
            t0 = time.perf_counter()
            status, payload = _post(connection, path, body)
            elapsed = (time.perf_counter() - t0) * 1000
            with lock:
                timings.append(elapsed)
                if status != 200:
                    errors.append(f"{status}: {payload[:200]!r}")
                elif accepted is not None:
                    taken[0] += accepted(payload)
        connection.close()

    started, cpu_started = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    client_cpu = time.process_time() - cpu_started
    return {
        **_percentiles(timings),
        "per_s": round(len(timings) / wall, 1),
        "wall_s": round(wall, 2),
        # the load generator's own CPU (it shares the machine's cores with the service)
        "client_cpu_share_of_machine": round(client_cpu / (wall * (os.cpu_count() or 1)), 3),
        "errors": len(errors),
        "first_errors": errors[:3],
        "clients": clients,
        **({"accepted": taken[0]} if accepted is not None else {}),
    }


def recommend_load(port: int, users: list[str], args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(0)
    picks = rng.choice(users, size=args.requests)

    def make(c: int, n: int) -> tuple[str, object]:
        return "/recommend", {"user_id": str(picks[(c * 7919 + n) % len(picks)]), "k": 20}

    load(port, args.clients, 100, 10, make)  # warm-up
    result = load(port, args.clients, args.requests, args.seconds, make)
    # the floor: one client alone, so no request waits for another
    result["one_client"] = load(port, 1, args.requests // 4, args.seconds / 2, make)
    return result


def event_to_visible(
    port: int, users: list[str], items: list[str], args: argparse.Namespace
) -> dict:
    """One client posts an event and asks for the user's recommendations right after, while
    the others keep the service busy with /recommend."""
    background = threading.Thread(
        target=recommend_load,
        args=(port, users, argparse.Namespace(**{**vars(args), "clients": args.clients - 1})),
    )
    background.start()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    rng = np.random.default_rng(1)
    ms, shown = [], 0
    for n in range(100):
        user, item = str(rng.choice(users)), str(rng.choice(items))
        at = datetime.now(UTC).isoformat()
        event = {"user_id": user, "item_id": item, "event_type": "view", "event_time": at,
                 "event_id": f"bench-visible-{os.getpid()}-{n}"}  # fmt: skip
        t0 = time.perf_counter()
        _post(connection, "/events", [event])
        status, payload = _post(connection, "/recommend", {"user_id": user, "k": 20})
        ms.append((time.perf_counter() - t0) * 1000)
        newest = json.loads(payload).get("history_newest_at") if status == 200 else None
        shown += bool(newest) and pd.Timestamp(newest) >= pd.Timestamp(at).floor("ms")
    background.join()
    return {**_percentiles(ms), "shown_by_the_next_recommend": round(shown / len(ms), 3)}


def events_load(port: int, users: list[str], items: list[str], args: argparse.Namespace) -> dict:
    """Every client posts batches of `EVENT_BATCH` views of random users and items, now."""
    generators = [np.random.default_rng(100 + c) for c in range(args.clients)]

    def make(c: int, n: int) -> tuple[str, object]:
        at = datetime.now(UTC).isoformat()
        who = generators[c].integers(0, len(users), EVENT_BATCH)
        what = generators[c].integers(0, len(items), EVENT_BATCH)
        return "/events", [
            {"user_id": users[u], "item_id": items[i], "event_type": "view", "event_time": at,
             "event_id": f"bench-load-{c}-{n}-{j}"}
            for j, (u, i) in enumerate(zip(who, what, strict=True))
        ]  # fmt: skip

    result = load(
        port, args.clients, args.event_batches, args.seconds, make,
        accepted=lambda answer: int(json.loads(answer)["accepted"]),
    )  # fmt: skip
    result["events_sent"] = result["calls"] * EVENT_BATCH
    result["events_accepted_per_s"] = round(result["accepted"] / result["wall_s"], 1)
    return result


def count_after_daily_run(root: Path) -> dict:
    """The daily run's ingestion and cleaning over the landing area: the events it counts
    from the intake's files (clean, and quarantined as duplicates)."""
    from dagster_project.quality.cleaning import clean_events
    from dagster_project.sources.manifest import source_window
    from dagster_project.sources.raw_table import ingest_landing

    out = layout(root)
    raw = out.tables / "raw_events_bench"
    ingest_landing(out.landing, "events", raw)
    items = pl.read_parquet(out.table("items_clean"), columns=["item_id"])["item_id"]
    cleaned = clean_events(raw, items, source_window(out.landing), "bench", datetime.now(UTC))
    from_intake = pl.col("source_file").str.contains("intake-")
    bench_ids = pl.col("event_id").str.starts_with("bench-load-")
    clean = cleaned.clean.filter(from_intake & bench_ids)
    return {
        "clean_events_from_intake": clean.height,
        "distinct_event_ids": clean["event_id"].n_unique(),
        "quarantined_from_intake": cleaned.quarantine.filter(from_intake).height,
        "quarantined_from_intake_by_reason": dict(
            cleaned.quarantine.filter(from_intake)["reason"].value_counts().rows()
        ),
    }


def feast_server_load(root: Path, users: list[str], args: argparse.Namespace) -> dict:
    """Feast's own feature server (`running_feature_server`) under the same load, reading
    the same features for one user (`users`: pseudonyms)."""
    features = [f"user_recent_activity:{f}" for f in ("recent_items", "recent_event_types",
                "recent_event_times", "activity_day", "views_today")]  # fmt: skip

    def make(c: int, n: int) -> tuple[str, object]:
        user = users[(c * 7919 + n) % len(users)]
        return "/get-online-features", {"features": features, "entities": {"user_id": [user]}}

    with running_feature_server(root) as port:
        load(port, args.clients, 100, 10, make)
        return load(port, args.clients, args.requests, args.seconds, make)


def service(root: Path, port: int, workers: int, feast_config: str = "") -> list[str]:
    command = [sys.executable, "-m", "dagster_project.serving", "--port", str(port),
               "--workers", str(workers), "--data-dir", str(root)]  # fmt: skip
    return command + (["--feast-config", feast_config] if feast_config else [])


def materialize_recent_to_redis(root: Path) -> None:
    redis = FeastResource(data_dir=str(root), config_file="feature_store.redis.yaml")
    redis.apply()
    table = pd.read_parquet(
        layout(root).feature_table("user_recent_activity"), columns=["event_timestamp"]
    )
    redis.materialize(
        ["user_recent_activity"],
        table["event_timestamp"].min().to_pydatetime(),
        (table["event_timestamp"].max() + pd.Timedelta(seconds=1)).to_pydatetime(),
    )


def sample(root: Path) -> tuple[list[str], list[str], list[str]]:
    """Raw ids of the last week's users (each has a recent-activity row), available items,
    and the users' pseudonyms (the ids the tables and Feast hold)."""
    out = layout(root)
    events = pl.scan_csv(str(out.landing / "events" / "date=*" / "*.csv"), infer_schema=False)
    behaviour = pd.read_parquet(out.table("behaviour_events"), columns=["user_id", "event_time"])
    since = behaviour["event_time"].max().normalize() - pd.Timedelta(days=SAMPLE_DAYS - 1)
    known = set(behaviour.loc[behaviour["event_time"] >= since, "user_id"])
    from dagster_project.pseudonyms import pseudonymise

    raw_users = events.select("user_id").unique().collect()["user_id"].drop_nulls().to_list()
    pairs = [(u, p) for u, p in zip(raw_users, pseudonymise(raw_users), strict=True) if p in known]
    items = pd.read_parquet(out.table("items"), columns=["item_id", "available"])
    available = items.loc[items["available"], "item_id"].tolist()
    return [u for u, _ in pairs], available, [p for _, p in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--event-batches", type=int, default=1000)
    parser.add_argument("--skip-redis", action="store_true")
    args = parser.parse_args()
    source = (args.data_dir or default_data_dir()).resolve()
    if not (source / "models").is_dir():
        sys.exit(f"{source} holds no trained model: run `make demo` first")
    result: dict = {"benchmark": "serving", "targets": TARGETS, "config": {
        k: v for k, v in vars(args).items() if k != "data_dir"}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        root = Path(tmp) / "data"
        t0 = time.perf_counter()
        shutil.copytree(source, root, ignore=shutil.ignore_patterns("dagster_home", "gx"))
        print(f"[serving] copied {source} in {time.perf_counter() - t0:.1f} s", flush=True)
        users, items, pseudonyms = sample(root)
        env = {**os.environ, "RECSYS_DATA_DIR": str(root)}
        port = free_port()
        with running(service(root, port, args.workers), port, env):
            result["recommend_sqlite"] = recommend_load(port, users, args)
            print(f"[serving] /recommend, SQLite: {result['recommend_sqlite']}", flush=True)
            result["event_to_visible"] = event_to_visible(port, users, items, args)
            print(f"[serving] event to visible: {result['event_to_visible']}", flush=True)
            result["events"] = events_load(port, users, items, args)
            healths = _health_of_each_worker(port, args.workers)
            result["events"]["one_worker_intake_seconds"] = healths[0]["intake_seconds"]
            # 8 keep-alive connections hashed over 2 workers are often split unevenly: one
            # worker then carries most of the load while the other idles
            result["events"]["accepted_by_worker"] = [h["events"]["accepted"] for h in healths]
            print(f"[serving] POST /events: {result['events']}", flush=True)
        counted = result["events"]["after_daily_run"] = count_after_daily_run(root)
        # accepted here, then quarantined by the daily run: near duplicates that two worker
        # processes accepted apart (each checks against its own recent events)
        accounted = counted["distinct_event_ids"] + counted["quarantined_from_intake"]
        result["events"]["lost"] = result["events"]["accepted"] - accounted
        result["events"]["counted_twice"] = (
            counted["clean_events_from_intake"] - counted["distinct_event_ids"]
        )
        print(f"[serving] after the daily run: {result['events']['after_daily_run']}", flush=True)
        result["feast_feature_server"] = feast_server_load(root, pseudonyms, args)
        print(
            f"[serving] Feast's feature server, same load: {result['feast_feature_server']}",
            flush=True,
        )
        if not args.skip_redis:
            with redis_server() as url:
                env["RECSYS_REDIS_URL"] = os.environ["RECSYS_REDIS_URL"] = url
                materialize_recent_to_redis(root)
                port = free_port()
                with running(
                    service(root, port, args.workers, "feature_store.redis.yaml"), port, env
                ):
                    result["recommend_redis"] = recommend_load(port, users, args)
                print(f"[serving] /recommend, Redis: {result['recommend_redis']}", flush=True)
    result["machine"] = machine_info()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str))
    print(f"[serving] saved {RESULTS}")


if __name__ == "__main__":
    main()
