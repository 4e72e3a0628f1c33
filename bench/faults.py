"""Benchmark: faults and hostile input, each injected for real and judged pass or fail.

    python -m bench.faults [--data-dir DIR] [--seconds 30] [--kills 8] [--lines a,b]

Lines (issue 16's table), each printed and saved to bench/results/faults.json with the
machine:

- `bad_files`: every class of landing file that cannot be read whole (empty, unknown format,
  missing or nested required column, unreadable Parquet, corrupt data pages under an intact
  footer, broken gzip) beside files with bad records (wrong width, broken quotes, invalid
  UTF-8, blank lines, a BOM, CRLF, multi-line quoted records, gzip CSV, bad values of every
  cleaning rule). Must hold: rows accounted per file (read = clean + quarantined), each bad
  file named and quarantined whole, no raw table replaced when every file is bad.
- `ingest_kill`: `kill -9` of an ingest at `--kills` moments. Must hold: the raw table is
  the previous one or the complete new one, byte for byte, never a mix.
- `deletion`: a deletion whose plan meets a file it cannot rewrite, then one that can (a
  Latin-1 CSV export among them). Must hold: nothing changed by the first, the file named;
  exact bytes kept for every other record by the second.
- `feature_server` (needs DIR, a materialized data directory: `make demo`): 8 concurrent
  clients for `--seconds`, plus the hostile requests (writes without a token, a foreign
  Host, too many entities, a 2 MiB body), then 5 lookups of 10,000 users. Must hold: no
  5xx, p99 reported, hostile requests refused with 403 / 400 / 413, the server's resident
  memory at most 100 MB above what it was before the large lookups.
- `deletion_byte_search` (needs DIR): the `forget_user` job on a copy of DIR, its Dagster
  home included, for the user the event logs name most. Must hold: no byte of the copy
  (Parquet read uncompressed, SQLite free pages included) names the raw id or the pseudonym,
  but the saved model (the documented exception until the next retrain).
- `pipeline_kills`: `kill -9` at five moments of the tiny pipeline (ingest, cleaning, a
  backfill day, the Feast write, training), each followed by the next run without a hand,
  against a clean run (bench/pipeline_kills.py). Must hold: the next run starts within 2
  minutes of each kill; the tables equal the clean run's.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from bench.machine import RESULTS, machine_info
from bench.pipeline_kills import pipeline_kills
from dagster_project.quality.cleaning import clean_events, row_accounting
from dagster_project.sources.raw_table import ingest_landing, read_raw
from dagster_project.sources.records import LandingFileError

HEADER = "event_id,user_id,session_id,item_id,event_type,event_time,quantity,price,query"
WINDOW = ("2026-09-01T00:00:00Z", "2026-10-01T00:00:00Z")


def _event(n: int, user: str = "u1", when: str | None = None) -> str:
    when = when or f"2026-09-02T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"
    return f"e{n},{user},,i1,view,{when},,,"


def _landing(root: Path) -> Path:
    landing = root / "landing"
    (landing / "events").mkdir(parents=True)
    source = {"source": "faults", "window_start": WINDOW[0], "window_end": WINDOW[1]}
    (landing / "source.json").write_text(json.dumps(source))
    return landing


def _parquet(path: Path, rows: int = 500, **columns: list) -> None:
    table = {
        "event_id": [f"p{path.stem}{k}" for k in range(rows)],
        "user_id": [f"u{k % 9}" for k in range(rows)],
        "item_id": ["i1"] * rows,
        "event_type": ["view"] * rows,
        "event_time": [f"2026-09-03T10:{k // 60 % 60:02d}:{k % 60:02d}Z" for k in range(rows)],
        **columns,
    }
    pq.write_table(pa.table(table), path, compression="zstd")


def _corrupt_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    body = len(data) - int.from_bytes(data[-8:-4], "little") - 8
    data[body // 4 : body // 4 * 3] = bytes(body // 4 * 3 - body // 4)
    path.write_bytes(bytes(data))


BAD_RECORD_FILES = {  # file name -> lines after the header
    "wrong_width.csv": [_event(1), "e2,u1,i1,view"],
    "broken_quotes.csv": [_event(3), 'e4,"u1,,i1,view,2026-09-02T10:00:00Z,,,'],
    "blank_lines.csv": [_event(5), "", "   ", _event(6, "u2")],
    "multi_line_quoted.csv": [_event(7), 'e8,u1,,i1,view,2026-09-02T11:00:00Z,,,"two\nlines"'],
    "bad_values.csv": [
        "e9,,,i1,view,2026-09-02T10:00:00Z,,,",  # null user
        "e10,u1,,,view,2026-09-02T10:00:00Z,,,",  # null item
        "e11,u1,,i1,teleport,2026-09-02T10:00:00Z,,,",  # bad event type
        "e12,u1,,i1,view,yesterday,,,",  # bad timestamp
        "e13,u1,,i1,view,2099-01-01T00:00:00Z,,,",  # future
        "e14,u1,,i1,view,2026-08-01T00:00:00Z,,,",  # outside the window
        "e15,u1,,i1,purchase,2026-09-02T10:00:00Z,1,abc,",  # bad price
        "e16,u1,,i1,purchase,2026-09-02T10:00:00Z,1,-1,",  # non-positive price
        "e17,u1,,i1,purchase,2026-09-02T10:00:00Z,0.5,3,",  # bad quantity
        "e18,u1,,i9,view,2026-09-02T10:00:00Z,,,",  # unknown item
        "e15,u1,,i1,view,2026-09-02T12:00:00Z,,,",  # duplicate event id
    ],
}


def _write_landing(landing: Path) -> set[str]:
    """Good files, files with bad records, and bad files; returns the bad files' names."""
    events = landing / "events"
    for name, lines in BAD_RECORD_FILES.items():
        (events / name).write_text("\n".join([HEADER, *lines]) + "\n")
    (events / "crlf_bom.csv").write_bytes(
        b"\xef\xbb\xbf" + "\r\n".join([HEADER, _event(20), _event(21, "u3")]).encode() + b"\r\n"
    )
    (events / "invalid_utf8.csv").write_bytes(
        "\n".join([HEADER, _event(22)]).encode()
        + b"\ne23,u\xff1,,i1,view,2026-09-02T10:00:00Z,,,\n"
    )
    with gzip.open(events / "compressed.csv.gz", "wt") as handle:
        handle.write("\n".join([HEADER, _event(30), _event(40, "u4")]) + "\n")
    _parquet(events / "good.parquet")
    bad = {
        "empty.csv": lambda p: p.write_bytes(b""),
        "header_only_wrong.csv": lambda p: p.write_text("id,who,what\n1,2,3\n"),
        "notes.json": lambda p: p.write_text("{}"),
        "not_parquet.parquet": lambda p: p.write_bytes(b"PAR1 garbage"),
        "nested.parquet": lambda p: _parquet(p, user_id=[{"id": k} for k in range(500)]),
        "corrupt_pages.parquet": lambda p: (_parquet(p), _corrupt_pages(p)),
        "broken.csv.gz": lambda p: p.write_bytes(b"\x1f\x8b\x08 not gzip"),
    }
    for name, make in bad.items():
        make(events / name)
    return {f"events/{name}" for name in bad}


