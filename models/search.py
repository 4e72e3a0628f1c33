"""Search: query text -> items, by the MiniLM text vectors the catalog already has, re-ranked
for a known user by the recommender's own score e_u . e_i + b_i.

Retrieval and ranking are separate steps, as in a shop's search box: the `candidates` items
whose text is closest to the query are kept, then ordered by a blend of text relevance and
the user's predicted interest (both standardised over the candidates). With no user, or
`personalisation=0`, the order is by relevance alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _standardised(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


def text_matrix(text: pd.DataFrame) -> np.ndarray:
    """The `embedding` column of (item_id, embedding) as an L2-normalised float32 matrix."""
    vectors = np.stack(text["embedding"].to_numpy()).astype(np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def search_items(
    query: np.ndarray,
    text: pd.DataFrame,
    k: int = 10,
    interest: pd.Series | None = None,
    personalisation: float = 0.5,
    candidates: int = 100,
    matrix: np.ndarray | None = None,
) -> pd.DataFrame:
    """Top-k items for one query vector: item_id, rank, score, relevance, interest.

    `text` holds item_id and embedding (the MiniLM vectors, e.g. the `item_text_embedding`
    feature view); `query` is the query's vector from the same encoder. `interest` maps
    item_id to the user's predicted interest; items without one rank as the least interesting
    candidate. `personalisation` in [0, 1] is the weight of interest against relevance.
    `matrix`: `text_matrix(text)`, where the caller keeps it (a service answering many
    queries over one catalog)."""
    if not 0.0 <= personalisation <= 1.0:
        raise ValueError(f"personalisation must be in [0, 1], got {personalisation}")
    if text.empty:
        raise ValueError("no item text vectors to search")
    query = np.asarray(query, dtype=np.float32).ravel()
    matrix = text_matrix(text) if matrix is None else matrix
    if query.shape[0] != matrix.shape[1]:
        raise ValueError(
            f"query vector has {query.shape[0]} dimensions; the item text vectors have "
            f"{matrix.shape[1]} (use the same encoder for both)"
        )
    relevance = matrix @ (query / max(float(np.linalg.norm(query)), 1e-12))
    keep = np.argsort(-relevance, kind="stable")[: max(candidates, k)]
    found = pd.DataFrame(
        {"item_id": text["item_id"].to_numpy()[keep], "relevance": relevance[keep]}
    )
    if interest is None or personalisation == 0.0:
        found["interest"] = np.nan
        found["score"] = found["relevance"]
    else:
        found["interest"] = found["item_id"].map(interest).to_numpy(dtype=float)
        known = found["interest"].fillna(found["interest"].min()).fillna(0.0).to_numpy()
        found["score"] = (1 - personalisation) * _standardised(
            found["relevance"].to_numpy()
        ) + personalisation * _standardised(known)
    found = found.sort_values("score", ascending=False, kind="stable").head(k)
    found["rank"] = np.arange(1, len(found) + 1)
    return found[["item_id", "rank", "score", "relevance", "interest"]].reset_index(drop=True)
