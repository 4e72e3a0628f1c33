"""What the recommender reads, as the pipeline builds it: the Feast features it trains on, its
configuration for the pipeline's settings, the catalog as the model sees it, the temporal
evaluation split and the saved model. (`features.model_outputs` holds what it pushes back.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dagster_project.features.build import price_bucket
from dagster_project.settings import DataLayout
from models.base import release_unused_memory
from models.embedding import EmbeddingConfig, EmbeddingRecommender
from models.split import VALIDATION_FOR, Split, temporal_holdout

# bot_score is left out: it is scored over the whole window, not point-in-time.
USER_FEATURES = tuple(
    f"user_behaviour__{f}"
    for f in [
        "views",
        "favorites",
        "carts",
        "purchases",
        "cart_rate",
        "purchase_rate",
        "spend",
        "tenure_days",
    ]
)
ITEM_FEATURES = tuple(
    f"item_stats__{f}"
    for f in ["views", "carts", "purchases", "view_to_cart_rate", "view_to_purchase_rate", "price"]
)


# Entity rows per point-in-time join: Feast's join of the default shop's 745k training rows in
# one call peaked 2.8 GB above the process (3.5 GB in all); in chunks of about 100k rows
# (8) 0.9 GB above it, in the same time (10.8 s against 11.5 s, 2 cores).
JOIN_ROWS = 100_000


def point_in_time_features(
    store: Any,
    entity_df: pd.DataFrame,
    service: str,
    rows: int = JOIN_ROWS,
    progress: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Feast's `get_historical_features` of `service` for `entity_df` (user_id, item_id,
    event_timestamp, ...), in chunks of about `rows` entity rows split by user, so memory
    stays bounded however long the history; the rows sorted by time, then user and item."""
    chunks = max(1, -(-len(entity_df) // rows))
    part = pd.util.hash_array(entity_df["user_id"].to_numpy(dtype=object)) % chunks
    features, tables = store.get_feature_service(service), []
    for chunk in range(chunks):
        tables.append(
            store.get_historical_features(
                entity_df=entity_df[part == chunk], features=features, full_feature_names=True
            ).to_arrow()
        )
        if chunks > 1:
            progress(f"point-in-time join: chunk {chunk + 1}/{chunks} ({len(tables[-1]):,} rows)")
    # In Arrow, then one conversion (Feast's to_df is to_arrow().to_pandas()): sorting and
    # re-indexing the pandas frame took 7 of the default shop's 17 s.
    table = pa.concat_tables(tables, promote_options="permissive")
    del tables
    order = [(column, "ascending") for column in ("event_timestamp", "user_id", "item_id")]
    table = table.take(pc.sort_indices(table, sort_keys=order))  # a stable sort
    release_unused_memory()  # Arrow's pool kept 0.9 GB of the default shop's join
    # each column's buffers freed as it is converted (the frame is written, not computed on)
    return table.to_pandas(self_destruct=True, split_blocks=True)


class ModelSettings(Protocol):
    """The pipeline's model settings (`resources.RecommenderSettings` is one)."""

    dim: int
    epochs: int
    train_seconds: float
    seed: int
    device: str
    test_days: int


def model_config(settings: ModelSettings) -> EmbeddingConfig:
    """The embedding model's configuration for the pipeline's settings and Feast features."""
    return EmbeddingConfig(
        dim=settings.dim,
        epochs=settings.epochs,
        train_seconds=settings.train_seconds,
        seed=settings.seed,
        device=settings.device,
        validation=VALIDATION_FOR["temporal"],  # as the evaluation tests it
        validation_days=float(settings.test_days),
        user_feature_columns=USER_FEATURES,
        item_feature_columns=ITEM_FEATURES,
    )


# What the catalog and the text vectors give the model (`model_items`).
CATALOG_COLUMNS = ["item_id", "category", "price"]
TEXT_COLUMNS = ["item_id", "embedding"]


def model_items(catalog: pd.DataFrame, text_embedding: pd.DataFrame) -> pd.DataFrame:
    """The catalog as the model sees it: item_id, category, price_bucket and text_embedding
    (the MiniLM vector of title + description), from the `items` and `item_text_embedding`
    tables."""
    catalog = catalog[CATALOG_COLUMNS]
    text = text_embedding[TEXT_COLUMNS].rename(columns={"embedding": "text_embedding"})
    return catalog.assign(price_bucket=price_bucket(catalog["price"])).merge(
        text, on="item_id", how="left"
    )


def stored_model_items(out: DataLayout) -> pd.DataFrame:
    """`model_items` of the tables stored under `out` (for the CLI and the benchmarks)."""
    return model_items(
        pd.read_parquet(out.asset_table("items"), columns=CATALOG_COLUMNS),
        pd.read_parquet(out.asset_table("item_text_embedding"), columns=TEXT_COLUMNS),
    )


def model_path(out: DataLayout) -> Path:
    """Where the `embedding_model` asset saves the model."""
    return out.models / "embedding" / "model.pt"


def trained_model(out: DataLayout, device: str) -> EmbeddingRecommender:
    """The model the `embedding_model` asset saved; FileNotFoundError saying what to run when
    there is none."""
    if not model_path(out).exists():
        raise FileNotFoundError(
            f"no trained model in {out.models}: run `make demo` (or materialize embedding_model)"
        )
    return EmbeddingRecommender.load(model_path(out), device)


# The behaviour_events columns the temporal split needs.
SPLIT_COLUMNS = ["user_id", "item_id", "event_type", "event_time"]
# The training_set columns the model reads (of its 47: less memory while it trains).
MODEL_TRAINING_COLUMNS = [*SPLIT_COLUMNS, *USER_FEATURES, *ITEM_FEATURES]


def evaluation_split(behaviour_events: pd.DataFrame, test_days: int) -> Split:
    """behaviour_events split at midnight `test_days` before the end (`temporal_holdout`)."""
    return temporal_holdout(behaviour_events[SPLIT_COLUMNS], test_days)
