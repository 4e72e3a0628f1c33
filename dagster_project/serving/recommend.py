"""Recommendations at request time from the trained model and the user's latest events.

For each request, `LiveRecommender.recommend`:

1. reads the user's recent events from the online store (what the daily run wrote, advanced
   by the intake since) and adds the request's context: the product being looked at as a
   view, the cart's items as add-to-cart events, both as of now;
2. computes e_u from that history with the model's sequence encoder (no retraining: the
   model has no user-id embedding) and scores every item as e_u · e_i + b_i;
3. filters: items in the history or context, unavailable items, the request's categories,
   price range and exclusions;
4. optionally re-ranks the best `MMR_CANDIDATES_PER_ITEM` x k by MMR (`models.rerank.mmr`);
5. gives each item a reason: "because you viewed X and added Y to your cart" names the
   history items most like it (cosine of the model's item vectors); a search says it
   matches the query; a visitor with no history and no context gets the shop's most popular
   items, each "popular in <its category>".

Scenarios, as the `recommend` command has them: a user (history only), a product page
(`item_id`), a cart (`cart`), a search (`query`, ranked by text relevance and, with a
history, the user's interest), a new visitor (no history: context alone, or popular items).
Users on the opt-out list get no personalisation: their history is not read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from dagster_project.privacy import opt_out_file, opted_out_users
from dagster_project.pseudonyms import pseudonymise
from dagster_project.recommender.inputs import stored_model_items, trained_model
from dagster_project.serving.online import RecentActivityStore, RecentEvents
from dagster_project.serving.tables import FileCache
from dagster_project.settings import DataLayout
from models.rerank import mmr
from models.search import search_items, text_matrix
from models.sequences import codes_of_event_types

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MMR_CANDIDATES_PER_ITEM = 5
MAX_K = 100
MAX_LIST = 50
MAX_TEXT = 200
TITLE_CHARS = 60
VERBS = {
    "view": "viewed {}",
    "favorite": "saved {}",
    "add_to_cart": "added {} to your cart",
    "purchase": "bought {}",
}


class RecommendRequest(BaseModel):
    """What a page asks for (see the module's docstring): every field optional and bounded,
    so that a request out of bounds is refused with the field named."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(None, max_length=MAX_TEXT)
    item_id: str | None = Field(None, max_length=MAX_TEXT)
    cart: list[str] = Field(default_factory=list, max_length=MAX_LIST)
    query: str | None = Field(None, max_length=MAX_TEXT)
    k: int = Field(10, ge=1, le=MAX_K)
    categories: list[str] = Field(default_factory=list, max_length=MAX_LIST)  # path prefixes
    min_price: float | None = Field(None, ge=0)
    max_price: float | None = Field(None, ge=0)
    exclude: list[str] = Field(default_factory=list, max_length=10 * MAX_LIST)
    diversity: float = Field(0.0, ge=0.0, le=1.0)  # MMR weight; 0 keeps the model's order


@dataclass(frozen=True)
class RequestEvents:
    """The events a request is answered from (its history, then its context), known items
    only, as arrays: the items' rows in the model, event type names, epoch seconds."""

    rows: np.ndarray
    types: np.ndarray
    seconds: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def then(self, other: RequestEvents) -> RequestEvents:
        return RequestEvents(
            np.concatenate([self.rows, other.rows]),
            np.concatenate([self.types, other.types]),
            np.concatenate([self.seconds, other.seconds]),
        )


@dataclass(frozen=True)
class _Asked:
    """A request with what it is answered from."""

    request: RecommendRequest
    notes: list[str]
    history: RecentEvents
    events: RequestEvents
    allowed: np.ndarray


class LiveRecommender:
    """The trained model, its item side computed once, and the catalog, for one process."""

    def __init__(
        self,
        out: DataLayout,
        activity: RecentActivityStore | None,
        encode_query: Callable[[list[str]], np.ndarray] | None = None,
    ) -> None:
        self.out, self.activity = out, activity
        self.model = trained_model(out, "cpu").freeze_items()
        vectors = self.model.item_vectors()
        self.item_ids = pd.Index(vectors["item_id"])
        self.rows = {item: row for row, item in enumerate(self.item_ids)}
        self.vectors = torch.as_tensor(np.stack(vectors["embedding"]))
        self.bias = torch.as_tensor(vectors["bias"].to_numpy())
        self.unit = torch.nn.functional.normalize(self.vectors, dim=1)
        catalog = pd.read_parquet(
            out.table("items"), columns=["item_id", "title", "category", "price", "available"]
        )
        self.catalog = catalog.set_index("item_id").reindex(self.item_ids)
        self.available = self.catalog["available"].fillna(False).astype(bool).to_numpy()
        self.titles = self.catalog["title"].where(self.catalog["title"].notna(), None).to_numpy()
        self.categories = self.catalog["category"].fillna("").astype(str).to_numpy()
        self.prices = self.catalog["price"].to_numpy(dtype=float)
        self.version = self.model.version
        self.popularity = self._popularity()
        self._encode_query = encode_query
        self._text: tuple[pd.DataFrame, np.ndarray, np.ndarray] | None = None
        self.files = FileCache()

    def recommend(self, request: RecommendRequest) -> dict:
        """The answer to one request: scenario, items with scores and reasons, notes."""
        return self.recommend_many([request])[0]

    def recommend_many(self, requests: Sequence[RecommendRequest]) -> list[dict]:
        """The answers to several requests, their users' vectors encoded in one pass of the
        model (what a worker does with the requests that reach it together)."""
        asked = [self._asked(request) for request in requests]
        histories = [a.events for a in asked if len(a.events)]
        scores = iter(self._scores(histories) if histories else [])
        return [self._answer(a, next(scores) if len(a.events) else None) for a in asked]

    def _asked(self, request: RecommendRequest) -> _Asked:
        """What a request is answered from: its history and context, the items it allows."""
        notes: list[str] = []
        user = pseudonymise([request.user_id])[0] if request.user_id else None
        personal = user is not None and user not in self._opted_out()
        if user is not None and not personal:
            notes.append("the user opted out of personalisation: their history is not used")
        history = self._history(user if personal else None)
        events = self._known(history.item_ids, history.event_types, history.times_ms, 1000)
        events = events.then(self._context(request, notes))
        return _Asked(request, notes, history, events, self._allowed(request, events.rows))

    def _answer(self, asked: _Asked, scores: np.ndarray | None) -> dict:
        """The answer to one request, from `scores` (the model's, None without events)."""
        request, history, events = asked.request, asked.history, asked.events
        if request.query:
            scenario, items = "search", self._search(request, scores, asked.allowed)
        elif scores is not None:
            scenario = self._scenario(request, history)
            items = self._personal(request, events, asked.allowed, scores)
        else:
            scenario, items = "new_visitor", self._popular(request, asked.allowed)
        return {
            "user_id": request.user_id,
            "scenario": scenario,
            "model_version": self.version,
            "history_events": len(history.item_ids),
            "history_newest_at": _newest(history.times_ms),
            "items": items,
            "notes": asked.notes,
        }

    # -- inputs --------------------------------------------------------------------------
    def _opted_out(self) -> set[str]:
        path = opt_out_file(self.out)
        return self.files.get(path, lambda _: opted_out_users(self.out)) if path.exists() else set()

    def _history(self, user: str | None) -> RecentEvents:
        if user is None or self.activity is None:
            return RecentEvents([], [], [])
        return self.activity.history(user)

    def _known(
        self, item_ids: list[str], types: list[str], times: list[int] | np.ndarray, per_s: int
    ) -> RequestEvents:
        """Events as arrays (`RequestEvents`), those of items the model does not know left
        out; `times` in units of 1/per_s seconds."""
        rows = self._rows_of(item_ids)
        known = rows >= 0
        return RequestEvents(
            rows[known],
            np.asarray(types, dtype=object)[known],
            np.asarray(times, dtype=np.int64)[known] // per_s,
        )

    def _rows_of(self, item_ids: list[str]) -> np.ndarray:
        """Each item's row in the model's items (-1 for one it does not know)."""
        return np.fromiter((self.rows.get(i, -1) for i in item_ids), np.int64, len(item_ids))

    def _context(self, request: RecommendRequest, notes: list[str]) -> RequestEvents:
        """The page's product as a view and the cart as add-to-cart events, as of now."""
        items = ([request.item_id] if request.item_id else []) + list(request.cart)
        types = (["view"] if request.item_id else []) + ["add_to_cart"] * len(request.cart)
        context = self._known(items, types, [int(time.time())] * len(items), 1)
        if len(context) < len(items):
            unknown = [i for i in items if i not in self.rows]
            notes.append(
                f"not in the model's catalog, left out of the context: {', '.join(unknown)}"
            )
        return context

    def _allowed(self, request: RecommendRequest, seen: np.ndarray) -> np.ndarray:
        """Items that may be shown: available, unseen, not excluded, in the filters."""
        allowed = self.available.copy()
        allowed[seen] = False
        if request.exclude:
            hidden = self._rows_of(request.exclude)
            allowed[hidden[hidden >= 0]] = False
        if request.categories:
            prefixes = tuple(request.categories)
            allowed &= np.fromiter(
                (c.startswith(prefixes) for c in self.categories), bool, len(self.categories)
            )
        if request.min_price is not None:
            allowed &= self.prices >= request.min_price
        if request.max_price is not None:
            allowed &= self.prices <= request.max_price
        return allowed

    def _popularity(self) -> np.ndarray:
        """Events per item over the behaviour table (the shop's most wanted first)."""
        events = pd.read_parquet(self.out.table("behaviour_events"), columns=["item_id"])
        counts = events["item_id"].value_counts()
        return counts.reindex(self.item_ids, fill_value=0).to_numpy(dtype=float)

    # -- scenarios -----------------------------------------------------------------------
    @staticmethod
    def _scenario(request: RecommendRequest, history: RecentEvents) -> str:
        if request.cart:
            return "cart"
        if request.item_id:
            return "product_page"
        return "user" if history.item_ids else "new_visitor"

    def _scores(self, histories: list[RequestEvents]) -> np.ndarray:
        """e_u · e_i + b_i for every item (one row per history), each e_u from its events."""
        encoded = [(e.rows, codes_of_event_types(e.types), e.seconds) for e in histories]
        with torch.no_grad():
            users = self.model.encode_histories(encoded)
            # one product per user, as for a request alone: a batched product may round
            # differently, and an answer would then depend on the requests it came with
            return torch.stack([self.vectors @ user + self.bias for user in users]).numpy()

    def _personal(
        self,
        request: RecommendRequest,
        events: RequestEvents,
        allowed: np.ndarray,
        scores: np.ndarray,
    ) -> list[dict]:
        picked = self._top(scores, allowed, request)
        reasons = self._because(picked, events)
        return [
            self._item(i, float(scores[i]), reason)
            for i, reason in zip(picked, reasons, strict=True)
        ]

    def _search(
        self, request: RecommendRequest, scores: np.ndarray | None, allowed: np.ndarray
    ) -> list[dict]:
        text, matrix, rows = self._text_vectors()
        shown = allowed[rows]
        if not shown.any():  # the filters leave nothing to search
            return []
        interest = None if scores is None else pd.Series(scores, index=self.item_ids)
        query = self._query_vector(request.query or "")
        found = search_items(query, text[shown], request.k, interest, matrix=matrix[shown])
        matched = f"matches “{request.query}”"
        return [
            self._item(self.item_ids.get_loc(i), float(s), matched)
            for i, s in zip(found["item_id"], found["score"], strict=True)
        ]

    def _popular(self, request: RecommendRequest, allowed: np.ndarray) -> list[dict]:
        picked = self._top(self.popularity, allowed, request)
        return [
            self._item(
                i, float(self.popularity[i]), f"popular in {self.categories[i] or 'the shop'}"
            )
            for i in picked
        ]

    def _top(
        self, scores: np.ndarray, allowed: np.ndarray, request: RecommendRequest
    ) -> np.ndarray:
        """The best allowed items, re-ranked by MMR when the request asks for diversity."""
        masked = np.where(allowed, scores, -np.inf)
        wanted = request.k * (MMR_CANDIDATES_PER_ITEM if request.diversity > 0 else 1)
        wanted = min(wanted, int(allowed.sum()))
        if wanted == 0:
            return np.array([], dtype=int)
        best = np.argpartition(-masked, wanted - 1)[:wanted]
        best = best[np.argsort(-masked[best], kind="stable")]
        if request.diversity <= 0:
            return best
        candidates = pd.DataFrame({"user_id": "u", "item_id": best, "score": masked[best]})
        vectors = pd.DataFrame({"item_id": best, "embedding": list(self.vectors[best].numpy())})
        return mmr(candidates, vectors, request.k, request.diversity)["item_id"].to_numpy()

    # -- answers -------------------------------------------------------------------------
    def _because(self, picked: np.ndarray, events: RequestEvents) -> list[str]:
        """For each picked item, the one or two history items most like it, in words."""
        _, first_from_newest = np.unique(events.rows[::-1], return_index=True)
        last = np.sort(len(events) - 1 - first_from_newest)  # each item's newest event
        rows, types = events.rows[last], events.types[last]
        similarity = (self.unit[torch.as_tensor(picked)] @ self.unit[rows].T).numpy()
        reasons = []
        for line in similarity:
            top = np.argsort(-line, kind="stable")[:2]
            phrases = [VERBS.get(types[j], "viewed {}").format(self._title(rows[j])) for j in top]
            reasons.append("because you " + " and ".join(phrases))
        return reasons

    def _title(self, item: int) -> str:
        title = self.titles[item]
        text = str(title) if isinstance(title, str) and title else str(self.item_ids[item])
        return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"

    def _item(self, item: int, score: float, reason: str) -> dict:
        title, category, price = self.titles[item], self.categories[item], self.prices[item]
        return {
            "item_id": str(self.item_ids[item]),
            "title": title if isinstance(title, str) else None,
            "category": category or None,
            "price": None if np.isnan(price) else float(price),
            "score": round(score, 6),
            "reason": reason,
        }

    def _text_vectors(self) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """The items' MiniLM vectors (item_id, embedding), their normalised matrix and each
        one's row in the model's items, read and built once."""
        if self._text is None:
            items = stored_model_items(self.out)
            items = items[items["text_embedding"].notna() & items["item_id"].isin(self.item_ids)]
            text = items[["item_id"]].assign(embedding=items["text_embedding"])
            text = text.reset_index(drop=True)
            self._text = (text, text_matrix(text), self.item_ids.get_indexer(text["item_id"]))
        return self._text

    def _query_vector(self, query: str) -> np.ndarray:
        if self._encode_query is None:
            from dagster_project.features.text import PRECISION_FILE, load_encoder

            # in the precision the catalog's vectors were embedded in on this machine
            self._encode_query = load_encoder("cpu", decided=self.out.cache / PRECISION_FILE)
        return self._encode_query([query])[0]


def _newest(times_ms: list[int]) -> str | None:
    """The newest history event's time (ISO 8601), None without a history."""
    if not times_ms:
        return None
    return (EPOCH + timedelta(milliseconds=int(max(times_ms)))).isoformat()
