"""Model outputs as Feast feature tables: vectors and top-K lists per entity, stamped with
the time the model's data ends (its feature clock) and the model version."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import polars as pl

if TYPE_CHECKING:
    from dagster_project.settings import DataLayout
    from models.embedding import EmbeddingRecommender


def feast_table(
    frame: pd.DataFrame, event_timestamp: pd.Timestamp | pd.Series, vector_columns: tuple[str, ...]
) -> pl.DataFrame:
    """`frame` plus event_timestamp and created (now), with `vector_columns` (one numpy array
    per row) as float32 lists: the layout Feast reads as Array(Float32)."""
    frame = frame.assign(event_timestamp=event_timestamp, created=pd.Timestamp.now(tz="UTC"))
    table = pl.from_pandas(frame.drop(columns=list(vector_columns)))
    return table.with_columns(
        pl.Series(c, list(frame[c]), dtype=pl.List(pl.Float32)) for c in vector_columns
    )


def recommendation_lists(
    recommendations: pd.DataFrame, model_version: str, as_of: pd.Timestamp
) -> pl.DataFrame:
    """One row per user from (user_id, item_id, rank, score) rows: item_ids and scores in rank
    order, the model version, event_timestamp `as_of`."""
    lists = (
        pl.from_pandas(recommendations[["user_id", "item_id", "rank", "score"]])
        .sort("user_id", "rank")
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("item_id").alias("item_ids"), pl.col("score").cast(pl.Float32).alias("scores"))
        .to_pandas()
    )
    return feast_table(lists.assign(model_version=model_version), as_of, ())


def vector_table(vectors: pd.DataFrame, model_version: str, as_of: pd.Timestamp) -> pl.DataFrame:
    """A user or item vector table (key, embedding[, bias]) with the model version and
    event_timestamp `as_of`."""
    return feast_table(vectors.assign(model_version=model_version), as_of, ("embedding",))


def served_user_vectors(out: DataLayout, model: EmbeddingRecommender) -> bool:
    """Let `model` score from the user vectors stored for Feast (`user_embedding`) when they
    are this model's (its version and the time its data ends) and cover every user it knows,
    so the served vectors reproduce its rankings and no history is encoded twice. Returns
    whether they were; otherwise the model encodes the histories itself."""
    path = out.asset_table("user_embedding")
    if not path.exists():
        return False
    stored = pd.read_parquet(
        path, columns=["user_id", "embedding", "model_version", "event_timestamp"]
    )
    if set(stored["model_version"]) != {model.version}:
        return False
    if set(stored["event_timestamp"]) != {pd.Timestamp(model.trained_until)}:
        return False
    try:
        model.use_user_vectors(stored)
    except ValueError:  # a known user without a vector, e.g. one forgotten since
        return False
    return True
