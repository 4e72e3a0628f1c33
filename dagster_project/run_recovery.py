"""Runs whose process died are marked failed, so they stop holding the writing slot.

Dagster's default run launcher cannot tell whether a run's process is alive. After a
`kill -9`, an out-of-memory kill or a power cut, the run stays STARTED forever, and every
later run tagged `recsys/writes` waits behind it in the queue (one writing run at a time,
see `cli.prepare_dagster_home`); a `forget_user` request included.

- Every run that sets up the platform's storage records its run worker in the tag
  `recsys/run_worker`: host, pid and the process's start time (a reused pid is not taken for
  it). A step in a child process of the multiprocess executor records its parent, the run
  worker.
- `fail_dead_runs` marks every in-progress run whose worker on this host is gone (or a
  zombie) as failed, with the reason. Runs of other hosts, and runs that died before their
  storage was set up (no tag), are left alone.
- The `dead_runs_sensor` (automation/sensors.py) calls it every 30 s while the daemon runs, so a
  queued run starts within about a minute of the kill; `make demo` and the command line's
  jobs call it before they start.
"""

from __future__ import annotations

import multiprocessing
import os
import socket

import psutil
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

RUN_WORKER_TAG = "recsys/run_worker"
IN_PROGRESS = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def run_worker_identity() -> str:
    """`host:pid:start time` of the process running this run (the multiprocess executor's
    step processes name their parent)."""
    parent = multiprocessing.parent_process()
    pid = parent.pid if parent is not None and parent.pid is not None else os.getpid()
    return f"{socket.gethostname()}:{pid}:{psutil.Process(pid).create_time()!r}"


def record_run_worker(instance: DagsterInstance, run_id: str) -> None:
    """Tag the run with its worker, once (the first process to set up storage)."""
    run = instance.get_run_by_id(run_id)
    if run is not None and RUN_WORKER_TAG not in run.tags:
        instance.add_run_tags(run_id, {RUN_WORKER_TAG: run_worker_identity()})


def worker_alive(identity: str) -> bool | None:
    """Whether the worker a tag names is running: None when it ran on another host."""
    host, pid, started = identity.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    try:
        process = psutil.Process(int(pid))
        if abs(process.create_time() - float(started)) > 0.01:
            return False  # the pid was reused by another process
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def fail_dead_runs(instance: DagsterInstance) -> list[str]:
    """Mark every in-progress run whose worker on this host is gone as failed; returns
    their run ids."""
    failed = []
    for run in instance.get_runs(filters=RunsFilter(statuses=IN_PROGRESS)):
        identity = run.tags.get(RUN_WORKER_TAG)
        if identity is None or worker_alive(identity) is not False:
            continue
        instance.report_run_failed(
            run,
            f"the run's process ({identity}) is gone: it was killed or its machine stopped. "
            "Marked failed so that queued runs can start; re-run it to finish its work.",
        )
        failed.append(run.run_id)
    return failed
