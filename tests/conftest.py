"""Shared fixtures: a tiny generated shop, and the whole asset graph materialized on it once."""

import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from dagster_project.settings import DataLayout, layout
from dagster_project.sources.synthetic.generator import generate, preset

if TYPE_CHECKING:
    from dagster import DagsterInstance

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
# A shared store exported for trying the profile (`python -m devtools.servers s3` prints the
# settings) must never receive the suite's tables: tests/test_shared_storage.py sets its own.
for _shared_setting in ("RECSYS_STORAGE_URL", "RECSYS_S3_ENDPOINT_URL"):
    os.environ.pop(_shared_setting, None)
# Under pytest-xdist (`make test`: `-n 2`), each worker gets its share of the cores for
# torch's threads (read when torch loads, after this file), not all of them. numpy's BLAS
# has already read its thread count (pandas is imported above) and keeps it.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))

# Test tiers (pyproject's markers; `make test-fast`, `test-pipeline`, `test-servers`; `make
# test` and CI run all three):
# - unit: everything not marked below, no pipeline, no server (about a minute);
# - pipeline: the whole graph on the tiny shop, a real `feast apply` or Dagster run, killed
#   processes;
# - servers: a server or a browser on loopback (the feature server, Redis, Chromium).
# - distributed: several processes of one job, or an engine beside Python (torchrun's
#   data-parallel training, Spark's JVM for the Spark offline store).
# The tiny run (`pipeline_run`) is built once per session, whatever the number of pytest-xdist
# workers (`make test`: two): the first worker that needs it builds it in the session's shared
# temporary folder while the others wait, and each worker tests its own copy. Its tests come
# first in the collection, so that xdist's first half of it (one worker's) holds them and the
# other worker starts on the tests that do not wait for the build. Building it once per
# worker cost about 70 s of the suite's time on 2 cores.
PIPELINE_FIXTURES = {"pipeline_run", "tiny_layout"}
PIPELINE_MODULES = {"test_pipeline", "test_run_recovery"}
SERVER_FIXTURES = {"served"}
SERVER_MODULES = {"test_feast_redis", "test_ui"}
# The pipeline tests check the wiring, not the model's quality (tests/test_models.py and
# bench/recommender.py do): their runs train one epoch, not up to 200.
PIPELINE_SETTINGS = {"epochs": 1}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        fixtures = set(item.fixturenames)
        if PIPELINE_FIXTURES & fixtures or module in PIPELINE_MODULES:
            item.add_marker(pytest.mark.pipeline)
        if SERVER_FIXTURES & fixtures or module in SERVER_MODULES:
            item.add_marker(pytest.mark.servers)
    _order_for_workers(items, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def _order_for_workers(items: list[pytest.Item], workers: int) -> None:
    """The tiny run's tests first, then tests that do not need it; those that start servers
    or several processes (the slow ones) from the second worker's share on. xdist's work
    stealing hands each worker an equal share of the collection in order: the first builds
    the tiny run and tests it, the second starts on the slow tests that do not wait for it.
    Within a group, the files' order stays."""
    on_the_run = [item for item in items if "pipeline_run" in item.fixturenames]
    # Those with a server of their module first: a worker that steals from the end of the
    # other's queue never takes one of them, and starts the server (the UI: about 15 s) again.
    on_the_run.sort(key=lambda item: not item.get_closest_marker("servers"))
    slow = [
        item
        for item in items
        if "pipeline_run" not in item.fixturenames
        and (item.get_closest_marker("servers") or item.get_closest_marker("distributed"))
    ]
    placed = {id(item) for item in on_the_run + slow}
    rest = [item for item in items if id(item) not in placed]
    first_share = max(len(items) // max(workers, 2) - len(on_the_run), 0)
    items[:] = on_the_run + rest[:first_share] + slow + rest[first_share:]


@pytest.fixture(scope="session")
def tiny_layout(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    """The `tiny` preset's landing files and ground truth, generated once per session."""
    out = layout(tmp_path_factory.mktemp("tiny"))
    generate(preset("tiny"), out, progress=False)
    return out


class PipelineRuns:
    """The demo's runs, read as one from the Dagster instance that recorded them: success,
    check evaluations, materializations."""

    def __init__(self, instance: "DagsterInstance", run_ids: list[str]) -> None:
        from dagster import DagsterEventType

        def events(kind: DagsterEventType) -> list:
            return [
                record.event_log_entry.dagster_event
                for run_id in run_ids
                for record in instance.get_records_for_run(run_id, of_type=kind).records
            ]

        runs = [instance.get_run_by_id(run_id) for run_id in run_ids]
        self.success = len(runs) == 3 and all(run is not None and run.is_success for run in runs)
        self.check_evaluations = [
            event.event_specific_data for event in events(DagsterEventType.ASSET_CHECK_EVALUATION)
        ]
        self.materializations = events(DagsterEventType.ASSET_MATERIALIZATION)

    def get_asset_check_evaluations(self) -> list:
        return self.check_evaluations

    def get_asset_materialization_events(self) -> list:
        return self.materializations


def _build_pipeline_run(root: Path) -> list[str]:
    """The tiny shop generated under `root` and every asset and check materialized on it as
    `make demo` does; the runs' ids."""
    from dagster import DagsterInstance

    from dagster_project.cli import materialize_all, prepare_dagster_home
    from dagster_project.privacy import opt_out_file
    from dagster_project.sources.raw_table import read_landing

    out = layout(root)
    generate(preset("tiny"), out, progress=False)
    # The most active human user has opted out of recommendations (privacy/opt_out.txt).
    events = read_landing(out.landing, "events").to_pandas()
    bots = set(pd.read_parquet(out.ground_truth / "traffic_labels.parquet")["user_id"])
    humans = events.loc[events["user_id"].notna() & ~events["user_id"].isin(bots), "user_id"]
    opt_out = opt_out_file(out)
    opt_out.parent.mkdir(parents=True, exist_ok=True)
    opt_out.write_text(f"# asked on 2026-09-20\n{humans.value_counts().index[0]}\n")
    home = prepare_dagster_home(out.root)
    with DagsterInstance.from_config(str(home)) as instance:
        results = materialize_all(out.root, instance=instance, **PIPELINE_SETTINGS)
    return [result.run_id for result in results]


def _built_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The tiny run's folder and run ids, built by the first worker of the session that asks
    (under an exclusive lock on a file in the workers' shared temporary folder, named by the
    session's id); a build that failed is not tried again by the other workers: they fail
    with its error."""
    shared = tmp_path_factory.getbasetemp()
    if session := os.environ.get("PYTEST_XDIST_TESTRUNUID", ""):
        shared = shared.parent  # the session's folder, above each worker's own
    name = f"tiny-pipeline-run{session[:12]}"
    built, record, failed = (shared / f"{name}{suffix}" for suffix in ("", ".json", ".failed"))
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if failed.exists():
            pytest.fail(f"the tiny run failed on another worker: {failed.read_text()}")
        if not record.exists():
            try:
                record.write_text(json.dumps(_build_pipeline_run(built)))
            except BaseException as error:
                failed.write_text(f"{type(error).__name__}: {error}"[-4000:])
                raise
    return built, json.loads(record.read_text())


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory):
    """Every asset and check materialized on the tiny data set as `make demo` does (a
    backfill of every event day but the last, the last day, the weekly retrain; the model
    trained for `PIPELINE_SETTINGS`' epochs), recorded in a Dagster instance under its data
    directory, so the UI test can show the runs: this worker's own copy of the session's one
    build (`_built_once`). The copy's Feast registry names the build's feature files, which
    no test changes."""
    from dagster import DagsterInstance

    built, run_ids = _built_once(tmp_path_factory)
    out = layout(tmp_path_factory.mktemp("tiny-run"))
    shutil.copytree(built, out.root, dirs_exist_ok=True)
    with DagsterInstance.from_config(str(out.dagster_home)) as instance:
        runs = PipelineRuns(instance, run_ids)
    return runs, out


def shared_data() -> Path | None:
    """../shared/data beside the checkout, when present."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    return path if path.is_dir() else None
