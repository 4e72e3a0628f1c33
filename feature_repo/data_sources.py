"""Data sources: the Parquet snapshots written by the `features` asset group."""

from _paths import FEATURES_DIR, offline_store_type
from feast import FileSource, PushSource
from feast.data_source import DataSource

SPARK = offline_store_type() == "spark"  # the profile feature_store.spark.yaml


def _features_file(table: str, description: str) -> DataSource:
    """A Parquet file the features group writes: feature time and write time per row. A
    file source for the embedded DuckDB store; a Spark source of the same file for Spark's."""
    source_args = {
        "name": f"{table}_source",
        "path": str(FEATURES_DIR / f"{table}.parquet"),
        "timestamp_field": "event_timestamp",
        "created_timestamp_column": "created",
        "description": description,
    }
    if SPARK:
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import (
            SparkSource,
        )

        return SparkSource(file_format="parquet", **source_args)
    return FileSource(**source_args)


user_features_source = _features_file(
    "user_features", "Behaviour snapshots per user and snapshot day (asset user_features)."
)
item_features_source = _features_file(
    "item_features", "Popularity and catalog snapshots per item (asset item_features)."
)
item_text_embedding_source = _features_file(
    "item_text_embedding",
    "MiniLM vectors of item title + description (asset item_text_embedding).",
)

# Model outputs, written by the recommender group after training.
user_embedding_source = _features_file(
    "user_embedding", "User vectors e_u of the trained recommender (asset model_vectors)."
)
item_embedding_source = _features_file(
    "item_embedding",
    "Item vectors e_i and biases b_i of the trained recommender (asset model_vectors).",
)
user_recommendations_source = _features_file(
    "user_recommendations",
    "Top-K items per user from the trained recommender (asset recommendations).",
)

# Recent activity: written whole by the daily batch (asset user_recent_activity) and advanced
# between runs by the real-time intake, which pushes each user's new row here.
user_recent_activity_push = PushSource(
    name="user_recent_activity_push",
    batch_source=_features_file(
        "user_recent_activity",
        "Per user: the newest events and today's counts (asset user_recent_activity).",
    ),
    description="Rows the real-time intake (POST /events) pushes as events arrive.",
)
