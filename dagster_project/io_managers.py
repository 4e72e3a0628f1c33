"""How data moves between assets: each table asset is stored as Parquet where `DataLayout`
puts it, and handed to the assets downstream as the type their argument asks for; the trained
model is saved and loaded as a model file.

An argument annotated `pd.DataFrame` or `pl.DataFrame` gets the table read whole (only the
columns named by `AssetIn(metadata={"columns": [...]})`, if given), `pl.LazyFrame` a scan,
and `Path` the stored file or folder, for steps that stream it through DuckDB. An asset
returns a pandas or polars frame (written atomically), or the `Path` where it streamed the
table itself (checked against the table's place). The day-by-day feature assets are read as
every day's snapshots."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow.parquet as pq
from dagster import (
    ConfigurableIOManager,
    Failure,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
)

from dagster_project.features.daily_runs import DailyTable, MissingDaysError
from dagster_project.recommender.inputs import model_path, trained_model
from dagster_project.resources import PlatformStorage, RecommenderSettings
from dagster_project.settings import DataLayout
from dagster_project.storage import (
    parquet_rows,
    publish_to_shared,
    shared_storage,
    write_parquet_atomic,
)
from models.embedding import EmbeddingRecommender

# The day-by-day assets, by the entity of their `DailyTable`.
DAILY_TABLES = {"user_daily_features": "user", "item_daily_features": "item"}


def table_metadata(frame: pd.DataFrame, path: Path, preview_rows: int = 5) -> dict:
    """Row count, file path, a preview and the column schema (shown in the UI's Columns tab)
    of a written table."""
    preview = frame.head(preview_rows).copy()
    for col in preview.columns:
        if preview[col].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
            preview[col] = preview[col].map(lambda v: f"[{len(v)} values]")
    return {
        "dagster/row_count": len(frame),
        "path": MetadataValue.path(str(path)),
        "preview": MetadataValue.md(
            preview.to_markdown(index=False) if len(preview) else "(empty)"
        ),
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(str(c), t) for c, t in frame.dtypes.astype(str).items()]
        ),
    }


def parquet_table_metadata(path: Path, preview_rows: int = 5) -> dict:
    """Row count, path, a preview and the schema of a Parquet table, without loading it; of a
    table kept by event day (a folder), every day's rows and the latest day's preview."""
    days = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    file = pq.ParquetFile(days[-1])
    preview = next(file.iter_batches(batch_size=preview_rows), None)
    frame = preview.to_pandas() if preview is not None else pd.DataFrame()
    return {
        **table_metadata(frame, path, preview_rows),
        "dagster/row_count": parquet_rows(path),
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(f.name, str(f.type)) for f in file.schema_arrow]
        ),
    }


@contextmanager
def missing_days_fail_the_step() -> Iterator[None]:
    """Days never built (`MissingDaysError`) fail the step with their message alone, as a
    Dagster Failure, not with a traceback."""
    try:
        yield
    except MissingDaysError as error:
        raise Failure(str(error)) from None


def _asset_name(context: OutputContext) -> str:
    return context.asset_key.to_user_string()


class ParquetTables(ConfigurableIOManager):
    """Table assets as Parquet files in the platform's data directory."""

    storage: PlatformStorage

    def handle_output(self, context: OutputContext, obj: object) -> None:
        name = _asset_name(context)
        out = self.storage.layout()
        path = out.asset_table(name)
        if isinstance(obj, pd.DataFrame):
            metadata = table_metadata(obj, write_parquet_atomic(obj, path))
        elif isinstance(obj, pl.DataFrame):  # its file's schema: polars types, not pandas'
            metadata = parquet_table_metadata(write_parquet_atomic(obj, path))
        elif isinstance(obj, Path):
            if obj.resolve() != path.resolve():
                raise ValueError(f"asset {name} wrote {obj}, but its table lives at {path}")
            raw_folder = path.is_dir() and not any(path.glob("*.parquet"))
            metadata = {} if raw_folder else parquet_table_metadata(path)
        else:
            raise TypeError(
                f"asset {name} returned a {type(obj).__name__}: a table asset returns a pandas "
                "or polars DataFrame, or the Path where it wrote its Parquet table"
            )
        shared = shared_storage(out.root)
        if shared:  # the table for every machine, as soon as it is written
            shared.publish(path)
            metadata["shared_url"] = MetadataValue.url(shared.url_of(path))
        context.add_output_metadata(metadata)

    def load_input(self, context: InputContext) -> object:
        name = _asset_name(context.upstream_output)
        wanted = context.dagster_type.typing_type
        columns = (context.definition_metadata or {}).get("columns")
        out = self.storage.layout()
        if name in DAILY_TABLES:
            return self._daily_snapshots(out, name, wanted, columns)
        path = out.asset_table(name)
        if wanted is Path:
            return path
        if not path.exists():
            raise Failure(f"table {name} is missing ({path} does not exist): materialize it first")
        if wanted is pd.DataFrame:
            return pd.read_parquet(path, columns=columns)  # a folder: its files (not .tmp ones)
        files = path / "*.parquet" if path.is_dir() else path  # a table kept by event day
        if wanted is pl.DataFrame:
            return pl.read_parquet(files, columns=columns)
        if wanted is pl.LazyFrame:
            scan = pl.scan_parquet(files)
            return scan.select(columns) if columns else scan
        raise TypeError(
            f"input {context.name} ({name}) is annotated {wanted}: annotate it pd.DataFrame, "
            "pl.DataFrame, pl.LazyFrame or Path"
        )

    def _daily_snapshots(
        self, out: DataLayout, name: str, wanted: object, columns: list | None
    ) -> pd.DataFrame:
        if wanted is not pd.DataFrame:
            raise TypeError(f"{name} is read as every day's snapshots: annotate it pd.DataFrame")
        with missing_days_fail_the_step():
            snapshots = DailyTable(out, DAILY_TABLES[name]).all_snapshots()
        return snapshots[columns] if columns else snapshots


class SavedModels(ConfigurableIOManager):
    """The trained embedding model, saved in the data directory's `models/` folder and loaded
    on the device the recommender settings name."""

    storage: PlatformStorage
    settings: RecommenderSettings

    def handle_output(self, context: OutputContext, obj: EmbeddingRecommender) -> None:
        if not isinstance(obj, EmbeddingRecommender):
            raise TypeError(f"{_asset_name(context)} returned a {type(obj).__name__}, not a model")
        out = self.storage.layout()
        path = obj.save(model_path(out).parent)
        publish_to_shared(out.root, model_path(out).parent)  # for the steps on other machines
        context.add_output_metadata({"path": MetadataValue.path(str(path))})

    def load_input(self, context: InputContext) -> EmbeddingRecommender:
        return trained_model(self.storage.layout(), self.settings.device)
