"""Top-K ranking metrics as plain functions over (truth, predictions) frames.

`truth`: user_id, item_id (the relevant items per user). `recommendations`: user_id,
item_id, rank (1 = best). Metrics are averaged over the users in `truth`; a user with no
recommendations scores 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _hits(truth: pd.DataFrame, recommendations: pd.DataFrame, k: int) -> pd.DataFrame:
    top = recommendations[recommendations["rank"] <= k][["user_id", "item_id", "rank"]]
    return top.merge(
        truth[["user_id", "item_id"]].drop_duplicates(), on=["user_id", "item_id"], how="inner"
    )


def precision_at_k(truth: pd.DataFrame, recommendations: pd.DataFrame, k: int = 10) -> float:
    """Share of the top-k that is relevant, averaged over users."""
    users = truth["user_id"].unique()
    hits = _hits(truth, recommendations, k).groupby("user_id").size().reindex(users, fill_value=0)
    return float((hits / k).mean()) if len(users) else 0.0


def recall_at_k(truth: pd.DataFrame, recommendations: pd.DataFrame, k: int = 10) -> float:
    """Share of each user's relevant items found in the top-k, averaged over users."""
    relevant = truth.drop_duplicates(["user_id", "item_id"]).groupby("user_id").size()
    hits = (
        _hits(truth, recommendations, k)
        .groupby("user_id")
        .size()
        .reindex(relevant.index, fill_value=0)
    )
    return float((hits / relevant).mean()) if len(relevant) else 0.0


def ndcg_at_k(truth: pd.DataFrame, recommendations: pd.DataFrame, k: int = 10) -> float:
    """Normalised discounted cumulative gain with binary relevance, averaged over users."""
    relevant = truth.drop_duplicates(["user_id", "item_id"]).groupby("user_id").size()
    hits = _hits(truth, recommendations, k)
    dcg = (
        (1.0 / np.log2(hits["rank"] + 1))
        .groupby(hits["user_id"])
        .sum()
        .reindex(relevant.index, fill_value=0.0)
    )
    discounts = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    idcg = discounts[np.minimum(relevant.to_numpy(), k) - 1]
    return float((dcg / idcg).mean()) if len(relevant) else 0.0


def catalog_coverage(recommendations: pd.DataFrame, n_items: int, k: int = 10) -> float:
    """Share of the catalog that appears in anyone's top-k."""
    return float(
        recommendations[recommendations["rank"] <= k]["item_id"].nunique() / max(n_items, 1)
    )


def evaluate(
    truth: pd.DataFrame, recommendations: pd.DataFrame, n_items: int, k: int = 10
) -> dict[str, float]:
    """Every metric at k for one model."""
    return {
        f"precision@{k}": precision_at_k(truth, recommendations, k),
        f"recall@{k}": recall_at_k(truth, recommendations, k),
        f"ndcg@{k}": ndcg_at_k(truth, recommendations, k),
        f"coverage@{k}": catalog_coverage(recommendations, n_items, k),
        "users": float(truth["user_id"].nunique()),
    }
