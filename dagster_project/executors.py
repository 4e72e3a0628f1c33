"""Where a run's steps execute, chosen by configuration alone ($RECSYS_EXECUTOR).

- `multiprocess` (also when unset): every step in a child process of the run, independent
  steps at the same time, as many as the cores, forked from a server that has imported the
  code once (`make demo` runs its jobs in process whatever is set). Dagster's own default
  spawns every step, which imports Dagster, Feast and torch again: a tiny backfill took
  145 s that way against 65 s forked, on 2 cores.
- `in_process`: every step in the run's own process, one after another.
- `celery`: every step is a task on a Celery queue, executed by whichever worker takes it
  (dagster-celery), on this machine or others that share the data directory and the Dagster
  instance. $RECSYS_CELERY_BROKER is the broker's URL (Redis: `redis://host:6379/0`); the
  results go to the same server unless $RECSYS_CELERY_BACKEND says otherwise. Workers:
  `recsys celery-workers --count 2` (`start_workers`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

EXECUTOR_ENV = "RECSYS_EXECUTOR"
CELERY_BROKER_ENV = "RECSYS_CELERY_BROKER"
CELERY_BACKEND_ENV = "RECSYS_CELERY_BACKEND"
EXECUTORS = ("multiprocess", "in_process", "celery")
# How often a Celery run looks for finished steps (one result lookup per running step).
CELERY_POLL_SECONDS = 0.1
# What the multiprocess executor's fork server imports once, before it forks a process per
# step: the code (spawning each step imported Dagster, Feast and torch again, seconds per
# step), and the libraries that steps import on first use. Measured on 2 cores, a forked step
# paid each of them again: GX 3.1 s in every suite, Data Docs and report step, scikit-learn
# 1.1 s in detection, Feast's materialization engine, online store and DuckDB offline store
# about 1 s in each Feast step. A run's fork server pays them once.
STEP_PRELOAD = (
    # first: Feast is then imported without its runtime checks, and torch's and OpenMP's
    # thread settings (models/__init__.py) are in place before scikit-learn loads OpenMP
    "dagster_project.definitions",
    "dagster_project.quality.validation",  # GX, with its analytics off as the platform sets
    "sklearn.ensemble",
    "recsys_feast.materialization",
    "recsys_feast.sqlite_store",
    "feast.infra.offline_stores.duckdb",
)


def celery_settings() -> dict[str, str]:
    """The Celery executor's config block (broker and result backend) from the environment;
    a clear error when the broker is not given."""
    broker = os.environ.get(CELERY_BROKER_ENV, "")
    if not broker:
        raise ValueError(
            f"{EXECUTOR_ENV}=celery needs {CELERY_BROKER_ENV}, the broker's URL "
            "(e.g. redis://127.0.0.1:6379/0)"
        )
    return {"broker": broker, "backend": os.environ.get(CELERY_BACKEND_ENV) or broker}


def platform_executor() -> ExecutorDefinition:
    """The executor $RECSYS_EXECUTOR names (`EXECUTORS`); `multiprocess` when unset."""
    name = os.environ.get(EXECUTOR_ENV, "") or "multiprocess"
    if name == "multiprocess":
        preload = {"preload_modules": list(STEP_PRELOAD)}
        return multiprocess_executor.configured({"start_method": {"forkserver": preload}})
    if name == "in_process":
        return in_process_executor
    if name == "celery":
        from dagster_celery import celery_executor, core_execution_loop

        executor = celery_executor.configured(celery_settings())
        # The run's loop sleeps this long between looks at its steps' tasks (dagster-celery's
        # default, 1 s): each step that waits for another started up to a second late.
        core_execution_loop.TICK_SECONDS = CELERY_POLL_SECONDS
        return executor
    raise ValueError(f"{EXECUTOR_ENV}={name!r}: choose one of {', '.join(EXECUTORS)}")


def start_workers(count: int, work_dir: Path, concurrency: int = 1) -> list[subprocess.Popen]:
    """Start `count` Celery workers of dagster-celery's app (`concurrency` steps each) for the
    broker in the environment; each logs to `work_dir/worker-<n>.log`. They read the data
    directory and the Dagster instance from the environment too ($RECSYS_DATA_DIR,
    $DAGSTER_HOME), as the runs that queue steps for them do. Stop them with `stop_workers`."""
    work_dir.mkdir(parents=True, exist_ok=True)
    settings = celery_settings()
    # dagster-celery's app reads its broker from a module `dagster_celery_config`, as its
    # own `dagster-celery worker start` writes it.
    (work_dir / "dagster_celery_config.py").write_text(
        f"broker_url = {settings['broker']!r}\nresult_backend = {settings['backend']!r}\n"
    )
    path = os.pathsep.join(p for p in (str(work_dir), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    workers = []
    for n in range(1, count + 1):
        command = [
            sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker",
            "--prefetch-multiplier=1", "--loglevel=INFO", f"--concurrency={concurrency}",
            "-n", f"recsys-{n}@%h",
        ]  # fmt: skip
        with open(work_dir / f"worker-{n}.log", "ab") as log:
            workers.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env))
    return workers


def stop_workers(workers: list[subprocess.Popen], timeout_s: float = 20.0) -> None:
    """Stop the workers by their PIDs: a warm shutdown, which lets a step in progress finish
    within `timeout_s`; a worker still running then is killed."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