def bad_files(root: Path) -> dict:
    landing = _landing(root)
    expected_bad = _write_landing(landing)
    summary = ingest_landing(landing, "events", root / "raw_events")
    raw = read_raw(root / "raw_events")
    import pandas as pd

    window = tuple(pd.Timestamp(w) for w in WINDOW)
    cleaned = clean_events(
        raw, pl.Series(["i1"]), window, "faults", pd.Timestamp("2026-12-01", tz="UTC")
    )
    accounting = row_accounting(raw, cleaned.clean, cleaned.quarantine)
    reasons = cleaned.quarantine.group_by("reason").len().sort("reason")
    # Every file bad: the previous raw table must stay, byte for byte.
    before = {p: p.read_bytes() for p in (root / "raw_events").rglob("*") if p.is_file()}
    all_bad = _landing(root / "all_bad")
    _write_landing(all_bad)
    for p in (all_bad / "events").iterdir():
        if f"events/{p.name}" not in expected_bad:
            p.unlink()
    try:
        ingest_landing(all_bad, "events", root / "raw_events")
        refused = False
    except LandingFileError:
        refused = True
    after = {p: p.read_bytes() for p in (root / "raw_events").rglob("*") if p.is_file()}
    checks = {
        "rows accounted per file": bool(accounting["balanced"].all()),
        "each bad file named and quarantined whole": set(summary.bad_files) == expected_bad,
        "all bad: refused, previous table kept": refused and before == after,
    }
    return {
        "files": summary.files,
        "records": summary.rows,
        "bad_files": summary.bad_files,
        "quarantined_by_reason": dict(reasons.iter_rows()),
        "checks": checks,
        "pass": all(checks.values()),
    }


