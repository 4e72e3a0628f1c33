"""Great Expectations 1.x suites kept as JSON in `expectations/`: evaluated, stored, rendered.

Two engines give the same verdicts (a test holds them to it):
- `SuiteRunner.validate_table`: each expectation compiled to DuckDB SQL over the table's Parquet
  file (one pass for the row-level expectations, out of core, multi-threaded). The results go
  into GX's validation store as GX results, so Data Docs render them. The pipeline uses this.
- `SuiteRunner.validate`: GX's own pandas engine over a whole in-memory frame. The reference,
  used by the equivalence test and the benchmark's naive baseline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import great_expectations as gx

from dagster_project.quality.gx_internals import (
    expectation_result,
    quiet_progress_bars,
    store_suite_result,
    suite_result,
)
from dagster_project.sql import connect, parquet_relation, query_polars, sql_identifier, sql_value

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
        quiet_progress_bars(self.context)
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

    def validate_table(
        self,
        table: str,
        path: Path | Sequence[Path],
        parameters: dict[str, Any] | None = None,
        run_name: str = "manual",
    ) -> SuiteOutcome:
        """Validate the Parquet table at `path` (a file, a folder of day files, or some of its
        day files) with the suite named after `table` (SQL engine), store the result in GX's
        validation store and render its Data Docs page."""
        relation = parquet_relation(path)
        outcome, gx_result = _validate_sql(self, table, relation, parameters or {})
        result_id = store_suite_result(self.context, table, gx_result, run_name)
        # Render this result's page (and the index) only; the data_docs asset renders all.
        self.context.build_data_docs(resource_identifiers=[result_id])
        outcome.docs_page = str(self.latest_docs_page(table) or "")
        return outcome

    @property
    def validations_dir(self) -> Path:
        """Where GX keeps every stored validation result (the check history)."""
        return self.gx_root / "gx" / "uncommitted" / "validations"

    @property
    def docs_index(self) -> Path:
        """The Data Docs site's index page."""
        return self.gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"

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


# -- the SQL engine -------------------------------------------------------------------------
SAMPLE_SIZE = 20
SQL_EXPECTATIONS = {
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_be_unique",
    "expect_compound_columns_to_be_unique",
    "expect_column_proportion_of_unique_values_to_be_between",
    "expect_table_row_count_to_be_between",
    "expect_table_columns_to_match_set",
}


def _resolve(value: Any, parameters: dict[str, Any]) -> Any:
    if isinstance(value, dict) and "$PARAMETER" in value:
        name = value["$PARAMETER"]
        if name not in parameters:
            raise KeyError(f"suite parameter {name!r} was not given")
        return parameters[name]
    return value


