"""One backfill of a data directory on a chosen executor, as an operator runs it (`recsys
backfill`, `recsys celery-workers` in processes of their own), for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster_project.executors import CELERY_BROKER_ENV, EXECUTOR_ENV

RECSYS = [sys.executable, "-m", "dagster_project.cli"]
# What a data set is before any run: its landing files and ground truth (and the MiniLM
# vectors of its catalog texts, when given, so a benchmark does not time them again).
SOURCE_PARTS = ("landing", "ground_truth", "cache")


def fresh_data_dir(source: Path, target: Path) -> Path:
    """A new data directory holding `source`'s data set and nothing built from it."""
    for part in SOURCE_PARTS:
        if (source / part).exists():
            shutil.copytree(source / part, target / part)
    return target


def backfill(
    data_dir: Path,
    env: dict[str, str],
    timeout_s: float = 900,
    days: tuple[str, str] | None = None,
) -> float:
    """Run `recsys backfill` (daily_refresh over every event day, or the `days` first..last)
    on `data_dir` with the executor `env` names; its wall seconds. A failed run raises with
    its output."""
    started = time.perf_counter()
    chosen = ["--from", days[0], "--to", days[1]] if days else []
    done = subprocess.run(
        [*RECSYS, "backfill", "--data-dir", str(data_dir), *chosen],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if done.returncode != 0 or "success" not in done.stdout:
        raise RuntimeError(f"backfill failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


@contextmanager
def celery_workers(data_dir: Path, count: int, env: dict[str, str]) -> Iterator[list[Path]]:
    """`recsys celery-workers --count N` for `data_dir`; yields the workers' log files; on
    exit sends Ctrl-C (SIGINT) and waits until every worker stopped."""
    workers = subprocess.Popen(
        [*RECSYS, "celery-workers", "--count", str(count), "--data-dir", str(data_dir)], env=env
    )
    try:
        yield [data_dir / "celery" / f"worker-{n}.log" for n in range(1, count + 1)]
    finally:
        workers.send_signal(signal.SIGINT)
        try:
            workers.wait(timeout=30 + 25 * count)  # each worker gets 20 s to finish its step
        except subprocess.TimeoutExpired:
            workers.kill()
            workers.wait()
    if workers.returncode != 0:
        raise RuntimeError(f"recsys celery-workers exited with {workers.returncode}")


def steps_run_by(worker_log: Path) -> int:
    """How many steps a celery worker executed (from its log)."""
    return worker_log.read_text(errors="replace").count("succeeded in")


def executor_env(executor: str, broker: str = "") -> dict[str, str]:
    """This process's environment with $RECSYS_EXECUTOR (and the celery broker) set."""
    env = {**os.environ, EXECUTOR_ENV: executor}
    if broker:
        env[CELERY_BROKER_ENV] = broker
    return env
