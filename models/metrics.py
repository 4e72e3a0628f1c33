"""Top-K ranking metrics as plain functions over (truth, recommendations) frames.

`truth`: user_id, item_id (the relevant items per user). `recommendations`: user_id,
item_id, rank (1 = best). Accuracy metrics are averaged over the users in `truth`; a user
with no recommendations scores 0. Beyond-accuracy metrics describe the recommendations
themselves and need the training interactions (`popularity`) or the catalog (`categories`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _top(recommendations: pd.DataFrame, k: int) -> pd.DataFrame:
    return recommendations[recommendations["rank"] <= k][["user_id", "item_id", "rank"]]


def _hits(truth: pd.DataFrame, recommendations: pd.DataFrame, k: int) -> pd.DataFrame:
    return _top(recommendations, k).merge(
        truth[["user_id", "item_id"]].drop_duplicates(), on=["user_id", "item_id"], how="inner"
    )


def _relevant_counts(truth: pd.DataFrame) -> pd.Series:
    return truth.drop_duplicates(["user_id", "item_id"]).groupby("user_id").size()


def _per_user(values: pd.Series, users: pd.Index) -> float:
    return float(values.reindex(users, fill_value=0.0).mean()) if len(users) else 0.0


# The accuracy metrics, each from the hits (the top-k's relevant items: user_id, item_id,
# rank) and the relevant items' count per user: `evaluate` finds both once for all six.
def _precision(hits: pd.DataFrame, relevant: pd.Series, k: int) -> float:
    return _per_user(hits.groupby("user_id").size() / k, relevant.index)


def _recall(hits: pd.DataFrame, relevant: pd.Series, k: int) -> float:
    found = hits.groupby("user_id").size()
    return _per_user(found / relevant.reindex(found.index), relevant.index)


def _ndcg(hits: pd.DataFrame, relevant: pd.Series, k: int) -> float:
    dcg = (1.0 / np.log2(hits["rank"] + 1)).groupby(hits["user_id"]).sum()
    discounts = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    idcg = pd.Series(discounts[np.minimum(relevant.to_numpy(), k) - 1], index=relevant.index)
    return _per_user(dcg / idcg.reindex(dcg.index), relevant.index)


def _map(hits: pd.DataFrame, relevant: pd.Series, k: int) -> float:
    hits = hits.sort_values(["user_id", "rank"])
    precision = (hits.groupby("user_id").cumcount() + 1) / hits["rank"]
    ap = precision.groupby(hits["user_id"]).sum()
    return _per_user(ap / relevant.reindex(ap.index), relevant.index)


def _hit_rate(hits: pd.DataFrame, relevant: pd.Series, k: int) -> float:
    return float(relevant.index.isin(hits["user_id"].unique()).mean()) if len(relevant) else 0.0


def _mrr(hits: pd.DataFrame, relevant: pd.Series, k: int) -> float:
    return _per_user(1.0 / hits.groupby("user_id")["rank"].min(), relevant.index)


ACCURACY = {
    "precision": _precision,
    "recall": _recall,
    "ndcg": _ndcg,
    "map": _map,
    "hr": _hit_rate,
    "mrr": _mrr,
}


def precision_at_k(truth: pd.DataFrame, recommendations: pd.DataFrame, k: int = 10) -> float:
    """Share of the top-k that is relevant, averaged over users."""
    return _precision(_hits(truth, recommendations, k), _relevant_counts(truth), k)


def recall_at_k(truth: pd.DataFrame, recommendations: pd.DataFrame, k: int = 10) -> float:
    """Share of each user's relevant items found in the top-k, averaged over users."""
    return _recall(_hits(truth, recommendations, k), _relevant_counts(truth), k)


def ndcg_at_k(truth: pd.DataFrame, recommendations: pd.DataFrame, k: int = 10) -> float:
    """Normalised discounted cumulative gain with binary relevance, averaged over users."""
    return _ndcg(_hits(truth, recommendations, k), _relevant_counts(truth), k)


def map_at_k(truth: pd.DataFrame, recommendations: pd.DataFrame, k: int = 10) -> float:
    """Mean average precision: per user, the precision at each hit's rank summed over the hits
    in the top-k and divided by the number of relevant items (as microsoft/recommenders'
    benchmark table reports MAP)."""
    return _map(_hits(truth, recommendations, k), _relevant_counts(truth), k)


def hit_rate_at_k(truth: pd.DataFrame, recommendations: pd.DataFrame, k: int = 10) -> float:
    """Share of users with at least one relevant item in the top-k."""
    return _hit_rate(_hits(truth, recommendations, k), _relevant_counts(truth), k)


def mrr_at_k(truth: pd.DataFrame, recommendations: pd.DataFrame, k: int = 10) -> float:
    """Mean reciprocal rank of the first relevant item in the top-k (0 when none)."""
    return _mrr(_hits(truth, recommendations, k), _relevant_counts(truth), k)


