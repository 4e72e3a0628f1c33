"""One interface for every recommender (the torch model and each baseline).

`fit(interactions, items)` learns from interactions (user_id, item_id, event_type,
event_time, plus any feature columns); `recommend(user_ids, k)` returns a frame
user_id, item_id, rank, score with items the user already interacted with removed;
`similar_items(item_id, k)` ranks items for a product page.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
import torch


@cache
def _glibc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6") if sys.platform == "linux" else None
    except OSError:  # another C library (musl): nothing to trim
        return None


# Users scored at once by `recommend`: a block of scores this large stays in the CPU's
# caches while it is masked and its top k are taken. Measured for top-100 of 100k users x 50k
# items on 2 cores (a sweep of the block; bench/recommender.py's scoring,
# docs/recommender.md#scoring): 128-167 users (25-32 MB) took 9.2-9.9 s, 64 users 7.9-12 s,
# 256 users 11 s, 4096 users 14 s.
SCORE_BLOCK_BYTES = 32 * 2**20


def score_block_rows(n_items: int) -> int:
    """Users per block of `SCORE_BLOCK_BYTES` of float32 scores over `n_items` items."""
    return max(SCORE_BLOCK_BYTES // (4 * max(n_items, 1)), 1)


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's `k` largest scores, in descending order, and their columns: the values of
    `torch.topk(scores, k, dim=1)` (the columns may differ between equal scores), on the
    scores' device.

    A long row's columns fall in `count` groups of `size` strided columns (group j: j,
    j + count, j + 2 count, ...); the k groups with the largest maxima hold every one of the
    row's k largest (the k-th largest maximum is at most the k-th largest score, and any
    score at or above it lifts its group's maximum there), so the top k are taken from
    k * size candidates instead of the whole row. Columns past size * count are candidates
    too. Against torch.topk on 2 cores: 1.3x faster for 600 items and k = 10, 2.2x for 10k
    items and k = 10, 1.8x for 50k items and k = 100, 3.7x for 50k items and k = 10."""
    rows, n = scores.shape
    size = min(int(np.sqrt(n / max(k, 1))), 32)
    if size < 4 or k == 0:
        top = torch.topk(scores, k, dim=1)
        return top.values, top.indices
    count = n // size
    strided = scores[:, : size * count].unflatten(1, (size, count))
    best = strided.amax(1).topk(k, dim=1, sorted=False).indices  # (rows, k) groups
    candidates = strided.gather(2, best.unsqueeze(1).expand(rows, size, k)).flatten(1)
    offsets = count * torch.arange(size, device=scores.device)
    columns = (best.unsqueeze(1) + offsets.unsqueeze(1)).flatten(1)
    if size * count < n:
        rest = torch.arange(size * count, n, device=scores.device)
        candidates = torch.cat([candidates, scores[:, size * count :]], 1)
        columns = torch.cat([columns, rest.expand(rows, len(rest))], 1)
    top = candidates.topk(k, dim=1)
    return top.values, columns.gather(1, top.indices)


def most_used_items(users_per_item: np.ndarray, limit: int) -> np.ndarray:
    """The indices, in order, of at most `limit` items with the most users (ties: the lower
    index), items without any left out: what a dense item-item solve holds (EASE's
    `max_items`, the model's `long_term_max_items`)."""
    kept = np.sort(np.argsort(-users_per_item, kind="stable")[:limit])
    return kept[users_per_item[kept] > 0]


def release_unused_memory() -> None:
    """Collect garbage and hand freed memory back to the OS: Arrow's memory pool (mimalloc
    kept 0.9 GB after the default shop's point-in-time join) and the C heap (glibc's
    malloc_trim, on Linux). Call it after a large step or before a large allocation: what
    earlier steps of the same process freed was kept, and a peak stacked on it."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def resolve_device(name: str) -> torch.device:
    """A torch device by name; `auto`: CUDA where present, else the CPU (the one resolver:
    the model, the text encoder and the benchmarks use it)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def half_life_weight(age, half_life):
    """2^(-age / half_life): the one recency decay (numpy arrays or torch tensors), whatever
    the unit of age (days for `popularity_recent`, distinct later items for the memory)."""
    return 0.5 ** (age / half_life)


