"""The UI in a real browser: headless Chromium (Debian's package, installed by
scripts/install_chromium.sh) against `dagster dev` on 127.0.0.1, over the tiny pipeline's
runs. Screenshots are saved under test-artifacts/screenshots/."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dagster_project.settings import PROJECT_ROOT
from devtools.servers import free_port, require_command

SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "screenshots"
GROUPS = (
    "ingest",
    "quality",
    "detection",
    "behaviour",
    "features",
    "feature_store",
    "recommender",
    "evaluation",
    "reports",
)


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def dagster_ui(pipeline_run):
    """`dagster dev` (webserver + daemon) over the tiny run's instance; stopped by its PID."""
    _, out = pipeline_run
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(out.dagster_home), "RECSYS_DATA_DIR": str(out.root)}
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(
        [*command, "-m", "dagster_project.definitions"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the webserver and daemon stop with it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"dagster dev did not start: {proc.stderr.read().decode()[-2000:]}"
                    ) from None
                time.sleep(1)
        # The first-visit community dialog would cover the pages; mark it seen.
        _graphql(url, "mutation { setNuxSeen }")
        yield url, out
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _chromium(url: str, screenshot: str) -> str:
    """The page's DOM once its scripts have run, and a 1600x1000 screenshot of it."""
    binary = require_command("chromium", "install_chromium.sh")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    flags = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1600,1000",
        "--virtual-time-budget=30000",
    ]
    path = SCREENSHOTS / f"{screenshot}.png"
    path.unlink(missing_ok=True)
    done = subprocess.run(  # one browser start for both: the screenshot and the DOM
        [binary, *flags, f"--screenshot={path}", "--dump-dom", url],
        capture_output=True,
        timeout=180,
        check=True,
    )
    assert path.stat().st_size > 10_000, f"{path} looks blank"
    return done.stdout.decode()


def test_asset_graph_lists_every_group_and_the_automation(dagster_ui):
    url, _ = dagster_ui
    page = _chromium(f"{url}/asset-groups", "asset_graph")
    missing = [group for group in GROUPS if f">{group}<" not in page]
    assert not missing, f"groups not on the asset graph page: {missing}"
    automation = _chromium(f"{url}/automation", "automation")
    for name in (
        "landing_files_sensor",
        "daily_refresh_schedule",
        "daily_model_refresh_schedule",
        "weekly_retrain_schedule",
    ):
        assert name in automation
    runs = _chromium(f"{url}/runs", "runs")
    assert "Success" in runs  # the tiny pipeline's run, recorded in the instance


def test_analyst_report_and_data_docs_render(dagster_ui):
    _, out = dagster_ui
    report = _chromium((out.reports / "quality_report.html").as_uri(), "quality_report")
    assert "quarantine" in report.lower() and "<table" in report
    docs = out.gx / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    index = _chromium(docs.as_uri(), "data_docs")
    assert "events_clean" in index and "items_clean" in index


def test_the_day_by_day_story_partitions_checks_and_freshness(dagster_ui):
    url, _ = dagster_ui
    partitions = _chromium(f"{url}/assets/user_daily_features?view=partitions", "partitions")
    # Every one of the tiny data's 21 event days is a materialized partition; the days since
    # (to yesterday) are missing, waiting for their data.
    assert "Materialized (21)" in partitions and "Failed (0)" in partitions
    assert ">2026-09-01<" in partitions  # the first event day, on the partitions bar
    checks = _chromium(f"{url}/assets/user_features?view=checks", "checks")
    assert "user_features_suite" in checks and "Succeeded" in checks
    assert "freshness_check" in checks and "Asset is currently fresh" in checks