class _SqlSuite:
    """One suite over one relation (`tbl`) in a DuckDB connection."""

    def __init__(self, con: Any, parameters: dict[str, Any]) -> None:
        self.con = con
        self.parameters = parameters
        self.rows = con.execute("SELECT count(*) FROM tbl").fetchall()[0][0]
        self.columns = [r[0] for r in con.execute("DESCRIBE tbl").fetchall()]
        self.counts: dict[tuple[str, str], tuple[int, int]] = {}
        self._planned: list[tuple[str, str]] | None = None
        self._registered: set[str] = set()

    def _repeated_hashes(self, column: str) -> str:
        """A registered table `h` of the hashes that occur more than once in `column`."""
        name = f"repeated_{abs(hash(column)):x}"
        if name not in self._registered:
            col = sql_identifier(column)
            hashes = query_polars(
                self.con, f"SELECT hash({col}) AS h FROM tbl WHERE {col} IS NOT NULL"
            )["h"].sort()
            repeated = hashes.filter(hashes == hashes.shift()).unique()
            self.con.register(name, pa.table({"h": repeated.to_arrow()}))
            self._registered.add(name)
        return name

    def prepare(self, expectations: list[dict]) -> None:
        """Count every column map expectation of the suite in one scan (then `run` reads it)."""
        self._planned = []
        for exp in expectations:
            try:
                self.run(exp["type"], exp["kwargs"])
            except Exception:  # said properly when the expectation really runs
                continue
        planned, self._planned = list(dict.fromkeys(self._planned)), None
        if not planned:
            return
        columns = ", ".join(
            f"count(*) - count({sql_identifier(c)}), count_if({sql_identifier(c)} IS NOT NULL AND ({cond}))"
            for c, cond in planned
        )
        values = self.con.execute(f"SELECT {columns} FROM tbl").fetchall()[0]
        for i, key in enumerate(planned):
            self.counts[key] = (values[2 * i], values[2 * i + 1])

    def _one(self, query: str) -> Any:
        return self.con.execute(query).fetchall()[0][0]

    def _sample(self, column: str, condition: str) -> list[Any]:
        rows = self.con.execute(
            f"SELECT {sql_identifier(column)} FROM tbl WHERE {condition} LIMIT {SAMPLE_SIZE}"
        ).fetchall()
        return [_jsonable(pd.Timestamp(r[0]) if isinstance(r[0], datetime) else r[0]) for r in rows]

    def _map(self, column: str, unexpected: str, mostly: float, nulls_count: bool = False) -> dict:
        """A column map expectation: `unexpected` is the SQL condition on non-null values."""
        col = sql_identifier(column)
        if self._planned is not None:
            self._planned.append((column, unexpected))
            return {"success": True, "result": {}}
        missing, bad = (
            self.counts.get((column, unexpected))
            or self.con.execute(
                f"SELECT count(*) - count({col}), count_if({col} IS NOT NULL AND ({unexpected})) "
                "FROM tbl"
            ).fetchall()[0]
        )
        if nulls_count:
            bad, base = missing, self.rows
        else:
            base = self.rows - missing
        percent = 100.0 * bad / base if base else 0.0
        success = (base == 0) or (1 - bad / base) >= mostly
        sample = (
            [None] * min(bad, SAMPLE_SIZE)
            if nulls_count
            else (self._sample(column, f"{col} IS NOT NULL AND ({unexpected})") if bad else [])
        )
        return {
            "success": success,
            "result": {
                "element_count": self.rows,
                "missing_count": missing,
                "missing_percent": 100.0 * missing / self.rows if self.rows else None,
                "unexpected_count": bad,
                "unexpected_percent": percent,
                "partial_unexpected_list": sample,
            },
        }

    def run(self, kind: str, kwargs: dict[str, Any]) -> dict:
        k = {key: _resolve(v, self.parameters) for key, v in kwargs.items()}
        mostly = float(k.get("mostly", 1.0))
        column = k.get("column")
        if column is not None and column not in self.columns:
            raise KeyError(f"column {column!r} is not in the table")
        if kind == "expect_column_values_to_not_be_null":
            return self._map(column, "false", mostly, nulls_count=True)
        if kind == "expect_column_values_to_be_between":
            col, parts = sql_identifier(column), []
            if k.get("min_value") is not None:
                op = "<=" if k.get("strict_min") else "<"
                parts.append(f"{col} {op} {sql_value(k['min_value'])}")
            if k.get("max_value") is not None:
                op = ">=" if k.get("strict_max") else ">"
                parts.append(f"{col} {op} {sql_value(k['max_value'])}")
            return self._map(column, " OR ".join(parts) or "false", mostly)
        if kind == "expect_column_values_to_be_in_set":
            name = f"value_set_{id(k['value_set']):x}"  # the same list in planning and run
            if name not in self._registered:
                self.con.register(name, pd.DataFrame({"v": list(k["value_set"])}))
                self._registered.add(name)
            return self._map(
                column, f"{sql_identifier(column)} NOT IN (SELECT v FROM {name})", mostly
            )
        if kind == "expect_column_values_to_be_unique":
            col = sql_identifier(column)
            # Repeated values: candidates by sorting 64-bit hashes (much cheaper than grouping
            # millions of distinct strings), then compared exactly.
            name = self._repeated_hashes(column)
            return self._map(
                column,
                f"{col} IN (SELECT {col} FROM tbl WHERE hash({col}) IN (SELECT h FROM {name}) "
                f"GROUP BY {col} HAVING count(*) > 1)",
                mostly,
            )
        if kind == "expect_compound_columns_to_be_unique":
            cols = ", ".join(sql_identifier(c) for c in k["column_list"])
            any_present = " OR ".join(f"{sql_identifier(c)} IS NOT NULL" for c in k["column_list"])
            bad = self._one(
                f"SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM tbl WHERE {any_present} "
                f"GROUP BY {cols} HAVING count(*) > 1)"
            )
            base = self._one(f"SELECT count(*) FROM tbl WHERE {any_present}")
            return {
                "success": base == 0 or (1 - bad / base) >= mostly,
                "result": {
                    "element_count": self.rows,
                    "unexpected_count": int(bad),
                    "unexpected_percent": 100.0 * bad / base if base else 0.0,
                    "partial_unexpected_list": [],
                },
            }
        if kind == "expect_column_proportion_of_unique_values_to_be_between":
            col = sql_identifier(column)
            distinct, present = self.con.execute(
                f"SELECT count(DISTINCT {col}), count({col}) FROM tbl"
            ).fetchall()[0]
            return self._observed(distinct / present if present else None, k)
        if kind == "expect_table_row_count_to_be_between":
            return self._observed(self.rows, k)
        if kind == "expect_table_columns_to_match_set":
            expected, actual = set(k["column_set"]), set(self.columns)
            exact = k.get("exact_match", True)
            success = expected == actual if exact else expected <= actual
            return {
                "success": success,
                "result": {
                    "observed_value": sorted(actual),
                    "details": {
                        "mismatched": {
                            "unexpected": sorted(actual - expected),
                            "missing": sorted(expected - actual),
                        }
                    },
                },
            }
        raise NotImplementedError(f"{kind} has no SQL form; use one of {sorted(SQL_EXPECTATIONS)}")

    @staticmethod
    def _observed(value: float | None, k: dict[str, Any]) -> dict:
        low, high = k.get("min_value"), k.get("max_value")
        ok = value is not None
        if ok and low is not None:
            ok = value > low if k.get("strict_min") else value >= low
        if ok and high is not None:
            ok = value < high if k.get("strict_max") else value <= high
        return {"success": bool(ok), "result": {"observed_value": value}}


