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


def test_the_private_feast_and_gx_calls_were_checked_against_the_installed_versions():
    """Feast's and GX's internals are reached in one module each; a version other than the
    one they were read against must be checked again before it is used."""
    from importlib.metadata import version

    from dagster_project.quality.gx_internals import GX_CHECKED
    from recsys_feast.internals import FEAST_CHECKED

    assert version("feast") == FEAST_CHECKED
    assert version("great-expectations") == GX_CHECKED
    private = ("._get_", "_mmh3", "_table_id", "_quote_id", "great_expectations.core")
    allowed = {"recsys_feast/internals.py", "dagster_project/quality/gx_internals.py"}
    for path in [*ROOT.glob("dagster_project/**/*.py"), *ROOT.glob("recsys_feast/*.py")]:
        name = str(path.relative_to(ROOT))
        if name not in allowed:
            text = path.read_text()
            assert not [p for p in private if p in text], name
            assert not _private_imports(text), (name, _private_imports(text))


def _private_imports(source: str) -> list[str]:
    """Imports that reach below Feast's or GX's public API: a private name from either, or
    any GX submodule (GX's public API is its top-level package)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            if top in ("feast", "great_expectations"):
                found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
                if top == "great_expectations" and node.module != "great_expectations":
                    found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("great_expectations.")]
    return found
