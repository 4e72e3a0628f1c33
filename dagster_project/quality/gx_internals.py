"""Great Expectations below its public API, in one place: the result classes and the
validation store that let suites evaluated in DuckDB SQL land in GX's results and Data Docs
as GX's own, and the progress-bar setting. Checked against great-expectations 1.24.1
(`GX_CHECKED`; tests/test_architecture.py fails on another version): before upgrading GX,
read these against its source and run tests/test_quality.py and the pipeline tier."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from great_expectations.core.expectation_validation_result import (
    ExpectationSuiteValidationResult,
    ExpectationValidationResult,
)
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

GX_CHECKED = "1.24.1"


def quiet_progress_bars(context: Any) -> None:
    """No progress bars from a GX context (they flood Dagster's logs)."""
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)


def expectation_result(
    expectation: dict, success: bool, result: dict, error: str | None
) -> ExpectationValidationResult:
    """GX's result of one expectation (as the suite's JSON gives it), evaluated elsewhere."""
    config = ExpectationConfiguration(
        type=expectation["type"],
        kwargs=expectation["kwargs"],
        meta=expectation.get("meta", {}),
        notes=expectation.get("notes"),
    )
    return ExpectationValidationResult(
        success=success,
        expectation_config=config,
        result=result,
        exception_info={
            "raised_exception": error is not None,
            "exception_message": error,
            "exception_traceback": None,
        },
    )


def suite_result(
    results: list[ExpectationValidationResult], suite_name: str, meta: dict
) -> ExpectationSuiteValidationResult:
    """GX's result of a whole suite, with its statistics."""
    passed = sum(r.success for r in results)
    return ExpectationSuiteValidationResult(
        success=all(r.success for r in results),
        results=results,
        suite_name=suite_name,
        statistics={
            "evaluated_expectations": len(results),
            "successful_expectations": passed,
            "unsuccessful_expectations": len(results) - passed,
            "success_percent": 100.0 * passed / len(results) if results else 100.0,
        },
        meta=meta,
    )


def store_suite_result(
    context: Any, table: str, result: ExpectationSuiteValidationResult, run_name: str
) -> ValidationResultIdentifier:
    """Store a suite's result in the context's validation store (Data Docs read it there);
    returns its identifier."""
    run_id = RunIdentifier(run_name=run_name, run_time=datetime.now(UTC))
    result.meta["run_id"] = run_id
    result.meta["validation_time"] = run_id.run_time
    suite_id = ExpectationSuiteIdentifier(name=result.suite_name)
    result_id = ValidationResultIdentifier(
        expectation_suite_identifier=suite_id, run_id=run_id, batch_identifier=table
    )
    context.validation_results_store.store_validation_results(
        suite_validation_result=result,
        suite_validation_result_identifier=result_id,
        expectation_suite_identifier=suite_id,
    )
    return result_id
