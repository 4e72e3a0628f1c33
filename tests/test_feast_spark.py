"""The Spark offline store profile, for real: PySpark in local mode builds the point-in-time
training set of the tiny run, and gives the rows the embedded DuckDB/file store gives."""

import pandas as pd
import pytest

from dagster_project.recommender.inputs import point_in_time_features
from dagster_project.resources import FeastResource
from devtools.outputs import training_rows_in_order

pytestmark = pytest.mark.distributed  # a JVM beside Python (Java 17: make test-tools)


def _entity_rows(out, rows: int = 3000) -> pd.DataFrame:
    """Behaviour events of the tiny run as the training set's entity rows: who, what, when."""
    events = pd.read_parquet(
        out.asset_table("behaviour_events"), columns=["user_id", "item_id", "event_time"]
    )
    sample = events.sample(rows, random_state=3).rename(columns={"event_time": "event_timestamp"})
    return sample.reset_index(drop=True)


def _training_rows(out, config_file: str, entity_df: pd.DataFrame) -> pd.DataFrame:
    feast = FeastResource(data_dir=str(out.root), config_file=config_file)
    feast.apply()  # Feast's `feast apply` command line with the profile's sources
    store = feast.store()
    return training_rows_in_order(point_in_time_features(store, entity_df, "recommender_training"))


def test_the_spark_offline_store_builds_the_same_training_rows(pipeline_run):
    _, out = pipeline_run
    entity_df = _entity_rows(out)
    duckdb = _training_rows(out, "feature_store.yaml", entity_df)
    spark = _training_rows(out, "feature_store.spark.yaml", entity_df)
    store = FeastResource(data_dir=str(out.root), config_file="feature_store.spark.yaml").store()
    assert store.config.offline_store.type == "spark"
    assert len(spark) == len(duckdb) == len(entity_df)
    features = [c for c in duckdb.columns if "__" in c]
    assert len(features) >= 10 and set(spark.columns) == set(duckdb.columns)
    assert duckdb[features].notna().mean().mean() > 0.5  # the join found most rows' features
    pd.testing.assert_frame_equal(
        spark[duckdb.columns], duckdb, check_dtype=False, check_exact=False, rtol=1e-9
    )
