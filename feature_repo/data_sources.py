"""Data sources: the Parquet snapshots written by the `features` asset group."""

from _paths import FEATURES_DIR
from feast import FileSource

user_features_source = FileSource(
    name="user_features_source",
    path=str(FEATURES_DIR / "user_features.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Daily cumulative behaviour snapshots per user (asset user_features).",
)

item_features_source = FileSource(
    name="item_features_source",
    path=str(FEATURES_DIR / "item_features.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Daily popularity and catalog snapshots per item (asset item_features).",
)

item_text_embedding_source = FileSource(
    name="item_text_embedding_source",
    path=str(FEATURES_DIR / "item_text_embedding.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="MiniLM vectors of item title + description (asset item_text_embeddings).",
)