INGEST = (
    "import sys; from pathlib import Path; "
    "from dagster_project.sources.raw_table import ingest_landing; "
    "ingest_landing(Path(sys.argv[1]), 'events', Path(sys.argv[2]))"
)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


def ingest_kill(root: Path, kills: int) -> dict:
    landing = _landing(root)
    events = landing / "events"
    rng = np.random.default_rng(0)
    for day in range(6):
        lines = [_event(int(n), f"u{int(n) % 997}") for n in rng.integers(0, 80_000, 60_000)]
        (events / f"day{day}.csv").write_text("\n".join([HEADER, *lines]) + "\n")
    target = root / "raw_events"
    ingest_landing(landing, "events", target)
    previous = _snapshot(target)
    (events / "day6.csv").write_text("\n".join([HEADER, _event(1, "late")]) + "\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", INGEST, str(landing), str(root / "probe")], env=env, check=True
    )
    full_seconds = time.perf_counter() - started
    complete = _snapshot(root / "probe")
    outcomes = []
    for k in range(kills):
        delay = full_seconds * (k + 0.5) / kills
        proc = subprocess.Popen([sys.executable, "-c", INGEST, str(landing), str(target)], env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = _snapshot(target)
        state = "previous" if now == previous else "complete" if now == complete else "mixed"
        outcomes.append({"killed_after_s": round(delay, 2), "raw_table": state})
        if state == "complete":  # put the previous table back for the next kill
            late = (events / "day6.csv").read_bytes()
            (events / "day6.csv").unlink()
            ingest_landing(landing, "events", target)
            (events / "day6.csv").write_bytes(late)
    checks = {"never a mix of old and new": all(o["raw_table"] != "mixed" for o in outcomes)}
    return {
        "ingest_seconds": round(full_seconds, 2),
        "kills": outcomes,
        "checks": checks,
        "pass": all(checks.values()),
    }


def deletion(root: Path) -> dict:
    from dagster_project.privacy import DeletionError, forget_user_files
    from dagster_project.pseudonyms import pseudonymise
    from dagster_project.settings import layout

    out = layout(root / "data")
    landing = _landing(out.root)
    export = landing / "events" / "latin1.csv"
    export.write_bytes(
        (HEADER + "\n" + _event(1, "gone") + "\n" + _event(2, "kept")).encode()
        + ",caf\xe9".encode("latin-1")[1:]
        + b"\n"
    )
    out.tables.mkdir(parents=True)
    (pseudonym,) = pseudonymise(["gone"])
    pl.DataFrame({"user_id": [pseudonym, "x"]}).write_parquet(out.tables / "events_clean.parquet")
    (out.tables / "zz_unreadable.parquet").write_bytes(b"PAR1 garbage")
    watched = [export, out.tables / "events_clean.parquet"]
    before = {p: p.read_bytes() for p in watched}
    try:
        forget_user_files(out, "gone")
        named = False
    except DeletionError as error:
        named = "zz_unreadable.parquet" in str(error)
    unchanged = before == {p: p.read_bytes() for p in watched}
    (out.tables / "zz_unreadable.parquet").unlink()
    removed = forget_user_files(out, "gone")
    kept_exact = export.read_bytes() == before[export].replace(
        (_event(1, "gone") + "\n").encode(), b""
    )
    checks = {
        "a file it cannot rewrite: named, nothing changed": named and unchanged,
        "the user removed, other bytes exact": kept_exact and sum(removed.values()) == 2,
    }
    return {"removed": removed, "checks": checks, "pass": all(checks.values())}


def _most_logged_user(root: Path) -> str:
    """The raw id of the user whom the Dagster event logs name most often."""
    import re

    from dagster_project.pseudonyms import pseudonymise
    from dagster_project.sources.raw_table import read_landing

    raw_ids = sorted(set(read_landing(root / "landing", "events")["user_id"].drop_nulls()))
    by_pseudonym = dict(zip(pseudonymise(raw_ids), raw_ids, strict=True))
    logs = b"".join(p.read_bytes() for p in (root / "dagster_home").rglob("*.db"))
    counts: dict[str, int] = {}
    for name in re.findall(rb"p[0-9a-f]{16}", logs):
        if name.decode() in by_pseudonym:
            counts[name.decode()] = counts.get(name.decode(), 0) + 1
    return by_pseudonym[max(sorted(counts), key=counts.__getitem__)]


def deletion_byte_search(data_dir: Path | None, root: Path) -> dict:
    """forget_user (the real job, in the copy's own Dagster instance) for the user the event
    logs name most, on a copy of a materialized data directory; then every byte of the copy
    searched for the raw id and the pseudonym."""
    if data_dir is None or not (data_dir / "dagster_home").is_dir():
        return {"pass": False, "not_run": "needs --data-dir with a materialized run (make demo)"}
    import shutil

    from dagster import DagsterInstance

    from dagster_project.automation import forget_user
    from dagster_project.definitions import platform_resources
    from dagster_project.privacy import file_deletion_request
    from dagster_project.pseudonyms import pseudonymise
    from dagster_project.redaction import files_mentioning, mention_pattern
    from dagster_project.settings import layout

    shutil.copytree(data_dir, root)
    out = layout(root)
    raw_id = _most_logged_user(root)
    pattern = mention_pattern([raw_id, *pseudonymise([raw_id])])
    before = files_mentioning(root, pattern)
    resources = platform_resources(str(root))
    request = {"request_id": file_deletion_request(out, raw_id)}
    started = time.perf_counter()
    with DagsterInstance.from_config(str(out.dagster_home)) as instance:
        done = forget_user.execute_in_process(
            run_config={"ops": {"forget_user_everywhere": {"config": request}}},
            resources={"storage": resources["storage"], "feast": resources["feast"]},
            instance=instance,
        )
    seconds = time.perf_counter() - started
    after = {str(p.relative_to(root)): n for p, n in files_mentioning(root, pattern).items()}
    outside_model = [name for name in after if not name.startswith("models/")]
    checks = {
        "the job succeeded": done.success,
        "zero hits outside the saved model": done.success and not outside_model,
    }
    return {
        "files_mentioning_before": len(before),
        "files_mentioning_after": after,
        "job_seconds": round(seconds, 1),
        "checks": checks,
        "pass": all(checks.values()),
    }


def _request(port: int, path: str, body: bytes, headers: dict | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST", path, body, {"Content-Type": "application/json", **(headers or {})}
        )
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _hostile(port: int) -> dict[str, int]:
    write = b'{"feature_view_name": "user_recommendations", "df": {"user_id": ["u1"]}}'
    lookup = b'{"features": ["user_behaviour:views"], "entities": {"user_id": ["u1"]}}'
    many = json.dumps(
        {"features": ["user_behaviour:views"], "entities": {"user_id": ["u"] * 10_001}}
    )
    statuses = {
        f"write {path} without a token": _request(port, path, write)
        for path in ("/write-to-online-store", "/push", "/materialize", "/materialize-incremental")
    }
    statuses["foreign Host header"] = _request(
        port, "/get-online-features", lookup, {"Host": "evil.example"}
    )
    statuses["10,001 entities"] = _request(port, "/get-online-features", many.encode())
    statuses["2 MiB body"] = _request(port, "/get-online-features", b"x" * (2 << 20))
    return statuses


def _load(port: int, users: list[str], seconds: float, clients: int = 8) -> dict:
    timings: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop:
            body = json.dumps(
                {
                    "features": ["user_behaviour:views", "user_behaviour:purchases"],
                    "entities": {"user_id": [users[int(rng.integers(len(users)))]]},
                }
            )
            t0 = time.perf_counter()
            try:
                connection.request(
                    "POST", "/get-online-features", body, {"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status, connection = 599, http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with lock:
                timings.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ms = np.array(timings) * 1000
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": len(timings),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def feature_server(data_dir: Path | None, seconds: float) -> dict:
    if data_dir is None or not (data_dir / "features" / "user_features.parquet").is_file():
        return {"pass": False, "not_run": "needs --data-dir with a materialized store (make demo)"}
    import pandas as pd

    from bench.feature_serving import running_feature_server

    users = pd.read_parquet(data_dir / "features" / "user_features.parquet", columns=["user_id"])
    known = users["user_id"].unique().tolist()
    try:
        with running_feature_server(data_dir) as port:
            load = _load(port, known[:10_000], seconds)
            hostile = _hostile(port)
            memory = _memory_after_large_lookups(port, known)
    except RuntimeError as error:
        return {"pass": False, "not_run": str(error)}
    refused = {
        name: status == (403 if name.startswith("write") else 400 if "Host" in name else 413)
        for name, status in hostile.items()
    }
    checks = {
        "no 5xx under 8 clients": not any(int(k) >= 500 for k in load["statuses"]),
        "hostile requests refused": all(refused.values()),
        "memory comes back after large lookups": memory["retained_mb"] <= 100,
    }
    return {
        "load": load,
        "hostile": hostile,
        "memory": memory,
        "checks": checks,
        "pass": all(checks.values()),
    }


def _memory_after_large_lookups(port: int, users: list[str], lookups: int = 5) -> dict:
    """The server's resident memory before and after `lookups` requests of 10,000 users."""
    import psutil

    (server,) = [p for p in psutil.Process().children() if str(port) in p.cmdline()]
    before = server.memory_info().rss
    rng = np.random.default_rng(2)
    statuses = []
    for _ in range(lookups):
        body = json.dumps(
            {
                "features": ["user_behaviour:views", "user_embedding:embedding"],
                "entities": {"user_id": rng.choice(users, 10_000).tolist()},
            }
        )
        statuses.append(_request(port, "/get-online-features", body.encode()))
    after = server.memory_info().rss
    return {
        "statuses": statuses,
        "rss_before_mb": round(before / 2**20),
        "rss_after_mb": round(after / 2**20),
        "retained_mb": round((after - before) / 2**20),
    }


LINES = (
    "bad_files",
    "ingest_kill",
    "deletion",
    "deletion_byte_search",
    "pipeline_kills",
    "feature_server",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=os.environ.get("RECSYS_DATA_DIR", "data"))
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument(
        "--lines",
        default=",".join(LINES),
        help="comma-separated lines to run; the others keep their saved results",
    )
    args = parser.parse_args()
    chosen = args.lines.split(",")
    if unknown := set(chosen) - set(LINES):
        parser.error(f"unknown line(s) {sorted(unknown)}; the lines are {', '.join(LINES)}")
    data_dir = Path(args.data_dir).resolve()
    saved = RESULTS / "faults.json"
    results: dict = json.loads(saved.read_text()) if saved.exists() else {}
    results |= {"benchmark": "faults", "machine": machine_info()}
    runs = {
        "bad_files": lambda tmp: bad_files(tmp / "bad"),
        "ingest_kill": lambda tmp: ingest_kill(tmp / "kill", args.kills),
        "deletion": lambda tmp: deletion(tmp / "deletion"),
        "deletion_byte_search": lambda tmp: deletion_byte_search(data_dir, tmp / "copy"),
        "pipeline_kills": lambda tmp: pipeline_kills(tmp / "pipeline"),
        "feature_server": lambda tmp: feature_server(data_dir, args.seconds),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            print(f"[faults] {name} ...", flush=True)
            results[name] = runs[name](Path(tmp))
            print(
                f"[faults] {name}: {'PASS' if results[name]['pass'] else 'FAIL'} "
                f"{json.dumps(results[name].get('checks') or results[name].get('not_run'))}",
                flush=True,
            )
    results["passed"] = [k for k in LINES if results.get(k, {}).get("pass")]
    results["failed_or_not_run"] = [k for k in LINES if not results.get(k, {}).get("pass")]
    RESULTS.mkdir(exist_ok=True)
    saved.write_text(json.dumps(results, indent=1, default=str))
    print(
        f"[faults] passed {len(results['passed'])}; failed or not run: {results['failed_or_not_run']}"
    )
    print(f"[faults] saved {saved}")


if __name__ == "__main__":
    main()
