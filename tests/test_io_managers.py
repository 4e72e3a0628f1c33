"""Tables pass between assets through the Parquet IO manager: stored where the layout puts
them, handed over as the type each argument asks for, refused when misplaced or missing."""

from pathlib import Path

import pandas as pd
import polars as pl
from dagster import AssetIn, DagsterInstance, asset, materialize

from dagster_project.io_managers import ParquetTables
from dagster_project.resources import PlatformStorage
from dagster_project.settings import layout


def _run(assets: list, root: Path, **kwargs):
    io_manager = ParquetTables(storage=PlatformStorage(data_dir=str(root)))
    with DagsterInstance.ephemeral() as instance:
        return materialize(
            assets, instance=instance, resources={"io_manager": io_manager}, **kwargs
        )


@asset
def behaviour_events() -> pd.DataFrame:
    return pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["i1", "i2"], "n": [1, 2]})


@asset
def user_features() -> pl.DataFrame:  # a Feast source: stored under features/
    return pl.DataFrame({"user_id": ["u1"], "views": [3]})


received: dict[str, object] = {}


@asset(ins={"behaviour_events": AssetIn(metadata={"columns": ["user_id", "n"]})})
def as_pandas(behaviour_events: pd.DataFrame) -> None:
    received["pandas"] = behaviour_events


@asset(deps=[as_pandas])
def as_others(behaviour_events: pl.LazyFrame, user_features: pl.DataFrame) -> None:
    received["lazy"], received["polars"] = behaviour_events, user_features


@asset(ins={"behaviour_events": AssetIn(dagster_type=Path)})
def as_path(behaviour_events: Path) -> None:
    received["path"] = behaviour_events


def test_tables_are_stored_in_the_layout_and_read_as_each_argument_asks(tmp_path):
    result = _run([behaviour_events, user_features, as_pandas, as_others, as_path], tmp_path)
    assert result.success
    out = layout(tmp_path)
    assert out.table("behaviour_events").is_file() and out.feature_table("user_features").is_file()
    assert list(received["pandas"].columns) == ["user_id", "n"]  # only the columns asked for
    assert isinstance(received["lazy"], pl.LazyFrame)
    assert received["lazy"].collect()["n"].to_list() == [1, 2]
    assert received["polars"]["views"].to_list() == [3]
    assert received["path"] == out.table("behaviour_events")
    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "behaviour_events"
    ]
    metadata = event.event_specific_data.materialization.metadata
    assert metadata["dagster/row_count"].value == 2


@asset
def events_clean() -> Path:
    return Path("/somewhere/else.parquet")


@asset
def quarantine() -> dict:
    return {"not": "a table"}


def test_a_misplaced_output_an_unknown_one_or_a_missing_input_fails_its_step(tmp_path):
    result = _run(
        [events_clean, quarantine, behaviour_events, as_pandas],
        tmp_path,
        selection=["events_clean", "quarantine", "as_pandas"],  # behaviour_events never built
        raise_on_error=False,
    )
    errors = {f.step_key: f.event_specific_data.error for f in result.get_step_failure_events()}
    assert set(errors) == {"events_clean", "quarantine", "as_pandas"}
    assert "but its table lives at" in errors["events_clean"].cause.message
    assert "returned a dict" in errors["quarantine"].cause.message
    assert "table behaviour_events is missing" in errors["as_pandas"].message
