"""The celery executor profile, for real: a Redis broker on loopback, two dagster-celery
workers, and a backfill of every event day of the tiny shop whose steps they share out. Its
outputs are the serial run's."""

import json
from pathlib import Path

import pandas as pd
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

# The serial run's outputs: the tiny pipeline run in process (test_pipeline checks that it
# still writes them), whose backfill of every day writes the same tables as one long run.
SERIAL_RUN = Path(__file__).parent / "snapshots" / "tiny_outputs.json"


@pytest.mark.servers
def test_a_backfill_on_two_celery_workers_writes_what_a_serial_run_writes(tiny_layout, tmp_path):
    from dagster_project.definitions import every_event_day

    data_dir = fresh_data_dir(tiny_layout.root, tmp_path / "celery")
    days = every_event_day(data_dir)
    first, last = (
        days["dagster/asset_partition_range_start"],
        days["dagster/asset_partition_range_end"],
    )
    eve = f"{pd.Timestamp(last) - pd.Timedelta(days=1):%Y-%m-%d}"
    with redis_server() as url:
        env = executor_env("celery", broker=f"redis://{url}/0")
        with celery_workers(data_dir, 2, env) as logs:
            # The serial run's two runs (what `make demo` does): every day but the last, then
            # the last; the bot-score history dates each run's scores on its last day. Their
            # blocking checks passed: the online store included.
            backfill(data_dir, env, days=(first, eve))
            backfill(data_dir, env, days=(last, last))
    # Both workers executed steps: the run was shared out, not run by one.
    assert all(steps_run_by(log) > 0 for log in logs)
    # Every table and feature file (rows whatever their order, lineage aside) is the serial
    # run's; only the model's outputs, which this job does not build, are missing.
    serial, digests = json.loads(SERIAL_RUN.read_text()), output_digests(data_dir)
    assert len(digests) > 100 and set(digests) <= set(serial)
    assert {name: serial[name] for name in digests} == digests
