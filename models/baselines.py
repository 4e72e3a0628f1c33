"""Baselines that every model is shown beside, behind the shared `Recommender` interface.

- `popularity`: the number of training interactions per item (PopRec, as papers report it).
- `popularity_recent`: interaction strength per item (by event type) with a time decay.
- `item_knn`: item-item cosine similarity of co-occurrence (each user's items vote for
  their nearest neighbours).
- `ease`: EASE (Steck, 2019), a closed-form linear item-item model.
- `als`: implicit-feedback matrix factorisation from the `implicit` package, an external peer.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.linalg import lapack

from models.base import (
    Recommender,
    half_life_weight,
    interaction_weights,
    most_used_items,
    release_unused_memory,
)


class PopularityRecommender(Recommender):
    """Popularity (PopRec): each item's number of training interactions, the same for everyone."""

    name = "popularity"

    def fit(self, interactions: pd.DataFrame, items: pd.DataFrame) -> PopularityRecommender:
        _, i = self._index(interactions, items)
        counts = np.bincount(i, minlength=len(self.item_ids))
        self.popularity = torch.as_tensor(counts, dtype=torch.float32)
        return self

    def _score(self, users: np.ndarray) -> torch.Tensor:
        return self.popularity.expand(len(users), -1).clone()

    def _item_similarity(self, item: int) -> torch.Tensor:
        return self.popularity.clone()  # "customers also bought": the best sellers


class RecentPopularityRecommender(PopularityRecommender):
    """Recent popularity: interaction strength per item (by `event_type`, else 1) with an
    exponential time decay of `half_life_days` from the last training interaction."""

    name = "popularity_recent"

    def __init__(self, half_life_days: float = 7.0) -> None:
        super().__init__()
        self.half_life_days = half_life_days

    def fit(self, interactions: pd.DataFrame, items: pd.DataFrame) -> RecentPopularityRecommender:
        _, i = self._index(interactions, items)
        age_days = (
            interactions["event_time"].max() - interactions["event_time"]
        ).dt.total_seconds() / 86_400
        strength = (
            interaction_weights(interactions["event_type"])
            if "event_type" in interactions
            else np.ones(len(interactions), np.float32)
        )
        weight = strength * half_life_weight(age_days.to_numpy(), self.half_life_days)
        self.popularity = torch.as_tensor(
            np.bincount(i, weights=weight, minlength=len(self.item_ids)), dtype=torch.float32
        )
        return self


