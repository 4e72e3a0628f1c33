"""The one way values, names and paths go into DuckDB's SQL text, and results come back."""

from datetime import UTC, datetime

import pandas as pd
import polars as pl

from dagster_project.sql import (
    connect,
    parquet_relation,
    query_pandas,
    query_polars,
    sql_identifier,
    sql_text,
    sql_value,
)


def test_a_quote_in_a_path_a_value_or_a_name_cannot_break_a_query(tmp_path):
    folder = tmp_path / "it's here"
    folder.mkdir()
    path = folder / "t.parquet"
    pl.DataFrame({'a "b"': [1, 2], "c": ["x'y", "z"]}).write_parquet(path)
    name, value = 'a "b"', "x'y"
    with connect() as con:
        query = (
            f"SELECT {sql_identifier(name)} AS n, c FROM {parquet_relation(path)} "
            f"WHERE c = {sql_text(value)}"
        )
        frame = query_polars(con, query)
        assert frame.to_dicts() == [{"n": 1, "c": "x'y"}]
        assert query_pandas(con, query).equals(pd.DataFrame({"n": [1], "c": ["x'y"]}))


def test_python_values_become_typed_sql_literals():
    quoted = "it's"
    with connect() as con:
        row = query_pandas(
            con,
            f"SELECT {sql_value(pd.Timestamp('2026-09-01 12:00'))} AS t, {sql_value(True)} AS b, "
            f"{sql_value(3)} AS i, {sql_value(0.5)} AS f, {sql_value(quoted)} AS s",
        ).iloc[0]
    assert row["t"] == pd.Timestamp(datetime(2026, 9, 1, 12, tzinfo=UTC))  # naive = UTC
    assert bool(row["b"]) is True
    assert (row["i"], row["f"], row["s"]) == (3, 0.5, "it's")
