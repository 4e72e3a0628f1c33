"""The celery executor profile, for real: a Redis broker on loopback, two dagster-celery
workers, and a backfill of every event day of the tiny shop whose steps they share out. Its
outputs are the serial run's."""

import sqlite3
from pathlib import Path

import pytest

from devtools.backfills import (
    backfill,
    celery_workers,
    executor_env,
    fresh_data_dir,
    steps_run_by,
)
from devtools.outputs import output_digests
from devtools.servers import redis_server


def _online_rows(data_dir: Path) -> dict[str, list[tuple]]:
    """Every row of the SQLite online store, per table, sorted; the write time left out."""
    with sqlite3.connect(data_dir / "feast" / "online_store.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            table: sorted(
                db.execute(
                    f"SELECT entity_key, feature_name, value, event_ts FROM {table}"
                ).fetchall()
            )
            for table in tables
        }


@pytest.mark.servers
def test_a_backfill_on_two_celery_workers_writes_what_a_serial_run_writes(tiny_layout, tmp_path):
    serial = fresh_data_dir(tiny_layout.root, tmp_path / "serial")
    backfill(serial, executor_env("in_process"))
    parallel = fresh_data_dir(tiny_layout.root, tmp_path / "celery")
    with redis_server() as url:
        env = executor_env("celery", broker=f"redis://{url}/0")
        with celery_workers(parallel, 2, env) as logs:
            backfill(parallel, env)
    # Both workers executed steps: the run was shared out, not run by one.
    assert all(steps_run_by(log) > 0 for log in logs)
    # The same tables (rows whatever their order, lineage aside) and the same online store.
    digests = output_digests(parallel)
    assert len(digests) > 20 and digests == output_digests(serial)
    assert _online_rows(parallel) == _online_rows(serial)
