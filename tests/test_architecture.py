"""The import layers (pyproject's [tool.importlinter] contracts) and the Feast repo's
independence from the platform."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # Every contract ran: none was skipped or left out of the count.
    assert "Contracts: 6 kept, 0 broken." in done.stdout, done.stdout[-2000:]


def test_the_feast_repo_needs_nothing_from_the_platform():
    imported = set()
    for path in (ROOT / "feature_repo").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
    assert "feast" in imported  # the scan read the definitions
    assert not imported & {"dagster_project", "models", "dagster", "devtools", "bench"}
    for config in (ROOT / "feature_repo").glob("*.yaml"):
        assert "dagster_project" not in config.read_text(), config.name