def catalog_coverage(recommendations: pd.DataFrame, n_items: int, k: int = 10) -> float:
    """Share of the catalog that appears in anyone's top-k."""
    return float(_top(recommendations, k)["item_id"].nunique() / max(n_items, 1))


def intra_list_diversity(
    recommendations: pd.DataFrame, categories: pd.Series, k: int = 10
) -> float:
    """Share of item pairs in a user's top-k from different categories, averaged over users.
    `categories`: category per item_id (index)."""
    top = _top(recommendations, k)
    top = top.assign(category=categories.reindex(top["item_id"]).to_numpy())
    sizes = top.groupby("user_id").size()
    same = top.groupby(["user_id", "category"], dropna=False).size().pipe(lambda c: c * (c - 1) / 2)
    pairs = sizes * (sizes - 1) / 2
    same_pairs = same.groupby(level="user_id").sum().reindex(pairs.index, fill_value=0)
    diverse = 1.0 - same_pairs[pairs > 0] / pairs[pairs > 0]
    return float(diverse.mean()) if len(diverse) else 0.0


def item_popularity(train: pd.DataFrame) -> pd.Series:
    """Share of training users who interacted with each item (index item_id): the reference
    for novelty and the long tail."""
    pairs = train.drop_duplicates(["user_id", "item_id"])
    return pairs.groupby("item_id").size() / max(pairs["user_id"].nunique(), 1)


def novelty(recommendations: pd.DataFrame, popularity: pd.Series, k: int = 10) -> float:
    """Mean self-information -log2(p) of the recommended items, in bits; p from
    `item_popularity`, items never seen in training count as rare as the rarest seen item."""
    top = _top(recommendations, k)
    if not len(top) or not len(popularity):
        return 0.0
    p = popularity.reindex(top["item_id"]).fillna(popularity.min()).to_numpy()
    return float(np.mean(-np.log2(p)))


def long_tail_items(popularity: pd.Series, head_share: float = 0.8) -> pd.Index:
    """Items outside the short head: the most popular items that together hold `head_share`
    of training interactions are the head; the rest (and unseen items) are the long tail."""
    ranked = popularity.sort_values(ascending=False)
    head = ranked.index[(ranked.cumsum() / ranked.sum()).shift(fill_value=0.0) < head_share]
    return popularity.index.difference(head)


def long_tail_share(recommendations: pd.DataFrame, popularity: pd.Series, k: int = 10) -> float:
    """Share of recommended items (top-k) that are long-tail or unseen items."""
    top = _top(recommendations, k)
    head = popularity.index.difference(long_tail_items(popularity))
    return float((~top["item_id"].isin(head)).mean()) if len(top) else 0.0


def evaluate(
    truth: pd.DataFrame,
    recommendations: pd.DataFrame,
    n_items: int,
    k: int = 10,
    popularity: pd.Series | None = None,
    categories: pd.Series | None = None,
) -> dict[str, float]:
    """Every metric at k for one model; beyond-accuracy metrics where their inputs are given.
    The hits and the relevant counts are found once for the six accuracy metrics (computed
    per metric, they took a third of the demo's evaluation)."""
    hits, relevant = _hits(truth, recommendations, k), _relevant_counts(truth)
    result = {f"{name}@{k}": metric(hits, relevant, k) for name, metric in ACCURACY.items()}
    result[f"coverage@{k}"] = catalog_coverage(recommendations, n_items, k)
    if categories is not None:
        result[f"diversity@{k}"] = intra_list_diversity(recommendations, categories, k)
    if popularity is not None:
        result[f"novelty@{k}"] = novelty(recommendations, popularity, k)
        result[f"long_tail@{k}"] = long_tail_share(recommendations, popularity, k)
    result["users"] = float(truth["user_id"].nunique())
    return result


def evaluate_by_segment(
    truth: pd.DataFrame,
    recommendations: pd.DataFrame,
    segments: pd.Series,
    n_items: int,
    k: int = 10,
    popularity: pd.Series | None = None,
    categories: pd.Series | None = None,
) -> dict[str, dict[str, float]]:
    """`evaluate` for all users and for each segment (`segments`: segment name per user_id)."""
    out = {"all": evaluate(truth, recommendations, n_items, k, popularity, categories)}
    for name in sorted(segments.dropna().unique()):
        users = segments.index[segments == name]
        out[str(name)] = evaluate(
            truth[truth["user_id"].isin(users)],
            recommendations[recommendations["user_id"].isin(users)],
            n_items,
            k,
            popularity,
            categories,
        )
    return out


def user_segments(train: pd.DataFrame, cold_max_items: int = 5) -> pd.Series:
    """`cold` for users with at most `cold_max_items` distinct training items, else `warm`."""
    items = train.drop_duplicates(["user_id", "item_id"]).groupby("user_id").size()
    return pd.Series(np.where(items <= cold_max_items, "cold", "warm"), index=items.index)
