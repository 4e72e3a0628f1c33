"""Shared fixtures: a tiny generated shop, and the whole asset graph materialized on it once."""

import os
from pathlib import Path

import pandas as pd
import pytest

from dagster_project.settings import DataLayout, layout
from dagster_project.sources.synthetic.generator import generate, preset

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
# Under `make test`'s two pytest-xdist workers, each worker that gets a test reading the tiny
# run builds it once (session fixtures are per worker). One group on one worker
# (`--dist loadgroup`, which xdist 3.8 does not honour under pytest 9.2) was estimated at
# about 280 s on that worker, no better than two builds of about 70 s each.
PIPELINE_FIXTURES = {"pipeline_run", "tiny_layout"}
PIPELINE_MODULES = {"test_pipeline", "test_run_recovery"}
SERVER_FIXTURES = {"served"}
SERVER_MODULES = {"test_feast_redis", "test_ui"}
# The pipeline tests check the wiring, not the model's quality (tests/test_models.py and
# bench/recommender.py do): their runs train at most two epochs, not up to 200.
PIPELINE_SETTINGS = {"epochs": 2}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        fixtures = set(item.fixturenames)
        if PIPELINE_FIXTURES & fixtures or module in PIPELINE_MODULES:
            item.add_marker(pytest.mark.pipeline)
        if SERVER_FIXTURES & fixtures or module in SERVER_MODULES:
            item.add_marker(pytest.mark.servers)


@pytest.fixture(scope="session")
def tiny_layout(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    """The `tiny` preset's landing files and ground truth, generated once per session."""
    out = layout(tmp_path_factory.mktemp("tiny"))
    generate(preset("tiny"), out, progress=False)
    return out


class PipelineRuns:
    """The demo's runs, read as one: success, check evaluations, materializations."""

    def __init__(self, results: list) -> None:
        self.results = results
        self.success = len(results) == 3 and all(r.success for r in results)

    def get_asset_check_evaluations(self) -> list:
        return [c for r in self.results for c in r.get_asset_check_evaluations()]

    def get_asset_materialization_events(self) -> list:
        return [e for r in self.results for e in r.get_asset_materialization_events()]


@pytest.fixture(scope="session")
def pipeline_run(tiny_layout: DataLayout, tmp_path_factory: pytest.TempPathFactory):
    """Every asset and check materialized on the tiny data set as `make demo` does (a
    backfill of every event day but the last, the last day, the weekly retrain; the model
    trained for `PIPELINE_SETTINGS`' epochs), recorded in a Dagster instance under its data
    directory, so the UI test can show the runs."""
    from dagster import DagsterInstance

    from dagster_project.cli import materialize_all, prepare_dagster_home
    from dagster_project.privacy import opt_out_file
    from dagster_project.sources.raw_table import read_landing

    # The most active human user has opted out of recommendations (privacy/opt_out.txt).
    events = read_landing(tiny_layout.landing, "events").to_pandas()
    bots = set(pd.read_parquet(tiny_layout.ground_truth / "traffic_labels.parquet")["user_id"])
    humans = events.loc[events["user_id"].notna() & ~events["user_id"].isin(bots), "user_id"]
    opt_out = opt_out_file(tiny_layout)
    opt_out.parent.mkdir(parents=True, exist_ok=True)
    opt_out.write_text(f"# asked on 2026-09-20\n{humans.value_counts().index[0]}\n")
    home = prepare_dagster_home(tiny_layout.root)
    with DagsterInstance.from_config(str(home)) as instance:
        results = materialize_all(tiny_layout.root, instance=instance, **PIPELINE_SETTINGS)
    return PipelineRuns(results), tiny_layout


def shared_data() -> Path | None:
    """../shared/data beside the checkout, when present."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    return path if path.is_dir() else None