def _validate_sql(
    runner: SuiteRunner, table: str, relation: str, parameters: dict[str, Any]
) -> tuple[SuiteOutcome, Any]:
    spec = load_suite_json(runner.expectations_dir, table)
    results = []
    with connect() as con:
        con.execute(f"CREATE TEMP VIEW tbl AS SELECT * FROM {relation}")
        suite = _SqlSuite(con, parameters)
        suite.prepare(spec["expectations"])
        outcome = SuiteOutcome(suite=spec["name"], rows=suite.rows)
        for exp in spec["expectations"]:
            meta = exp.get("meta", {})
            try:
                verdict = suite.run(exp["type"], exp["kwargs"])
                error = None
            except Exception as exc:  # a broken expectation is a failed one, said in words
                verdict, error = {"success": False, "result": {}}, f"{type(exc).__name__}: {exc}"
            res = verdict["result"]
            results.append(expectation_result(exp, verdict["success"], res, error))
            outcome.outcomes.append(
                ExpectationOutcome(
                    expectation=exp["type"],
                    column=exp["kwargs"].get("column"),
                    success=bool(verdict["success"]),
                    severity=meta.get("severity", "error"),
                    unexpected_count=int(res.get("unexpected_count") or 0),
                    unexpected_percent=float(res.get("unexpected_percent") or 0.0),
                    sample=list(res.get("partial_unexpected_list") or [])[:10],
                    notes=exp.get("notes") or meta.get("notes", ""),
                    error=error,
                )
            )
    meta = {"engine": "duckdb-sql", "table": table, "rows": outcome.rows}
    return outcome, suite_result(results, spec["name"], meta)