class ItemKNNRecommender(Recommender):
    """Item-kNN: cosine similarity of items' user vectors, keeping each item's `neighbours`
    nearest; a user's score for an item sums the similarity to the items they interacted with."""

    name = "item_knn"

    def __init__(self, neighbours: int = 100, binary: bool = True) -> None:
        super().__init__()
        self.neighbours = neighbours
        self.binary = binary

    def fit(self, interactions: pd.DataFrame, items: pd.DataFrame) -> ItemKNNRecommender:
        u, i = self._index(interactions, items)
        self.user_items = self._user_item_matrix(interactions, u, i, binary=self.binary)
        norms = np.sqrt(np.asarray(self.user_items.multiply(self.user_items).sum(0))).ravel()
        scale = sp.diags(1.0 / np.maximum(norms, 1e-9))
        cosine = (scale @ (self.user_items.T @ self.user_items) @ scale).tocsr()
        cosine.setdiag(0.0)
        cosine.eliminate_zeros()
        self.similarity = _keep_top_per_row(cosine, self.neighbours).T.tocsr()
        return self

    def _score(self, users: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((self.user_items[users] @ self.similarity).toarray())

    def _item_similarity(self, item: int) -> torch.Tensor:
        return torch.as_tensor(self.similarity[:, item].toarray().ravel())


def _keep_top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """The `k` largest entries of each row of a CSR matrix."""
    rows, cols, vals = [], [], []
    for r in range(matrix.shape[0]):
        lo, hi = matrix.indptr[r], matrix.indptr[r + 1]
        if hi == lo:
            continue
        row_vals = matrix.data[lo:hi]
        keep = np.argpartition(-row_vals, k)[:k] if hi - lo > k else np.arange(hi - lo)
        rows.append(np.full(len(keep), r))
        cols.append(matrix.indices[lo:hi][keep])
        vals.append(row_vals[keep])
    if not rows:
        return sp.csr_matrix(matrix.shape, dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=matrix.shape,
        dtype=np.float32,
    )


def ease_weights(user_items: sp.spmatrix, l2: float) -> torch.Tensor:
    """EASE's item-item matrix B = I - P / diag(P), P = (X'X + l2 I)^-1, zero diagonal
    (float32 is enough: the l2 ridge keeps the Gram matrix well conditioned). The Gram
    matrix is symmetric positive definite, so P comes from its Cholesky factor, computed in
    the Gram matrix's own memory (`_precision_in_place`): one dense n x n matrix at a time.
    A factorisation that fails (a ridge too small for float32) falls back to the general
    inverse. Row-major, as numpy's sparse products read it."""
    precision = ridge_precision(user_items, l2)
    return ease_from_precision(precision, precision.diagonal().clone())


def ease_from_precision(precision: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """EASE's B_ij = -P_ij / P_jj with a zero diagonal, in place in `precision` (P's own
    `diagonal` given apart, as P's may have been overwritten); returns it."""
    precision.div_(-diagonal)
    precision.diagonal().zero_()
    return precision


def ridge_precision(user_items: sp.spmatrix, l2: float) -> torch.Tensor:
    """P = (X'X + l2 I)^-1, dense float32, row-major: what EASE (`ease_weights`) and the
    plain ridge regression of each item on the others (I - l2 P) are made from."""
    if not user_items.shape[1]:
        return torch.zeros(0, 0)
    release_unused_memory()  # what earlier steps freed, before the largest allocation
    precision = _precision_in_place(_ridge_gram(user_items, l2))
    if precision is None:
        precision = torch.linalg.inv(torch.as_tensor(_ridge_gram(user_items, l2))).numpy()
    return torch.as_tensor(np.ascontiguousarray(precision))


def _ridge_gram(user_items: sp.spmatrix, l2: float, block: int = 1024) -> np.ndarray:
    """X'X + l2 I, dense float32, row-major, written a block of rows at a time: the sparse
    product of all items at once held 0.3 GB beside the dense matrix at 10k items."""
    x = sp.csc_matrix(user_items, dtype=np.float32)
    n = x.shape[1]
    gram = np.empty((n, n), np.float32)
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        (x[:, lo:hi].T @ x).toarray(out=gram[lo:hi])
    gram[np.diag_indices_from(gram)] += l2
    return gram


def _precision_in_place(gram: np.ndarray, block: int = 1024) -> np.ndarray | None:
    """The inverse of the symmetric positive definite row-major float32 `gram`, computed in
    its memory by LAPACK (potrf, then potri; `gram` is overwritten); None when the
    factorisation fails. Measured on 2 cores (AMD EPYC) at 9,888 items, with the Gram matrix
    built by blocks: 5.5-7.4 s and 0.36 GB above the process at the peak, against 10.0-10.4
    s and 0.74 GB with torch's cholesky and cholesky_inverse (MKL)."""
    factor, failed = lapack.spotrf(gram.T, lower=1, overwrite_a=1, clean=0)  # gram.T: its
    if failed:  # column-major view, the same symmetric matrix
        return None
    inverse, failed = lapack.spotri(factor, lower=1, overwrite_c=1)
    if failed:
        return None
    precision = inverse.T  # row-major: LAPACK filled its upper triangle
    for lo in range(0, len(precision), block):  # mirror it into the lower, a block at a time
        hi = min(lo + block, len(precision))
        precision[lo:hi, :lo] = precision[:lo, lo:hi].T
        square = precision[lo:hi, lo:hi]
        below = np.tril_indices(hi - lo, -1)
        square[below] = square.T[below]
    return precision


class EASERecommender(Recommender):
    """EASE: B = I - P / diag(P) with P = (X'X + λI)^-1, zero diagonal; score = X_u B.

    The item-item matrix is dense, so EASE keeps the `max_items` most interacted items
    (the rest score -inf): 10,000 items take 0.4 GB and about 45 s on 2 cores. With
    `progress`, the solve is announced and timed on stdout."""

    name = "ease"

    def __init__(
        self,
        l2: float = 500.0,
        max_items: int = 20_000,
        binary: bool = True,
        progress: bool = True,
    ) -> None:
        super().__init__()
        self.l2 = l2
        self.max_items = max_items
        self.binary = binary
        self.progress = progress

    def fit(self, interactions: pd.DataFrame, items: pd.DataFrame) -> EASERecommender:
        u, i = self._index(interactions, items)
        user_items = self._user_item_matrix(interactions, u, i, binary=self.binary)
        counts = np.asarray(user_items.getnnz(0)).ravel()
        self.kept = most_used_items(counts, self.max_items)
        x = user_items[:, self.kept]
        n = len(self.kept)
        if self.progress:
            print(f"[ease] solving the {n:,} x {n:,} item-item system ...", flush=True)
        t0 = time.perf_counter()
        self.weights = ease_weights(x, self.l2)
        if self.progress:
            print(f"[ease] solved in {time.perf_counter() - t0:.1f} s", flush=True)
        self.user_items = x.tocsr()
        return self

    def _score(self, users: np.ndarray) -> torch.Tensor:
        # Sparse history times the dense item-item matrix: only the items a user has count.
        kept_scores = torch.as_tensor(self.user_items[users] @ self.weights.numpy())
        scores = torch.full((len(users), len(self.item_ids)), -torch.inf)
        scores[:, torch.as_tensor(self.kept)] = kept_scores
        return scores

    def _item_similarity(self, item: int) -> torch.Tensor:
        similarity = torch.full((len(self.item_ids),), -torch.inf)
        where = np.searchsorted(self.kept, item)
        if where < len(self.kept) and self.kept[where] == item:
            similarity[torch.as_tensor(self.kept)] = self.weights[where]
        return similarity


class ALSRecommender(Recommender):
    """Implicit-feedback ALS (Hu, Koren, Volinsky) from the `implicit` package: confidence
    1 + alpha * strength, `factors` latent dimensions. The defaults were the best of a
    27-point grid (factors 32/64/128, regularization 0.01/0.1/1, alpha 1/5/20) on
    MovieLens 100k under the msr protocol (NDCG@10 0.451)."""

    name = "als"

    def __init__(
        self,
        factors: int = 32,
        regularization: float = 1.0,
        alpha: float = 1.0,
        iterations: int = 15,
        seed: int = 42,
        binary: bool = False,
    ) -> None:
        super().__init__()
        self.params = {
            "factors": factors,
            "regularization": regularization,
            "alpha": alpha,
            "iterations": iterations,
            "random_state": seed,
        }
        self.binary = binary

    def fit(self, interactions: pd.DataFrame, items: pd.DataFrame) -> ALSRecommender:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        u, i = self._index(interactions, items)
        user_items = self._user_item_matrix(interactions, u, i, binary=self.binary)
        with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, not BLAS's
            model = AlternatingLeastSquares(**self.params, calculate_training_loss=False)
            model.fit(user_items, show_progress=False)
        self.user_factors = torch.as_tensor(np.asarray(model.user_factors))
        self.item_factors = torch.as_tensor(np.asarray(model.item_factors))
        return self

    def _score(self, users: np.ndarray) -> torch.Tensor:
        return self.user_factors[torch.as_tensor(users)] @ self.item_factors.T

    def _item_similarity(self, item: int) -> torch.Tensor:
        vectors = torch.nn.functional.normalize(self.item_factors, dim=1)
        return vectors @ vectors[item]
