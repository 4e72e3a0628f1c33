"""A run killed with `kill -9` is marked failed, so the writing runs queued behind it start."""

import os
import signal
import subprocess
import sys
import textwrap

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter, build_sensor_context

from dagster_project.automation import WRITES_DATA, dead_runs_sensor
from dagster_project.cli import prepare_dagster_home
from dagster_project.run_recovery import IN_PROGRESS, RUN_WORKER_TAG, fail_dead_runs

SLOW_RUN = """
import time
from dagster import DagsterInstance, job, op
from dagster_project.resources import PlatformStorage

@op(required_resource_keys={{"storage"}})
def wait(context):
    print("started", flush=True)
    time.sleep(600)

@job(tags={{"recsys/writes": "data_dir"}},
     resource_defs={{"storage": PlatformStorage(data_dir={data_dir!r})}})
def slow():
    wait()

with DagsterInstance.from_config({home!r}) as instance:
    slow.execute_in_process(instance=instance)
"""


def test_a_killed_run_is_marked_failed_and_frees_the_writing_slot(tmp_path):
    home = prepare_dagster_home(tmp_path)
    script = tmp_path / "slow_run.py"
    script.write_text(textwrap.dedent(SLOW_RUN.format(data_dir=str(tmp_path), home=str(home))))
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert process.stdout.readline().strip() == "started"
        with DagsterInstance.from_config(str(home)) as instance:
            [run] = instance.get_runs()
            assert run.status == DagsterRunStatus.STARTED
            assert run.tags[RUN_WORKER_TAG].split(":")[1] == str(process.pid)
            assert fail_dead_runs(instance) == []  # alive: left alone
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            # Dagster alone never learns: the run would hold the writing slot forever.
            assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
            dead_runs_sensor(build_sensor_context(instance=instance))
            after = instance.get_run_by_id(run.run_id)
            assert after.status == DagsterRunStatus.FAILURE
            failure = [
                e
                for e in instance.all_logs(run.run_id)
                if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE"
            ]
            assert "process" in failure[-1].dagster_event.message
            writing = RunsFilter(statuses=IN_PROGRESS, tags=WRITES_DATA)
            assert not instance.get_runs(filters=writing)  # the queue's slot is free
            assert fail_dead_runs(instance) == []  # once
    finally:
        process.kill()
        process.wait()