def rows_or_zeros(matrix: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`matrix`'s rows at `index` (any shape), zeros where the index is len(matrix): the
    padding index of token windows. Gathers without copying the matrix to append a zero row,
    which cost more than the gather when a service encodes one user at a time."""
    padding = index >= len(matrix)
    rows = matrix[index.clamp(max=len(matrix) - 1)]
    return rows.masked_fill(padding[..., None], 0.0)


EVENT_WEIGHTS = {"view": 1.0, "favorite": 2.0, "add_to_cart": 3.0, "purchase": 4.0}


def interaction_weights(event_type: pd.Series) -> np.ndarray:
    """Strength of each interaction by event type (view 1 ... purchase 4)."""
    return event_type.map(EVENT_WEIGHTS).fillna(1.0).to_numpy(dtype=np.float32)


def interaction_strength(interactions: pd.DataFrame) -> np.ndarray:
    """Strength of each interaction: its `weight` column, else by `event_type`, else 1."""
    if "weight" in interactions:
        return interactions["weight"].fillna(1.0).to_numpy(dtype=np.float32)
    if "event_type" in interactions:
        return interaction_weights(interactions["event_type"])
    return np.ones(len(interactions), dtype=np.float32)


class Recommender(ABC):
    """Shared id mapping, seen-item filtering and top-k selection."""

    name: str = "recommender"

    def __init__(self) -> None:
        self.item_ids: np.ndarray = np.array([], dtype=object)
        self.user_index: pd.Index = pd.Index([])
        self._seen_ptr = np.zeros(1, dtype=np.int64)
        self._seen_items = np.array([], dtype=np.int64)

    def _index(
        self, interactions: pd.DataFrame, items: pd.DataFrame
    ) -> tuple[np.ndarray, np.ndarray]:
        """Set the user/item vocabularies; returns the interactions' user and item indices."""
        # The model's feature clock: what it outputs is as of its last interaction.
        self.trained_until = pd.Timestamp(interactions["event_time"].max())
        self.item_ids = items["item_id"].to_numpy()
        self.item_index = pd.Index(self.item_ids)
        self.user_index = pd.Index(interactions["user_id"].unique())
        u = self.user_index.get_indexer(interactions["user_id"])
        i = self.item_index.get_indexer(interactions["item_id"])
        if (i < 0).any():
            raise ValueError(
                f"{int((i < 0).sum())} interactions refer to items missing from the item table"
            )
        # Items each user interacted with, as CSR: user u's items are seen_items[ptr[u]:ptr[u+1]].
        # (user, item) as one int64 key: unique over rows of a 2-column array sorted them as
        # bytes, 0.6 s on the default shop's 745k rows against 0.05 s
        pairs = np.unique(u.astype(np.int64) * len(self.item_ids) + i)
        pair_users = pairs // len(self.item_ids)
        self._seen_ptr = np.r_[
            0, np.cumsum(np.bincount(pair_users, minlength=len(self.user_index)))
        ]
        self._seen_items = pairs % len(self.item_ids)
        return u, i

    def _user_item_matrix(
        self, interactions: pd.DataFrame, u: np.ndarray, i: np.ndarray, binary: bool = False
    ) -> sp.csr_matrix:
        """Users x items (float32 CSR): each pair's strongest interaction, or 1 if `binary`."""
        strength = np.ones(len(u), np.float32) if binary else interaction_strength(interactions)
        frame = pd.DataFrame({"u": u, "i": i, "w": strength}).groupby(["u", "i"])["w"].max()
        rows, cols = frame.index.get_level_values(0), frame.index.get_level_values(1)
        shape = (len(self.user_index), len(self.item_ids))
        return sp.csr_matrix((frame.to_numpy(np.float32), (rows, cols)), shape=shape)

    def _seen_cells(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in `users`, item index) of every item the given users already interacted with."""
        lengths = self._seen_ptr[users + 1] - self._seen_ptr[users]
        rows = np.repeat(np.arange(len(users)), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return rows, self._seen_items[np.repeat(self._seen_ptr[users], lengths) + offsets]

    @abstractmethod
    def _score(self, users: np.ndarray) -> torch.Tensor:
        """Scores of every item for the given user indices, shape (len(users), n_items)."""

    def _scorer(self) -> Callable[[np.ndarray, torch.Tensor | None], torch.Tensor]:
        """`_score` as a function of (users, out), for one `recommend` call over many blocks
        of users: a model whose scoring needs per-call work (e.g. building the item matrix)
        does it here, once, and one that can write its scores into `out` (the previous
        block's memory, when given) does. The first block's scores become that memory: a
        scorer returns fresh memory when `out` is None, never a view of its own state."""
        return lambda users, out: self._score(users)

    def recommend(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        filter_seen: bool = True,
        batch_size: int | None = None,
        unavailable: Sequence[str] = (),
        exclude: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Top-k items per known user; unknown users get no rows.

        Left out: items the user interacted with in training (`filter_seen`), `unavailable`
        items (for everyone), and `exclude` pairs (user_id, item_id), e.g. past purchases.
        Users are scored `batch_size` at a time; by default as many as `SCORE_BLOCK_BYTES`
        of scores hold."""
        users = self.user_index.get_indexer(pd.Index(user_ids))
        users = users[users >= 0]
        batches = []
        k = min(k, len(self.item_ids))
        block = batch_size or score_block_rows(len(self.item_ids))
        blocked_items = self.item_index.get_indexer(pd.Index(unavailable))
        blocked_items = torch.as_tensor(blocked_items[blocked_items >= 0])
        excluded = None
        if exclude is not None and len(exclude):
            excluded = pd.DataFrame(
                {
                    "u": self.user_index.get_indexer(exclude["user_id"]),
                    "i": self.item_index.get_indexer(exclude["item_id"]),
                }
            ).query("u >= 0 and i >= 0")
        with torch.no_grad():
            score = self._scorer()
        memory = None  # the first block's scores, written over by the next blocks
        for lo in range(0, len(users), block):
            batch = users[lo : lo + block]
            with torch.no_grad():
                scores = score(batch, None if memory is None else memory[: len(batch)])
                memory = scores if memory is None else memory
                scores = scores.float()
                if filter_seen:
                    rows, cols = self._seen_cells(batch)
                    scores[torch.as_tensor(rows), torch.as_tensor(cols)] = -torch.inf
                scores[:, blocked_items] = -torch.inf
                if excluded is not None:
                    row_of = pd.Series(np.arange(len(batch)), index=batch)
                    mine = excluded[excluded["u"].isin(batch)]
                    scores[
                        torch.as_tensor(row_of[mine["u"]].to_numpy()),
                        torch.as_tensor(mine["i"].to_numpy()),
                    ] = -torch.inf
                values, columns = top_k(scores, k)
            batches.append((batch, columns.cpu().numpy(), values.cpu().numpy()))
        return self._ranked_rows(batches, k)

    def _ranked_rows(
        self, batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]], k: int
    ) -> pd.DataFrame:
        """(user_id, item_id, rank, score) rows from each batch's (users, top indices, top
        scores); the slots left at -inf (fewer than k items to give) are dropped."""
        if not batches:
            return pd.DataFrame(columns=["user_id", "item_id", "rank", "score"])
        users = np.concatenate([b[0] for b in batches])
        indices = np.concatenate([b[1] for b in batches]).ravel()
        scores = np.concatenate([b[2] for b in batches]).ravel()
        out = pd.DataFrame(
            {
                "user_id": np.repeat(self.user_index.to_numpy()[users], k),
                "item_id": self.item_ids[indices],
                "rank": np.tile(np.arange(1, k + 1), len(users)),
                "score": scores,
            }
        )
        finite = np.isfinite(scores)
        return out if finite.all() else out[finite].reset_index(drop=True)

    def _item_similarity(self, item: int) -> torch.Tensor:
        """Similarity of every item to item index `item`, shape (n_items,)."""
        raise NotImplementedError(f"{self.name} has no item-to-item similarity")

    def similar_items(self, item_id: str, k: int = 10) -> pd.DataFrame:
        """Items to show beside `item_id` (product page): item_id, rank, score."""
        if item_id not in self.item_index:
            raise KeyError(f"unknown item {item_id!r}")
        idx = self.item_index.get_loc(item_id)
        with torch.no_grad():
            similarity = self._item_similarity(idx).float().clone()
            similarity[idx] = -torch.inf
            top = torch.topk(similarity, min(k, len(self.item_ids) - 1))
        return pd.DataFrame(
            {
                "item_id": self.item_ids[top.indices.cpu().numpy()],
                "rank": np.arange(1, len(top.indices) + 1),
                "score": top.values.cpu().numpy(),
            }
        )
