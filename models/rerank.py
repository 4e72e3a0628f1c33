"""Re-ranking of a model's candidates: diversity (MMR) and a long-tail preference.

Both take a candidate frame (user_id, item_id, score; more candidates than the final k, e.g.
`recommend(users, 5 * k)`) and return user_id, item_id, rank, score with k rows per user.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def mmr(
    candidates: pd.DataFrame, item_vectors: pd.DataFrame, k: int = 10, diversity: float = 0.3
) -> pd.DataFrame:
    """Maximal marginal relevance: pick, one at a time, the candidate maximising
    (1 - diversity) * relevance - diversity * (max cosine similarity to the items picked).

    `item_vectors`: item_id, embedding. Relevance is the score min-max scaled per user;
    diversity 0 keeps the model's order, 1 spreads as far as the vectors allow."""
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be in [0, 1], got {diversity}")
    vectors = item_vectors.set_index("item_id")["embedding"]
    rows = []
    for _, group in candidates.groupby("user_id", sort=False):
        group = group.sort_values("score", ascending=False)
        score = group["score"].to_numpy(float)
        relevance = (score - score.min()) / max(score.max() - score.min(), 1e-12)
        v = np.stack(vectors.reindex(group["item_id"]).to_numpy())
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        similarity = v @ v.T
        picked: list[int] = []
        closest = np.full(len(group), -np.inf)
        for _ in range(min(k, len(group))):
            penalty = np.where(np.isfinite(closest), closest, 0.0)
            value = (1 - diversity) * relevance - diversity * penalty
            value[picked] = -np.inf
            best = int(np.argmax(value))
            picked.append(best)
            closest = np.maximum(closest, similarity[best])
        chosen = group.iloc[picked]
        rows.append(chosen.assign(rank=np.arange(1, len(picked) + 1)))
    columns = ["user_id", "item_id", "rank", "score"]
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)


def prefer_long_tail(
    candidates: pd.DataFrame, popularity: pd.Series, k: int = 10, strength: float = 0.5
) -> pd.DataFrame:
    """Re-score each candidate as rank-relevance minus `strength` times its popularity
    percentile (`popularity`: share of users per item, from `metrics.item_popularity`), so
    less-known items move up; strength 0 keeps the model's order."""
    frame = candidates.copy()
    frame["relevance"] = frame.groupby("user_id")["score"].rank(pct=True)
    percentile = popularity.rank(pct=True)
    frame["popular"] = percentile.reindex(frame["item_id"]).fillna(0.0).to_numpy()
    frame["adjusted"] = frame["relevance"] - strength * frame["popular"]
    frame = frame.sort_values(["user_id", "adjusted"], ascending=[True, False])
    frame = frame.groupby("user_id", sort=False).head(k)
    frame["rank"] = frame.groupby("user_id").cumcount() + 1
    return frame[["user_id", "item_id", "rank", "score"]].reset_index(drop=True)
