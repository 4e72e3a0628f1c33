"""Run the Great Expectations 1.x suites kept as JSON in `expectations/` against pandas frames."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import great_expectations as gx
from great_expectations.data_context.types.base import ProgressBarsConfig

DATASOURCE = "platform"


class SuiteNotFoundError(FileNotFoundError):
    """No reviewed suite JSON exists for the table."""


@dataclass
class ExpectationOutcome:
    """One expectation's verdict, in the words an analyst reads."""

    expectation: str
    column: str | None
    success: bool
    severity: str
    unexpected_count: int
    unexpected_percent: float
    sample: list[Any]
    notes: str
    error: str | None = None


@dataclass
class SuiteOutcome:
    """A whole suite's verdict on one table."""

    suite: str
    rows: int
    outcomes: list[ExpectationOutcome] = field(default_factory=list)
    docs_page: str | None = None

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def summary(self) -> str:
        if self.success:
            return (
                f"{self.suite}: all {len(self.outcomes)} expectations passed on {self.rows:,} rows"
            )
        lines = [
            f"{self.suite}: {len(self.failed)} of {len(self.outcomes)} expectations failed on {self.rows:,} rows"
        ]
        for o in self.failed:
            what = (
                o.error
                or f"{o.unexpected_count:,} rows ({o.unexpected_percent:.3f}%), e.g. {o.sample[:3]}"
            )
            lines.append(f"- {o.expectation}({o.column or ''}): {what} -- {o.notes}")
        return "\n".join(lines)


def load_suite_json(expectations_dir: Path, name: str) -> dict:
    """The reviewed suite definition for table `name`."""
    path = expectations_dir / f"{name}.json"
    if not path.is_file():
        raise SuiteNotFoundError(f"{path}: no expectation suite for table {name!r}")
    return json.loads(path.read_text())


def _jsonable(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


class SuiteRunner:
    """A file-backed GX context under `gx_root`; suites come from `expectations_dir`."""

    def __init__(self, gx_root: Path, expectations_dir: Path) -> None:
        gx_root.mkdir(parents=True, exist_ok=True)
        self.gx_root = gx_root
        self.expectations_dir = expectations_dir
        self.context = gx.get_context(mode="file", project_root_dir=str(gx_root))
        self.context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
        self.datasource = self.context.data_sources.add_or_update_pandas(DATASOURCE)

    def _batch_definition(self, table: str) -> Any:
        try:
            asset = self.datasource.get_asset(table)
        except LookupError:
            asset = self.datasource.add_dataframe_asset(table)
        try:
            return asset.get_batch_definition("whole_table")
        except KeyError:
            return asset.add_batch_definition_whole_dataframe("whole_table")

    def validate(
        self, table: str, frame: pd.DataFrame, parameters: dict[str, Any] | None = None
    ) -> SuiteOutcome:
        """Validate `frame` with the suite named after `table`; `parameters` fill `$PARAMETER`s."""
        spec = load_suite_json(self.expectations_dir, table)
        suite = self.context.suites.add_or_update(
            gx.ExpectationSuite(
                name=spec["name"], expectations=spec["expectations"], meta=spec.get("meta", {})
            )
        )
        definition = self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=table, data=self._batch_definition(table), suite=suite)
        )
        result = definition.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=parameters or {},
            result_format="SUMMARY",
        )
        outcome = SuiteOutcome(suite=spec["name"], rows=len(frame))
        for r in result.results:
            cfg = r.expectation_config
            res = r.result or {}
            error = (r.exception_info or {}).get("exception_message") if not r.success else None
            outcome.outcomes.append(
                ExpectationOutcome(
                    expectation=cfg.type,
                    column=cfg.kwargs.get("column"),
                    success=bool(r.success),
                    severity=(cfg.meta or {}).get("severity", "error"),
                    unexpected_count=int(res.get("unexpected_count") or 0),
                    unexpected_percent=float(res.get("unexpected_percent") or 0.0),
                    sample=[_jsonable(v) for v in (res.get("partial_unexpected_list") or [])[:10]],
                    notes=cfg.notes or (cfg.meta or {}).get("notes", ""),
                    error=error,
                )
            )
        return outcome

    def build_docs(self) -> Path:
        """Build the Data Docs site; returns the path of its index page."""
        self.context.build_data_docs()
        return self.gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"

    def latest_docs_page(self, table: str) -> Path | None:
        """The newest Data Docs page of the validation results for `table`."""
        folder = (
            self.gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "validations" / table
        )
        pages = (
            sorted(folder.rglob("*.html"), key=lambda p: p.stat().st_mtime)
            if folder.exists()
            else []
        )
        return pages[-1] if pages else None
