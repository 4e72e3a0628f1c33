"""The torch embedding recommender: interest I(u, i) = e_u . e_i + b_i.

- e_u: a causal self-attention encoder reads the user's events oldest to newest (each
  position: the item's vector from the item tower, its event type, the time since the
  previous event and its position); e_u is the output at the newest event, plus a projection
  of the user's features (`models.towers.SequenceUserTower`). There is no user id embedding,
  so a new visitor's few events give a vector without retraining.
- e_i: id embedding + category + price bucket + projected MiniLM text + attribute ids (brand,
  category path) + item features (`models.towers.ItemTower`). During training a share of id
  vectors is dropped (`id_dropout`) so that the content part learns to stand alone: new items
  are scored from content.
- Training: every position of every sequence predicts the next item. The loss is the
  cross-entropy over the whole catalog where that is affordable (`full_softmax_max_items`),
  else a sampled softmax over shared negatives with the logQ correction (Yi et al. 2019);
  `loss="auto"` chooses, and the saved config records the choice. Each user's newest event
  is never a training target: it is the validation item, for early stopping on NDCG@10, and
  the weights of the best epoch are kept (no refit), so under `loo` the validation item is in
  the history at test time but was never learnt as a target.
- Saved models are a state dict, vocabularies and the config (`save` / `load`), no pickles.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from models.base import Recommender, most_used_items, resolve_device, rows_or_zeros, top_k
from models.checks import Problems
from models.distributed import (
    any_process,
    data_parallel,
    is_distributed,
    shard,
    target_share,
    world,
)
from models.memory import (
    FORM_NAMES,
    FORMS,
    HALF_LIVES,
    NARROWER_RANK_SHARE,
    REPEAT_POWERS,
    LongTermMemory,
    fit_memory,
)
from models.search import search_items
from models.sequences import (
    VALIDATION_MODES,
    Sequences,
    Window,
    build_sequences,
    epoch_seconds,
    event_type_codes,
    held_tokens,
    last_occurrences,
    length_batches,
    previous_occurrences,
    ranges,
    serving_gap,
    similar_length_chunks,
    split_for_validation,
    tokens_on_item,
    windows,
)
from models.towers import ENCODERS, ItemTower, SequenceUserTower

UNKNOWN_CATEGORY = "<none>"
# Users encoded together on a CPU, sorted by history length (`similar_length_chunks`): each
# chunk pads to its own longest history, and the memory's per-token sums stay small. A GPU
# takes a whole batch at once.
ENCODING_CHUNK_ROWS = 256
# Scores held at once when the memory's scale is calibrated (`_memory_scale`): 2,048 users
# up to 32,768 items; fewer users past that (a 500k-item catalog held 12 GB at the peak).
CALIBRATION_SCORES = 2**26
# A recency half-life must beat no decay, and a trained epoch the start, on validation
# NDCG@10 by this many standard errors of the per-user paired difference: a validation
# set's noise is no reason to change the model. Measured on MovieLens msr (943 validation
# items): a half-life at +2.7% on validation gave -11% on the test; epoch 1 at +0.5% (val
# 0.0914 against the start's 0.0909) gave 0.4711 on the test against the start's 0.4790.
VALIDATION_EVIDENCE = 2.0
# After each epoch the trained part (the gate on the encoder, the item bias and the change of
# the memory's scale since the start) is also scored at these shares of itself, and
# validation keeps the best (`_blend_shares`): next-item training overshoots what a days-long
# test rewards. Measured on the shop with sequential structure (`temporal`, test NDCG@10 of
# epochs 2-6, before `mask_seen`): the whole trained part 0.077-0.082, a half 0.086-0.088, a
# quarter 0.090 (the start: 0.087; EASE 0.088). On the plain shop and MovieLens msr no share
# gained more than 0.0005 on the test.
TRAINED_SHARES = (1.0, 0.5, 0.25, 0.125)
FORMAT = 10  # of saved models; older files get a "retrain it" error (9: no repeat weights)
LOSSES = ("auto", "full", "sampled")  # see EmbeddingConfig.loss
LONG_TERMS = ("auto", *FORMS, "none")  # see EmbeddingConfig.long_term


@dataclass(frozen=True)
class EmbeddingConfig:
    """Typed configuration, written beside every trained model."""

    dim: int = 64
    max_length: int = 50  # newest events the encoder reads per user
    # attention: the newest `max_length` events in order; hybrid: + the whole history pooled
    # (long-term interest); pooled: the pooled history alone (order-blind, to compare)
    encoder: str = "attention"
    layers: int = 2
    heads: int = 2
    dropout: float = 0.5  # SASRec's setting for sparse data; measured on Sports above 0.2
    epochs: int = 200  # at most; early stopping on validation NDCG@10 decides
    patience: int = 5  # epochs without a better validation NDCG@10 before stopping
    train_seconds: float = 0.0  # time budget for training epochs (0: none)
    batch_size: int = 256  # sequences per step
    # An epoch (between validations) is one pass over the users, or as many passes as make
    # this many steps: on small data sets one pass is only a few steps.
    min_steps_per_epoch: int = 50
    loss: str = "auto"  # full | sampled | auto (full up to full_softmax_max_items)
    # Measured on 2 CPU cores: a full softmax over 10k items made an epoch 9x slower than
    # 2,048 sampled negatives (18k items: 5x) for the same validation NDCG after 2 epochs.
    full_softmax_max_items: int = 4_096
    negatives: int = 2048  # shared negatives per step of the sampled softmax
    # Items the user already met by a position are left out of its softmax, as serving and
    # every protocol leave them out of the ranking: the loss then never pushes a user's
    # vector away from what they saw, only the new item above the other unseen ones.
    mask_seen: bool = True
    # Each position also learns this many tokens drawn from anywhere later in the sequence
    # (long-horizon interest, as when a shopper's next days are what counts), each weighted
    # `future_weight` against the next item's 1.
    future_targets: int = 0
    future_weight: float = 0.5
    # A long-term memory beside the encoder (`models.memory`): an item-item matrix on the
    # whole history factorised to `long_term_rank`; training starts from it. ease: EASE's;
    # ridge: each item's plain ridge regression on all items (itself included, the diagonal
    # left out of the ranking); auto: ridge unless EASE
    # beats it on validation by `VALIDATION_EVIDENCE` standard errors (both come from one
    # solve; `models.memory.FORMS` has the measurements). none: the encoder alone. The solve
    # is dense: past `long_term_max_items` items with events, it holds that many with the most
    # users, as the EASE baseline does (0: no memory).
    long_term: str = "auto"
    # The widest rank: the fit also tries half of it (`models.memory.NARROWER_RANK_SHARE`).
    # Measured (the start alone, test NDCG@10; 2026-12-05): the default shop rank 64 0.114,
    # 128 0.1253, 256 0.1258, 512 0.1259 (full EASE 0.1255; coverage 0.238, 0.244, 0.251
    # against 0.259); MovieLens msr 128 0.4800, 256 0.4784, 512 0.4805 (EASE 0.4822), the
    # same with an exact SVD. No rank wins on both, and each doubling costs more (2.5 s per
    # factorisation at 10k items for 256, 8 s for 512) and widens the served vectors.
    long_term_rank: int = 256
    long_term_max_items: int = 20_000
    ease_l2: float = 500.0
    # After training, the memory's chosen form again on every token, the validation ones
    # included (under `window` the newest days; under `random` a share of every history), as
    # a model is refit on all its data once validation has chosen it, when validation held
    # out at least this share of the tokens (a second solve; 1.0: never). Measured on the default shop (window validation,
    # 11% of tokens held out): NDCG@10 0.1233 -> 0.1240.
    long_term_refit_share: float = 0.05
    # What validation holds out per user to pick the epoch, as the test will (see
    # `models.sequences.split_for_validation`): next (the next visit or item), random (a
    # random `validation_share` of the history, the rest as context: set-style tests such
    # as msr) or window (every new item of the last `validation_days` days: the temporal test).
    validation: str = "next"
    validation_days: float = 3.0
    validation_share: float = 0.1
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    text_components: int = 64  # principal components of the MiniLM vectors that are kept
    id_dropout: float = 0.1  # when the catalog has content
    validation_users: int = 10_000  # at most, for early stopping
    seed: int = 42
    device: str = "auto"  # auto = CUDA where present, else CPU
    user_feature_columns: tuple[str, ...] = field(default_factory=tuple)
    item_feature_columns: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        """Check every value now (a wrong one would fail deep inside a run, or never): one
        ValueError lists every problem."""
        check = Problems("EmbeddingConfig")
        size = check.at_least("dim", self.dim, 1, integer=True)
        check.at_least("max_length", self.max_length, 1, integer=True)
        check.one_of("encoder", self.encoder, ENCODERS)
        check.at_least("layers", self.layers, 1, integer=True)
        heads = check.at_least("heads", self.heads, 1, integer=True)
        # every encoder builds the attention layers, which split dim evenly over the heads
        if size and heads and self.dim % self.heads:
            check.add(f"dim must be divisible by heads ({self.heads}), not {self.dim}")
        check.within("dropout", self.dropout, 0, 1)
        check.at_least("epochs", self.epochs, 0, integer=True)
        check.at_least("patience", self.patience, 1, integer=True)
        check.at_least("train_seconds", self.train_seconds, 0)
        check.at_least("batch_size", self.batch_size, 1, integer=True)
        check.at_least("min_steps_per_epoch", self.min_steps_per_epoch, 1, integer=True)
        check.one_of("loss", self.loss, LOSSES)
        check.at_least("full_softmax_max_items", self.full_softmax_max_items, 0, integer=True)
        check.at_least("negatives", self.negatives, 1, integer=True)
        check.at_least("future_targets", self.future_targets, 0, integer=True)
        check.at_least("future_weight", self.future_weight, 0)
        check.one_of("long_term", self.long_term, LONG_TERMS)
        check.at_least("long_term_rank", self.long_term_rank, 0, integer=True)
        check.at_least("long_term_max_items", self.long_term_max_items, 0, integer=True)
        check.above("ease_l2", self.ease_l2, 0)
        check.within("long_term_refit_share", self.long_term_refit_share, 0, 1, True)
        check.one_of("validation", self.validation, VALIDATION_MODES)
        check.above("validation_days", self.validation_days, 0)
        check.within("validation_share", self.validation_share, 0, 1)
        check.above("learning_rate", self.learning_rate, 0)
        check.at_least("weight_decay", self.weight_decay, 0)
        check.at_least("text_components", self.text_components, 1, integer=True)
        check.within("id_dropout", self.id_dropout, 0, 1)
        check.at_least("validation_users", self.validation_users, 1, integer=True)
        check.at_least("seed", self.seed, 0, integer=True)  # numpy's generators want >= 0
        check.device("device", self.device)
        for name in ("user_feature_columns", "item_feature_columns"):
            columns = getattr(self, name)
            if not (isinstance(columns, tuple) and all(isinstance(c, str) for c in columns)):
                check.add(f"{name} must be a tuple of column names, not {columns!r}")
        check.raise_any()

    @classmethod
    def from_dict(cls, values: dict) -> EmbeddingConfig:
        """A config from its saved dict (unknown keys are an error: retrain)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}")
        tuples = {"user_feature_columns", "item_feature_columns"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in values.items()})


class _Standardiser:
    """log1p for counts, then zero mean / unit variance, fitted on training rows."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> _Standardiser:
        x = cls._raw(frame)
        return cls(x.mean(0), x.std(0) + 1e-6)

    @staticmethod
    def _raw(frame: pd.DataFrame) -> np.ndarray:
        x = frame.astype(float).fillna(0.0).to_numpy(np.float32)
        return np.sign(x) * np.log1p(np.abs(x))

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        return np.nan_to_num((self._raw(frame) - self.mean) / self.std).astype(np.float32)


@dataclass
class _Content:
    """The catalog as the item tower reads it (one row per item)."""

    category: torch.Tensor
    price_bucket: torch.Tensor
    text: torch.Tensor
    attribute_offsets: torch.Tensor
    attribute_values: torch.Tensor


class EmbeddingRecommender(Recommender):
    """Sequence-aware two-tower model behind the shared recommender interface."""

    name = "embedding"
    # Of a training time budget, the share for steps; the rest validates the last epoch.
    TRAINING_SHARE = 0.85

    def __init__(self, config: EmbeddingConfig | None = None, progress: bool = True) -> None:
        super().__init__()
        self.config = config or EmbeddingConfig()
        self.progress = progress
        self.device = resolve_device(self.config.device)
        self.history: list[dict] = []  # per epoch: loss, seconds, validation NDCG@10
        self.warm_start_from: str | None = None  # version of the model training started from
        self.loss_used = ""
        self.best_epoch = 0
        self.trained_share = 1.0  # of the best epoch's trained part (see TRAINED_SHARES)
        self.best_validation_ndcg = 0.0
        self.memory_form = "none"  # the item-item matrix the memory holds (see long_term)
        self.fit_seconds = 0.0
        self._given_user_vectors: torch.Tensor | None = None  # see use_user_vectors
        self._frozen_items: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _say(self, message: str) -> None:
        if self.progress and world()[0] == 0:  # one voice for all training processes
            print(f"[embedding] {message}", flush=True)

    # -- data ---------------------------------------------------------------------------
    def _prepare_items(self, items: pd.DataFrame, earlier: EmbeddingRecommender | None) -> None:
        """Vocabularies of categories, price buckets and attributes; the text axes (an
        earlier model's, when warm-starting, so its weights still fit)."""
        self.categories = pd.Index(
            pd.unique(pd.concat([pd.Series([UNKNOWN_CATEGORY]), _category(items)]))
        )
        bucket = items["price_bucket"] if "price_bucket" in items else pd.Series(0, items.index)
        self.n_price_buckets = int(bucket.fillna(0).astype(int).max()) + 1
        values = _attribute_lists(items)
        self.attribute_ids = pd.Index(sorted({a for row in values for a in row}))
        if earlier is not None:
            self.text_mean, self.text_axes = earlier.text_mean, earlier.text_axes
        else:
            text = _text_matrix(items)
            self.text_mean, self.text_axes = (
                _principal_axes(text, self.config.text_components)
                if text is not None
                else (None, None)
            )

    def _content_inputs(self, items: pd.DataFrame) -> _Content:
        """Category index, price bucket, projected text and attribute bags of `items` (the
        catalog or new ones); unknown categories, attributes and missing text count as none."""
        category = self.categories.get_indexer(_category(items))
        category[category < 0] = 0  # UNKNOWN_CATEGORY
        bucket = items["price_bucket"] if "price_bucket" in items else pd.Series(0, items.index)
        bucket = np.clip(bucket.fillna(0).astype(int).to_numpy(), 0, self.n_price_buckets - 1)
        raw = _text_matrix(items)
        if self.text_axes is None or raw is None:
            width = 1 if self.text_axes is None else len(self.text_axes)
            text = np.zeros((len(items), width), np.float32)
        else:
            text = ((raw - self.text_mean) @ self.text_axes.T).astype(np.float32)
            text[~items["text_embedding"].notna().to_numpy()] = 0.0
        bags = [self.attribute_ids.get_indexer(list(row)) for row in _attribute_lists(items)]
        bags = [b[b >= 0] for b in bags]
        lengths = np.array([len(b) for b in bags], np.int64)
        return _Content(
            torch.as_tensor(category, dtype=torch.long),
            torch.as_tensor(bucket, dtype=torch.long),
            torch.as_tensor(text),
            torch.as_tensor(np.r_[0, np.cumsum(lengths)[:-1]], dtype=torch.long),
            torch.as_tensor(np.concatenate([np.zeros(0, np.int64), *bags]), dtype=torch.long),
        )

    def _content_design(self, content: _Content) -> sp.csr_matrix:
        """The content as a sparse design for the memory's content map (items x columns): a
        constant, the category and the price bucket one-hot, the projected text, and the
        attribute bag with weights that sum to one."""
        n = len(content.category)
        rows = np.arange(n)
        lengths = np.diff(np.r_[content.attribute_offsets.numpy(), len(content.attribute_values)])
        blocks = [
            sp.csr_matrix(np.ones((n, 1))),
            sp.csr_matrix(
                (np.ones(n), (rows, content.category.numpy())), shape=(n, len(self.categories))
            ),
            sp.csr_matrix(
                (np.ones(n), (rows, content.price_bucket.numpy())),
                shape=(n, self.n_price_buckets),
            ),
            sp.csr_matrix(content.text.numpy().astype(np.float64)),
            sp.csr_matrix(
                (
                    np.repeat(1.0 / np.maximum(lengths, 1), lengths),
                    (np.repeat(rows, lengths), content.attribute_values.numpy()),
                ),
                shape=(n, max(len(self.attribute_ids), 1)),
            ),
        ]
        return sp.hstack(blocks, format="csr")

    def _latest_features(
        self, interactions: pd.DataFrame, earlier: EmbeddingRecommender | None
    ) -> np.ndarray:
        """Standardised features of the latest snapshot per user (kept) and per item
        (returned, for the item tower); an earlier model's scalers when warm-starting."""
        cfg = self.config
        ordered = interactions.sort_values("event_time", kind="stable")
        if earlier is not None:
            self.user_scaler, self.item_scaler = earlier.user_scaler, earlier.item_scaler
        else:
            columns = (list(cfg.user_feature_columns), list(cfg.item_feature_columns))
            self.user_scaler, self.item_scaler = (
                _Standardiser.fit(ordered[c]) if c else None for c in columns
            )
        latest = ordered.groupby("user_id").tail(1).set_index("user_id")
        self.user_latest = torch.as_tensor(
            _scaled(self.user_scaler, latest.reindex(self.user_index), cfg.user_feature_columns)
        )
        items = ordered.groupby("item_id").tail(1).set_index("item_id")
        return _scaled(self.item_scaler, items.reindex(self.item_ids), cfg.item_feature_columns)

    def _build(self, content: _Content, item_features: np.ndarray) -> None:
        cfg = self.config
        self.item_tower = ItemTower(
            len(self.item_ids),
            cfg.dim,
            content.category,
            content.price_bucket,
            content.text,
            content.attribute_offsets,
            content.attribute_values,
            torch.as_tensor(item_features),
            len(self.categories),
            self.n_price_buckets,
            len(self.attribute_ids),
        ).to(self.device)
        self.user_tower = SequenceUserTower(
            cfg.dim,
            cfg.max_length,
            cfg.layers,
            cfg.heads,
            cfg.dropout,
            self.user_latest.shape[1],
            cfg.encoder,
        ).to(self.device)
        self.memory = LongTermMemory.empty(len(self.item_ids)).to(self.device)

    # -- training -----------------------------------------------------------------------
    def fit(
        self,
        interactions: pd.DataFrame,
        items: pd.DataFrame,
        warm_start: EmbeddingRecommender | None = None,
    ) -> EmbeddingRecommender:
        """Train on `interactions` (user_id, item_id, event_time, optional event_type and
        feature columns) over the catalog `items`, keeping the epoch with the best
        validation NDCG@10.

        `warm_start`: an earlier fitted model to start from. Its weights carry over for the
        items, categories and attributes it knows (new items start from content alone) and
        its text axes and feature scalers are kept, so epoch 0 is the earlier model on
        today's data; early stopping then decides whether training helps."""
        started = self._fit_started = time.perf_counter()
        self._given_user_vectors = None
        self._frozen_items = None
        torch.manual_seed(self.config.seed)
        if warm_start is not None:
            self._check_warm_start(warm_start)
        self.warm_start_from = warm_start.version if warm_start is not None else None
        # the earlier model's gate and scale suit its own memory only (`_choose_memory`)
        self._warm_start_memory = (
            (warm_start.memory_form, warm_start.memory_settings())
            if warm_start is not None
            else None
        )
        u, i = self._index(interactions, items)
        self._prepare_items(items, warm_start)
        item_features = self._latest_features(interactions, warm_start)
        seconds = epoch_seconds(interactions["event_time"])
        every = build_sequences(u, i, event_type_codes(interactions), seconds, len(self.user_index))
        self.serve_gap = serving_gap(every)
        cfg = self.config
        validation = split_for_validation(
            every,
            cfg.validation,
            self.serve_gap,
            cfg.seed,
            cfg.validation_days,
            cfg.validation_share,
        )
        self.sequences, self.held_out, self._truth = (
            validation.train,
            validation.held_out,
            validation.truth,
        )
        content = self._content_inputs(items)
        self._build(content, item_features)
        self._catalog_content, self._catalog_design = content, None  # design: when needed
        self.memory = self._fit_memory()
        if warm_start is not None:
            self._start_from_model(warm_start)
        self._train()
        if self.sequences is not every:  # tokens were taken out to validate: serve them all
            self.sequences, self.held_out = every, every.ptr[1:].copy()
        if self.memory.rank and validation.held >= cfg.long_term_refit_share * len(every.items):
            self.memory = self._fit_memory(every_token=True)
        self.fit_seconds = time.perf_counter() - started
        return self

    def _check_warm_start(self, earlier: EmbeddingRecommender) -> None:
        same = (
            "dim",
            "max_length",
            "encoder",
            "layers",
            "heads",
            "user_feature_columns",
            "item_feature_columns",
            "text_components",
        )
        differ = [k for k in same if getattr(earlier.config, k) != getattr(self.config, k)]
        if differ:
            raise ValueError(
                f"cannot warm-start from {earlier.version}: its {', '.join(differ)} "
                "differ from this model's; train from scratch instead"
            )

    def _fit_memory(self, every_token: bool = False) -> LongTermMemory:
        """The long-term memory (`models.memory`) on every token but the validation ones, of
        each form the config allows: the first is returned, all are kept for
        `_choose_memory` (which also sets the rank, repeat power, half-life and scale). None
        when the config or the catalog's size says so. `every_token`: once training is done,
        the chosen form again with the validation tokens too, at the chosen rank, keeping the
        learnt gate and scale, the repeat power and the half-life (the towers never read P or
        Q, so nothing else depends on them)."""
        cfg, n_items, seq = self.config, len(self.item_ids), self.sequences
        self._memories: dict[str, LongTermMemory] = {}
        if cfg.long_term == "none" or not cfg.long_term_rank or not cfg.long_term_max_items:
            self.memory_form = "none"
            return LongTermMemory.empty(n_items).to(self.device)
        users = seq.owners
        new = ~seq.repeats
        if not every_token:
            new[held_tokens(seq, self.held_out, cfg.validation)] = False
        new &= self._held_in_memory(seq.items, new, quiet=every_token)[seq.items]
        forms = (self.memory_form,) if every_token else _memory_forms(cfg.long_term)
        memories = fit_memory(
            users[new],
            seq.items[new],
            len(seq.lengths),
            n_items,
            self.memory.rank if every_token else cfg.long_term_rank,
            cfg.ease_l2,
            self._say,
            cfg.seed,
            forms,
        )
        known = np.zeros(n_items, bool)
        known[seq.items[new]] = True
        for form in forms:
            memory = memories[form].to(self.device)
            if every_token:  # the chosen rank, repeat power and half-life, the learnt blend
                learnt = {
                    k: v for k, v in self.memory.state_dict().items() if not k.endswith("_side")
                }
                memory.load_state_dict(learnt, strict=False)
            if self.item_tower.has_content:
                if self._catalog_design is None:  # once per fit: every memory fit uses it
                    self._catalog_design = self._content_design(self._catalog_content)
                memory.fit_content_side(self._catalog_design, known)
            self._memories[form] = memory
        first = self._memories[forms[0]]
        self.memory_form = forms[0] if first.rank else "none"  # no pairs: no memory
        return first

    def _held_in_memory(self, items: np.ndarray, counted: np.ndarray, quiet: bool) -> np.ndarray:
        """Which items the memory's dense solve holds (a mask over the catalog): every item of
        the `counted` tokens, or, past `long_term_max_items` of them, that many with the most
        users (`most_used_items`, as EASE's baseline keeps). The others get their memory factors from
        content (`fit_content_side`), or none; their events add nothing to a user's memory."""
        users_of = np.bincount(items[counted], minlength=len(self.item_ids))
        present, limit = int(np.count_nonzero(users_of)), self.config.long_term_max_items
        held = np.zeros(len(users_of), bool)
        held[most_used_items(users_of, limit)] = True
        if present > limit and not quiet:
            rest = "from content" if self.item_tower.has_content else "none"
            self._say(
                f"long-term memory: the {limit:,} items with the most users of {present:,} "
                f"(long_term_max_items: a dense solve); the other items' memory factors: {rest}"
            )
        return held

    def _memory_scale(self, sample: int = 2048) -> float:
        """The power of two (1 .. 2^14) at which the memory's scores, as logits over the whole
        catalog, give the lowest cross-entropy on the last training target of a sample of
        users: softmax training then starts from the memory's calibrated logits. The
        cross-entropy is convex in the scale, so along the powers it falls, then rises: a
        bisection finds the lowest in 8 evaluations where the whole grid took 15. A catalog
        past `CALIBRATION_SCORES` / `sample` items samples fewer users (at least 256)."""
        sample = min(sample, max(CALIBRATION_SCORES // len(self.item_ids), 256))
        seq = self.sequences
        target = self.held_out - 1
        users = np.flatnonzero((target - seq.ptr[:-1] >= 1) & ~seq.repeats[np.maximum(target, 0)])
        if not len(users):
            return 1.0
        users = np.random.default_rng(self.config.seed).permutation(users)[:sample]
        with torch.no_grad():
            sums = self._memory_sums(seq, seq.ptr[users], target[users])
            scores = sums @ self.memory.item_side.T
            wanted = torch.as_tensor(seq.items[target[users]], device=self.device)
            scales = 2.0 ** np.arange(15)

            @functools.cache
            def loss(k: int) -> float:
                return float(nn.functional.cross_entropy(scales[k] * scores, wanted))

            low, high = 0, len(scales) - 1
            while low < high:  # the first power whose loss is no higher than the next one's
                middle = (low + high) // 2
                low, high = (
                    (low, middle) if loss(middle) <= loss(middle + 1) else (middle + 1, high)
                )
        return float(scales[low])

    def _memory_sums(
        self, sequences: Sequences, starts: np.ndarray, ends: np.ndarray
    ) -> torch.Tensor:
        """The memory's P summed over the distinct items of the tokens [starts, ends) of each
        row, each weighted by the recency of its last token there and by how many tokens it
        has there (B x rank)."""
        counts = np.maximum(ends - starts, 0)
        tokens = ranges(starts, counts)
        owner = np.repeat(np.arange(len(starts)), counts)
        last = last_occurrences(owner, sequences.items[tokens])
        memory = self.memory
        weights = memory.recency_weights(ends[owner[last]] - 1 - tokens[last])  # events after
        if float(memory.repeat_power):
            on_item = tokens_on_item(owner, sequences.items[tokens])[last]
            weights = weights * memory.repeat_weights(on_item)
        owner, tokens = owner[last], tokens[last]
        rows = torch.as_tensor(owner, device=self.device)
        items = torch.as_tensor(sequences.items[tokens], device=self.device)
        side = memory.user_side
        weighted = side[items] * weights[:, None]
        return side.new_zeros(len(starts), side.shape[1]).index_add(0, rows, weighted)

    def _loss_mode(self) -> str:
        cfg = self.config
        if cfg.loss != "auto":
            return cfg.loss
        return "full" if len(self.item_ids) <= cfg.full_softmax_max_items else "sampled"

    def _validation_users(self) -> np.ndarray:
        """Users with a new item to validate after at least two earlier tokens."""
        seq, held = self.sequences, self.held_out
        eligible = np.flatnonzero((held - seq.ptr[:-1] >= 2) & (np.diff(self._truth[0]) > 0))
        if len(eligible) > self.config.validation_users:
            rng = np.random.default_rng(self.config.seed)
            eligible = np.sort(rng.choice(eligible, self.config.validation_users, replace=False))
        return eligible

    def _train(self) -> None:
        """Train epoch by epoch from the start and keep the epoch with the best validation
        NDCG@10, if it beats the start clearly (`_clearly_better`); else keep the start."""
        cfg = self.config
        self.loss_used = self._loss_mode()
        # >= 1 target before the validation token
        trainable = np.flatnonzero(self.held_out - self.sequences.ptr[:-1] >= 2)
        validation = self._validation_users()
        start_gains = best_gains = self._start_gains(validation)  # settles the memory
        optimiser = self._optimiser()
        step = data_parallel(
            _SoftmaxStep(self, self.loss_used), [self.item_tower, self.user_tower, self.memory]
        )
        self._say(
            f"{len(self.user_index):,} users, {len(self.item_ids):,} items, "
            f"{len(self.sequences.items):,} events in sequences; {len(trainable):,} users "
            f"train, {len(validation):,} validate; {self.loss_used} softmax on {self.device}"
        )
        rng = np.random.default_rng(cfg.seed)
        # Several processes draw their steps' randomness apart, their batches alike.
        step_rng = np.random.default_rng([cfg.seed, world()[0]]) if is_distributed() else rng
        best = _mean(start_gains)
        start_state = best_state = self._state_copy()
        self.best_epoch, self.trained_share, stale = 0, 1.0, 0
        self._say(f"epoch 0 (the start): val_ndcg@10={best:.4f}")
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            loss, out_of_time = self._train_epoch(step, optimiser, trainable, rng, step_rng)
            gains, share = self._blend_shares(validation, start_state)
            score = _mean(gains)
            self._record_epoch(epoch, loss, time.perf_counter() - t0, score, share)
            if score > best:
                best, best_state, best_gains = score, self._shared_state(start_state, share), gains
                self.best_epoch, self.trained_share, stale = epoch, share, 0
            else:
                stale += 1
            if any_process(stale >= cfg.patience):  # the same decision on every process
                self._say(f"early stop: best val NDCG@10 {best:.4f} at epoch {self.best_epoch}")
                break
            if out_of_time:
                self._say(f"time budget of {cfg.train_seconds:.0f} s spent in epoch {epoch}")
                break
        self._restore(start_state if self._settle(best_gains, start_gains) else best_state)

    def _settle(self, best: torch.Tensor, start: torch.Tensor) -> bool:
        """Whether the fit keeps the start rather than the best epoch (per-user validation
        gains `start` and `best`), said and recorded: an epoch that does not beat the start by
        `VALIDATION_EVIDENCE` standard errors gives way to the start."""
        keep_start = self.best_epoch == 0
        if self.best_epoch and not _clearly_better(best, start):
            keep_start = True
            self._say(
                f"epoch {self.best_epoch}'s val NDCG@10 {_mean(best):.4f} is within the noise "
                f"of the start's {_mean(start):.4f} ({_standard_errors(best, start):.1f} "
                f"standard errors of the per-user difference, {VALIDATION_EVIDENCE:g} needed): "
                "keeping the start"
            )
            self.best_epoch, self.trained_share, best = 0, 1.0, start
        elif self.best_epoch == 0 and self.history:
            self._say("no trained epoch beat the start: the model is its starting point")
        elif self.best_epoch:
            self._say(
                f"kept epoch {self.best_epoch} with {self.trained_share:.1%} of its trained "
                f"part: val NDCG@10 {_mean(best):.4f} against the start's {_mean(start):.4f}"
            )
        self.best_validation_ndcg = _mean(best)
        return keep_start

    def _optimiser(self) -> torch.optim.Optimizer:
        """Adam over both towers and the memory's learnt blend."""
        parameters = [
            *self.item_tower.parameters(),
            *self.user_tower.parameters(),
            *self.memory.parameters(),
        ]
        cfg = self.config
        return torch.optim.Adam(parameters, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    def _start_gains(self, validation: np.ndarray) -> torch.Tensor:
        """Settle the start (the memory's rank, repeat power and half-life, a warm start's
        blend) and return its per-user validation NDCG@10 (`_validation_gains`)."""
        gains = self._choose_memory(validation)
        blended = self._better_start(validation)
        if blended is not None:
            gains = blended
        return gains if gains is not None else self._validation_gains(validation)

    def _train_epoch(
        self,
        step: Callable[[np.ndarray, np.random.Generator], tuple[torch.Tensor, float]],
        optimiser: torch.optim.Optimizer,
        trainable: np.ndarray,
        rng: np.random.Generator,
        step_rng: np.random.Generator,
    ) -> tuple[float, bool]:
        """One epoch of optimiser steps: one pass over the `trainable` users, or as many as
        make `min_steps_per_epoch` steps (on several processes, this process's `shard` of
        them). `rng` draws the batches (the same on every process), `step_rng` what each step
        draws. Returns the mean loss per target and whether the time budget ran out (the
        rest of it validates this epoch). Records the sequences trained per second."""
        cfg = self.config
        total, count, sequences, started = 0.0, 0, 0, time.perf_counter()
        batches: list[np.ndarray] = []
        while len(trainable) and len(batches) < cfg.min_steps_per_epoch:
            batches += length_batches(trainable, self.sequences.lengths, cfg.batch_size, rng)
        out_of_time = False
        for users in shard(batches):
            loss, n = step(users, step_rng)
            optimiser.zero_grad()
            (loss * target_share(n)).backward()
            optimiser.step()
            total, count, sequences = (
                total + float(loss.detach()) * n,
                count + n,
                sequences + len(users),
            )
            if cfg.train_seconds:  # the budget covers the whole fit; every process stops alike
                spent = time.perf_counter() - self._fit_started
                out_of_time = any_process(spent > cfg.train_seconds * self.TRAINING_SHARE)
                if out_of_time:
                    break
        self._sequences_per_second = (
            sequences * world()[1] / max(time.perf_counter() - started, 1e-9)
        )
        return total / max(count, 1), out_of_time

    def _blend_shares(
        self, validation: np.ndarray, start: dict[str, dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, float]:
        """The epoch's per-user validation gains at the best of `TRAINED_SHARES`, and that
        share. A share a keeps the towers as trained and moves the blend (the memory's gate
        and log-scale, the item bias) a of the way from `start` to where training took it
        (`_shared_state`); the model is left as trained, so training goes on from there.
        Without a memory, a share would only rescale the scores: the whole is kept."""
        shares = TRAINED_SHARES if self.memory.rank else (1.0,)
        best: tuple[torch.Tensor, float] | None = None
        for share in shares:
            with self._blend_at(start, share):
                gains = self._validation_gains(validation)
            if best is None or _mean(gains) > _mean(best[0]):
                best = (gains, share)
        assert best is not None
        return best

    def _shared_state(
        self, start: dict[str, dict[str, torch.Tensor]], share: float
    ) -> dict[str, dict[str, torch.Tensor]]:
        """A copy of the model's state with `share` of its trained blend (`_blend_at`)."""
        with self._blend_at(start, share):
            return self._state_copy()

    @contextmanager
    def _blend_at(self, start: dict[str, dict[str, torch.Tensor]], share: float) -> Iterator[None]:
        """Within the block, the blend (gate, memory log-scale, item bias) sits `share` of the
        way from its value in the `start` state to its trained value, then goes back."""
        blend = {
            ("memory", "gate"): self.memory.gate,
            ("memory", "log_scale"): self.memory.log_scale,
            ("item", "item_bias.weight"): self.item_tower.item_bias.weight,
        }
        trained = {key: parameter.detach().clone() for key, parameter in blend.items()}
        try:
            with torch.no_grad():
                for (tower, name), parameter in blend.items():
                    was = start[tower][name]
                    parameter.copy_(was + share * (trained[tower, name] - was))
            yield
        finally:
            with torch.no_grad():
                for key, parameter in blend.items():
                    parameter.copy_(trained[key])

    def _record_epoch(
        self, epoch: int, loss: float, seconds: float, score: float, share: float
    ) -> None:
        """An epoch's loss, time, validation NDCG@10 and the share of its trained part that
        scored it, in `history` and in the log."""
        record = {
            "epoch": epoch,
            "loss": round(loss, 4),
            "seconds": round(seconds, 2),
            "val_ndcg@10": round(score, 5),
            "trained_share": share,
            "sequences_per_s": round(self._sequences_per_second, 1),
        }
        self.history.append(record)
        self._say(" ".join(f"{k}={v}" for k, v in record.items()))

    def _choose_memory(self, validation: np.ndarray) -> torch.Tensor | None:
        """The memory's rank (`_settle_rank`), then per form (of those fit, `_fit_memory`) its
        repeat power (`REPEAT_POWERS`, where items come back in the histories) and recency
        half-life (`HALF_LIVES`), then the form, by validation NDCG@10 of the memory alone,
        its scale calibrated for each. Within a form, no repeat weights and no decay unless a
        power or a half-life does better by `VALIDATION_EVIDENCE` standard errors of the
        per-user difference; the first form (ridge, the plain regression) unless another
        (EASE, which adds a constraint) does better by as much. A warm start's blend (gate
        and scale) is put back afterwards where the earlier model's memory had the chosen
        form and settings (its scale suits those only). Returns the per-user gains of the
        state it leaves when it scored that state (None otherwise)."""
        kept = {k: getattr(self.memory, k).detach().clone() for k in ("gate", "log_scale")}
        memories, self._memories = self._memories, {}  # the chosen one stays, as self.memory
        if not self.memory.rank:
            return None
        if not len(validation):  # the first form, as fit
            with torch.no_grad():
                if not self._memory_as_warm_start():
                    self.memory.gate.zero_()
                if float(self.memory.gate) == 0.0:
                    self._calibrate_memory_scale()
            return None
        powers = REPEAT_POWERS if self.sequences.repeats.any() else REPEAT_POWERS[:1]
        chosen: dict[str, torch.Tensor] = {}  # per-user gains of each form as settled
        rank_note, memories = self._settle_rank(memories, validation)
        tried = [rank_note] if rank_note else []
        for form, memory in memories.items():
            self.memory = memory
            with torch.no_grad():
                by_power, gains = self._settle_memory("repeat_power", powers, validation)
                by_half_life, chosen[form] = self._settle_memory(
                    "half_life", HALF_LIVES, validation, gains
                )
            settled = ", ".join(part for part in (by_power, by_half_life) if part)
            tried.append(f"{FORM_NAMES[form]}: {settled}")
        form, leads = _kept_form(chosen)
        tried += leads
        self.memory, self.memory_form = memories[form], form
        with torch.no_grad():
            # a warm start's blend, where its memory was of the form chosen today
            blended = float(kept["gate"]) != 0.0 and self._memory_as_warm_start()
            if blended:
                self.memory.gate.copy_(kept["gate"])
                self.memory.log_scale.copy_(kept["log_scale"])
            else:  # where the candidates were ranked without it
                self._calibrate_memory_scale()
        self._say(
            f"memory: {FORM_NAMES[form]} at rank {self.memory.rank}, repeat power "
            f"{float(self.memory.repeat_power):g}, "
            f"recency half-life {float(self.memory.half_life):g} (0: none), by val NDCG@10 "
            f"({'; '.join(tried)})"
        )
        return None if blended else chosen[form]

    def _memory_alone_gains(self, validation: np.ndarray) -> torch.Tensor:
        """Per-user validation NDCG@10 of the memory as it is set, its gate shut (the memory
        alone), its scale calibrated where the scale changes the ranking."""
        self.memory.gate.zero_()
        self._calibrate_memory_scale(only_where_it_ranks=True)
        return self._validation_gains(validation)

    def _calibrate_memory_scale(self, only_where_it_ranks: bool = False) -> None:
        """Set the memory's scale to `_memory_scale`'s. `only_where_it_ranks`: only where the
        scale changes the ranking, that is where an item has a bias (a warm start's): with
        the gate shut and no biases, every score is the scale times the memory's, so
        validation ranks the same at any scale and the chosen memory is calibrated once."""
        if only_where_it_ranks and not bool(self.item_tower.item_bias.weight.detach().any()):
            return
        self.memory.log_scale.fill_(np.log(self._memory_scale()))

    def _memory_as_warm_start(self) -> bool:
        """Whether the memory has the warm start's form, rank, repeat power and half-life."""
        now = (self.memory_form, self.memory_settings())
        return self._warm_start_memory is not None and now == self._warm_start_memory

    def _settle_rank(
        self, memories: dict[str, LongTermMemory], validation: np.ndarray
    ) -> tuple[str, dict[str, LongTermMemory]]:
        """The memories at the rank they were fit or at half of it (their first factors), by
        validation NDCG@10 of the first form alone: the better mean, the narrower on a tie.
        Both approximate the same regression, so neither is a default that evidence must
        overturn (`NARROWER_RANK_SHARE`). Returns the comparison in words and the memories."""
        memory = next(iter(memories.values()))
        wide, narrow = memory.rank, int(memory.rank * NARROWER_RANK_SHARE)
        if narrow < 1:
            return "", memories
        gains = {}
        with torch.no_grad():
            for rank in (narrow, wide):
                self.memory = memory.truncated(rank)
                gains[rank] = self._memory_alone_gains(validation)
        rank = wide if _mean(gains[wide]) > _mean(gains[narrow]) else narrow
        note = (
            f"rank {narrow}: {_mean(gains[narrow]):.4f} {wide}: {_mean(gains[wide]):.4f}, "
            f"{wide} - {narrow}: {_standard_errors(gains[wide], gains[narrow]):.1f} standard "
            "errors"
        )
        if rank == wide:
            return note, memories
        return note, {form: memory.truncated(rank) for form, memory in memories.items()}

    def _settle_memory(
        self,
        setting: str,
        values: tuple[float, ...],
        validation: np.ndarray,
        first_gains: torch.Tensor | None = None,
    ) -> tuple[str, torch.Tensor]:
        """Set the memory's `setting` (a buffer) to the best of `values` by validation NDCG@10
        of the memory alone (`_memory_alone_gains`), the first unless another beats it
        clearly (`_clearly_better`). `first_gains`: the first value's, when the memory
        already holds it. Returns the scores in words and the chosen value's per-user
        gains."""
        memory, tried = self.memory, {}
        for value in values:
            getattr(memory, setting).fill_(value)
            if value == values[0] and first_gains is not None:
                tried[value] = (first_gains, float(memory.log_scale))
                continue
            gains = self._memory_alone_gains(validation)
            tried[value] = (gains, float(memory.log_scale))
        best = max(values, key=lambda v: _mean(tried[v][0]))
        if not _clearly_better(tried[best][0], tried[values[0]][0]):
            best = values[0]
        getattr(memory, setting).fill_(best)
        memory.log_scale.fill_(tried[best][1])
        if len(values) == 1:
            return "", tried[best][0]
        name = {"half_life": "recency half-life"}.get(setting, setting.replace("_", " "))
        scores = " ".join(f"{v:g}: {_mean(g):.4f}" for v, (g, _) in tried.items())
        return f"{name} {scores}", tried[best][0]

    def _better_start(self, validation: np.ndarray) -> torch.Tensor | None:
        """A warm start whose encoder is blended in (gate not 0) is also tried with the
        gate shut, today's memory alone, and the better of the two on validation is the
        start. Returns the start's per-user gains when it scored them (None otherwise)."""
        gate = self.memory.gate
        blended = float(gate.detach())
        if not self.memory.rank or blended == 0.0:
            return None
        with_earlier = self._validation_gains(validation)
        with torch.no_grad():
            gate.zero_()
        alone = self._validation_gains(validation)
        score, alone_score = _mean(with_earlier), _mean(alone)
        self._say(
            f"the start: the earlier model blended in {score:.4f}, the memory alone "
            f"{alone_score:.4f} (val NDCG@10)"
        )
        if alone_score >= score:
            return alone
        with torch.no_grad():
            gate.fill_(blended)
        return with_earlier

    def _state_copy(self) -> dict[str, dict[str, torch.Tensor]]:
        return {
            "item": {k: v.detach().clone() for k, v in self.item_tower.state_dict().items()},
            "user": {k: v.detach().clone() for k, v in self.user_tower.state_dict().items()},
            "memory": {k: v.detach().clone() for k, v in self.memory.state_dict().items()},
        }

    def _restore(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        self.item_tower.load_state_dict(state["item"])
        self.user_tower.load_state_dict(state["user"])
        self.memory.load_state_dict(state["memory"])

    def _start_from_model(self, earlier: EmbeddingRecommender) -> None:
        """Copy an earlier model's weights: the user tower whole; rows of items, categories
        and attributes it knows (by id and name); its price buckets as far as both have them;
        its dense layers. New items keep no id vector or bias: their content speaks."""
        new, old = self.item_tower, earlier.item_tower
        with torch.no_grad():
            self.user_tower.load_state_dict(earlier.user_tower.state_dict())
            for table, rows in [
                ("item_id", pd.Index(earlier.item_ids).get_indexer(self.item_ids)),
                ("item_bias", pd.Index(earlier.item_ids).get_indexer(self.item_ids)),
                ("category", earlier.categories.get_indexer(self.categories)),
                ("attributes", earlier.attribute_ids.get_indexer(self.attribute_ids)),
            ]:
                target = getattr(new, table).weight
                source = getattr(old, table).weight.to(self.device)
                known = torch.as_tensor(rows >= 0, device=self.device)
                target.zero_()
                if len(source) and known.any():
                    target[known] = source[torch.as_tensor(rows[rows >= 0], device=self.device)]
            buckets = min(new.price_bucket.weight.shape[0], old.price_bucket.weight.shape[0])
            new.price_bucket.weight[:buckets] = old.price_bucket.weight[:buckets].to(self.device)
            for layer in ("text", "item_features"):
                getattr(new, layer).load_state_dict(getattr(old, layer).state_dict())
            if earlier.memory.rank and self.memory.rank:  # today's memory, the earlier blend
                self.memory.gate.copy_(earlier.memory.gate)
                self.memory.log_scale.copy_(earlier.memory.log_scale)

    # -- encoding -----------------------------------------------------------------------
    def _encode_last(
        self,
        item_vectors: torch.Tensor,
        sequences: Sequences,
        starts: np.ndarray,
        ends: np.ndarray,
        user_features: torch.Tensor,
    ) -> torch.Tensor:
        """e_u after the tokens [starts, ends) of each row: the encoder reads at most the
        `max_length` newest, the long-term memory all of them. `item_vectors`: the item
        tower's (what the encoder reads), not the served e_i."""
        first, starts = starts, np.maximum(starts, ends - self.config.max_length)
        users = item_vectors.new_empty(len(starts), item_vectors.shape[1] + self.memory.rank)
        chunk = ENCODING_CHUNK_ROWS if self.device.type == "cpu" else len(starts)
        # a shut gate serves the memory alone (e_u's encoder part is 0 x its output): the
        # encoder is not run, as when the start is kept or validation chooses the memory
        shut = self.memory.rank > 0 and float(self.memory.gate.detach()) == 0.0
        for rows in similar_length_chunks(ends - starts, max(chunk, 1)):
            if shut:
                newest = item_vectors.new_zeros(len(rows), item_vectors.shape[1])
            else:
                newest = self._encode_newest(
                    item_vectors,
                    sequences,
                    first[rows],
                    starts[rows],
                    ends[rows],
                    user_features[torch.as_tensor(rows)],
                )
            memory = self._memory_sums(sequences, first[rows], ends[rows])
            users[torch.as_tensor(rows, device=self.device)] = self.memory.users(newest, memory)
        return users

    def _encode_newest(
        self,
        item_vectors: torch.Tensor,
        sequences: Sequences,
        first: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        user_features: torch.Tensor,
    ) -> torch.Tensor:
        """The user tower's output at the newest token of each window [starts, ends) (the
        tokens [first, starts) pooled before it, for an encoder that pools)."""
        window = windows(sequences, starts, ends, len(self.item_ids))
        next_gaps = np.roll(window.gaps, -1, axis=1)
        next_gaps[np.arange(len(starts)), np.maximum(window.lengths - 1, 0)] = self.serve_gap
        hidden = self._user_states(
            item_vectors, sequences, first, starts, window, next_gaps, user_features
        )
        dev = self.device
        last = (torch.as_tensor(window.lengths, device=dev) - 1).clamp(min=0)
        return hidden[torch.arange(len(starts), device=dev), last]

    def _user_states(
        self,
        item_vectors: torch.Tensor,
        sequences: Sequences,
        first: np.ndarray,
        starts: np.ndarray,
        window: Window,
        next_gaps: np.ndarray,
        user_features: torch.Tensor,
    ) -> torch.Tensor:
        """The user tower's output after every position of `window` (B x T x dim), the rows'
        tokens [first, starts) pooled before it (`_earlier`). `item_vectors`: the item
        tower's; `next_gaps`: the gap bucket of the event each position predicts."""
        dev = self.device
        return self.user_tower(
            rows_or_zeros(item_vectors, torch.as_tensor(window.items, device=dev)),
            torch.as_tensor(window.types, device=dev),
            torch.as_tensor(window.gaps, device=dev),
            torch.as_tensor(window.lengths, device=dev),
            user_features.to(dev),
            torch.as_tensor(next_gaps, device=dev),
            *self._earlier(item_vectors, sequences, first, starts),
        )

    def _earlier(
        self,
        item_vectors: torch.Tensor,
        sequences: Sequences,
        first: np.ndarray,
        starts: np.ndarray,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[()]:
        """Sum and count of the item vectors of tokens [first, starts) per row: the history
        before the window, for an encoder with a long-term part (nothing otherwise)."""
        if self.config.encoder == "attention":
            return ()
        counts, dev = starts - first, self.device
        rows = torch.as_tensor(np.repeat(np.arange(len(first)), counts), device=dev)
        items = torch.as_tensor(sequences.items[ranges(first, counts)], device=dev)
        total = item_vectors.new_zeros(len(first), item_vectors.shape[1])
        return total.index_add(0, rows, item_vectors[items]), torch.as_tensor(counts, device=dev)

    def _user_matrix(self, users: np.ndarray, item_vectors: torch.Tensor) -> torch.Tensor:
        if self._given_user_vectors is not None:
            return self._given_user_vectors[torch.as_tensor(users, device=self.device)]
        seq = self.sequences
        return self._encode_last(
            item_vectors, seq, seq.ptr[users], seq.ptr[users + 1], self.user_latest[users]
        )

    def _tower_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The item tower's vectors (what the encoder reads) and biases, in eval mode."""
        if self._frozen_items is not None:
            return self._frozen_items[0], self._frozen_items[2]
        self.item_tower.eval()
        self.user_tower.eval()
        vectors, bias = self.item_tower()
        return vectors.detach(), bias.detach()

    def _item_matrix(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The served e_i (tower vectors and the memory's item side) and b_i."""
        if self._frozen_items is not None:
            return self._frozen_items[1], self._frozen_items[2]
        vectors, bias = self._tower_items()
        return self.memory.items(vectors).detach(), bias

    def freeze_items(self) -> EmbeddingRecommender:
        """Compute the item side once (tower vectors, served e_i, b_i) and reuse it in every
        later call: for a service answering one user at a time, where recomputing it would
        cost more than the answer. Training again clears it. Returns the model."""
        with torch.no_grad():
            self._frozen_items = None
            vectors, bias = self._tower_items()
            self._frozen_items = (vectors, self.memory.items(vectors).detach(), bias)
        return self

    def _validation_gains(self, users: np.ndarray, batch: int = 1024) -> torch.Tensor:
        """NDCG@10 of each validation user's items (`split_for_validation`), ranked after
        the user's context (the tokens before the held-out one) among every item not in it."""
        if not len(users):
            return torch.zeros(0)
        seq, context_ends = self.sequences, self.held_out
        truth_ptr, truth_items = self._truth
        discount = 1 / torch.log2(torch.arange(10, device=self.device) + 2.0)
        ideal = discount.cumsum(0)
        gains = []
        with torch.no_grad():
            tower, bias = self._tower_items()
            served = self.memory.items(tower)
            for lo in range(0, len(users), batch):
                group = users[lo : lo + batch]
                starts, ends = seq.ptr[group], context_ends[group]
                e_u = self._encode_last(tower, seq, starts, ends, self.user_latest[group])
                scores = torch.addmm(bias, e_u, served.T)
                rows = np.repeat(np.arange(len(group)), ends - starts)
                cols = seq.items[ranges(starts, ends - starts)]
                scores[torch.as_tensor(rows), torch.as_tensor(cols)] = -torch.inf
                counts = truth_ptr[group + 1] - truth_ptr[group]
                relevant = torch.zeros_like(scores, dtype=torch.bool)
                relevant[
                    torch.as_tensor(np.repeat(np.arange(len(group)), counts)),
                    torch.as_tensor(truth_items[ranges(truth_ptr[group], counts)]),
                ] = True
                hits = relevant.gather(1, top_k(scores, 10)[1])
                best = ideal[torch.as_tensor(np.minimum(counts, 10) - 1, device=self.device)]
                gains.append(((hits * discount).sum(1) / best).cpu())
        self.user_tower.train()
        self.item_tower.train()
        return torch.cat(gains)

    # -- scoring ------------------------------------------------------------------------
    def _scorer(self) -> Callable[[np.ndarray, torch.Tensor | None], torch.Tensor]:
        """Scores e_u . e_i + b_i, with the item matrix built once for every block of users,
        written into `out` when given (a fresh block of scores each time paid its page
        faults: 8.6 s against 3.4 s for 100k users x 50k items in 128-user blocks)."""
        tower, bias = self._tower_items()
        served = self.memory.items(tower)
        return lambda users, out: torch.addmm(
            bias, self._user_matrix(users, tower), served.T, out=out
        )

    def _score(self, users: np.ndarray) -> torch.Tensor:
        return self._scorer()(users, None)

    def _item_similarity(self, item: int) -> torch.Tensor:
        """Cosine similarity of item vectors."""
        vectors = nn.functional.normalize(self._item_matrix()[0], dim=1)
        return vectors @ vectors[item]

    def history_vector(self, history: pd.DataFrame) -> torch.Tensor:
        """e_u of someone the model was not trained on, from their events (item_id, and
        optionally event_type and event_time; otherwise the rows' order is the time order)."""
        codes = self.item_index.get_indexer(history["item_id"])
        known = history[codes >= 0].reset_index(drop=True)
        seconds = (
            epoch_seconds(known["event_time"])
            if "event_time" in known
            else np.arange(len(known), dtype=np.int64)
        )
        return self.encode_history(codes[codes >= 0], event_type_codes(known), seconds)

    def encode_history(
        self, items: np.ndarray, event_types: np.ndarray, seconds: np.ndarray
    ) -> torch.Tensor:
        """e_u from parallel arrays of events: item rows (into `item_ids`), event type codes
        (`sequences.codes_of_event_types`) and epoch seconds; `history_vector` without a frame,
        for callers that answer one request at a time."""
        return self.encode_histories([(items, event_types, seconds)])[0]

    def encode_histories(
        self, histories: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]
    ) -> torch.Tensor:
        """e_u of each history (`encode_history`'s arrays), encoded together: one pass of
        the encoder for the requests a service answers at once (B x dim)."""
        if any(not len(items) for items, _, _ in histories):
            raise ValueError("none of the history's items is in the catalog the model knows")
        lengths = [len(items) for items, _, _ in histories]
        sequences = build_sequences(
            np.repeat(np.arange(len(histories), dtype=np.int64), lengths),
            *(
                np.concatenate([np.asarray(h[part], np.int64) for h in histories])
                for part in range(3)
            ),
            len(histories),
        )
        with torch.no_grad():
            vectors, _ = self._tower_items()
            return self._encode_last(
                vectors,
                sequences,
                sequences.ptr[:-1],
                sequences.ptr[1:],
                torch.zeros((len(histories), self.user_latest.shape[1])),
            )

    def recommend_for_history(self, history: pd.DataFrame, k: int = 10) -> pd.DataFrame:
        """Top-k for someone the model was not trained on, from a few events (see
        `history_vector`), with no retraining. Items in `history` are left out."""
        user = self.history_vector(history)
        seen = np.unique(self.item_index.get_indexer(history["item_id"]))
        seen = torch.as_tensor(seen[seen >= 0], device=self.device)
        with torch.no_grad():
            vectors, bias = self._item_matrix()
            scores = vectors @ user + bias
            scores[seen] = -torch.inf
            top = torch.topk(scores, min(k, len(self.item_ids) - len(seen)))
        return pd.DataFrame(
            {
                "item_id": self.item_ids[top.indices.cpu().numpy()],
                "rank": np.arange(1, len(top.indices) + 1),
                "score": top.values.cpu().numpy(),
            }
        )

    def search(
        self,
        query: np.ndarray,
        text: pd.DataFrame,
        user_id: str | None = None,
        k: int = 10,
        personalisation: float = 0.5,
        candidates: int = 100,
    ) -> pd.DataFrame:
        """Items for a search query (its MiniLM vector), among `text` (item_id, embedding):
        by text relevance, re-ranked by this model's e_u . e_i + b_i when `user_id` is known
        (see `models.search.search_items`). An unknown or absent user gets plain relevance."""
        interest = None
        if user_id is not None and user_id in self.user_index:
            with torch.no_grad():
                scores = self._score(np.array([self.user_index.get_loc(user_id)]))[0]
            interest = pd.Series(scores.cpu().numpy(), index=self.item_ids)
        return search_items(query, text, k, interest, personalisation, candidates)

    def new_item_vectors(self, items: pd.DataFrame) -> pd.DataFrame:
        """item_id, embedding for items not in training, from content alone (category, price
        bucket, MiniLM text, attributes; no id embedding, no bias): score them as e_u . e_i.
        Their memory part is the memory's content map of the same content."""
        content = self._content_inputs(items)
        tower, dev = self.item_tower, self.device
        with torch.no_grad():
            vectors = (
                tower.category(content.category.to(dev))
                + tower.price_bucket(content.price_bucket.to(dev))
                + tower.text(content.text.to(dev))
                + tower.attributes(
                    content.attribute_values.to(dev), content.attribute_offsets.to(dev)
                )
            )
            vectors = self.memory.items(vectors, self._content_design(content))
        return pd.DataFrame(
            {"item_id": items["item_id"].to_numpy(), "embedding": list(vectors.cpu().numpy())}
        )

    def recommend_new_items(
        self, user_ids: Sequence[str], new_items: pd.DataFrame, k: int = 10
    ) -> pd.DataFrame:
        """Top-k among `new_items` (not in training) for known users, scored from content."""
        vectors = torch.as_tensor(np.stack(self.new_item_vectors(new_items)["embedding"]))
        users = self.user_index.get_indexer(pd.Index(user_ids))
        users = users[users >= 0]
        with torch.no_grad():
            scores = self._user_matrix(users, self._tower_items()[0]).cpu() @ vectors.T
            top = torch.topk(scores, min(k, len(new_items)), dim=1)
        return pd.DataFrame(
            {
                "user_id": np.repeat(self.user_index[users].to_numpy(), top.indices.shape[1]),
                "item_id": new_items["item_id"].to_numpy()[top.indices.numpy().ravel()],
                "rank": np.tile(np.arange(1, top.indices.shape[1] + 1), len(users)),
                "score": top.values.numpy().ravel(),
            }
        )

    @property
    def version(self) -> str:
        """`embedding-<12 hex>`: a digest of the weights, so equal models share a version."""
        digest = hashlib.sha256()
        modules = (("item.", self.item_tower), ("user.", self.user_tower), ("memory.", self.memory))
        for prefix, module in modules:
            for name, tensor in sorted(module.state_dict().items()):
                digest.update((prefix + name).encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return f"{self.name}-{digest.hexdigest()[:12]}"

    def user_vectors(self, batch: int = 4096) -> pd.DataFrame:
        """user_id, embedding (float32 e_u) for every known user: score items as e_u . e_i + b_i."""
        users, parts = np.arange(len(self.user_index)), []
        with torch.no_grad():
            items = self._tower_items()[0]
            for lo in range(0, len(users), batch):
                parts.append(self._user_matrix(users[lo : lo + batch], items).cpu())
                if len(users) > batch:
                    self._say(f"user vectors: {min(lo + batch, len(users)):,}/{len(users):,}")
        return pd.DataFrame(
            {"user_id": self.user_index.to_numpy(), "embedding": list(torch.cat(parts).numpy())}
        )

    def use_user_vectors(self, vectors: pd.DataFrame) -> None:
        """Score the known users from these e_u (`user_vectors()`' frame, e.g. the table written
        for Feast) instead of encoding their histories again. Every known user needs one."""
        given = vectors.drop_duplicates("user_id").set_index("user_id")["embedding"]
        missing = self.user_index.difference(given.index)
        if len(missing):
            raise ValueError(f"{len(missing):,} known user(s) have no vector, e.g. {missing[0]!r}")
        matrix = np.stack(given.reindex(self.user_index).to_numpy()).astype(np.float32)
        dimensions = self._item_matrix()[0].shape[1]
        if matrix.shape[1] != dimensions:
            raise ValueError(
                f"the vectors have {matrix.shape[1]} dimensions; this model's have {dimensions}"
            )
        self._given_user_vectors = torch.as_tensor(matrix, device=self.device)

    def item_vectors(self) -> pd.DataFrame:
        """item_id, embedding (float32 e_i) and bias (b_i) for every catalog item."""
        with torch.no_grad():
            vectors, bias = self._item_matrix()
        return pd.DataFrame(
            {
                "item_id": self.item_ids,
                "embedding": list(vectors.cpu().numpy()),
                "bias": bias.cpu().numpy(),
            }
        )

    def memory_settings(self) -> dict[str, int | float]:
        """What validation chose for the long-term memory beside its form: its rank, repeat
        power and recency half-life (0: none)."""
        memory = self.memory
        return {
            "memory_rank": memory.rank,
            "memory_repeat_power": float(memory.repeat_power),
            "memory_half_life": float(memory.half_life),
        }

    # -- saving -------------------------------------------------------------------------
    def describe(self) -> dict:
        """The saved config and what training did, as written to config.json."""
        return {
            "format": FORMAT,
            "config": asdict(self.config),
            "loss_used": self.loss_used,
            "full_softmax_max_items": self.config.full_softmax_max_items,
            "best_epoch": self.best_epoch,
            "trained_share": self.trained_share,
            "best_validation_ndcg@10": self.best_validation_ndcg,
            "memory_form": self.memory_form,
            **self.memory_settings(),
            "trained_epochs_beat_start": self.best_epoch > 0,
            "history": self.history,
            "version": self.version,
            "warm_start_from": self.warm_start_from,
            "trained_until": str(self.trained_until),
            "serve_gap_bucket": self.serve_gap,
            "fit_seconds": round(self.fit_seconds, 2),
            "users": len(self.user_index),
            "items": len(self.item_ids),
        }

    def save(self, folder: Path) -> Path:
        """model.pt: state dicts, vocabularies, sequences and scalers (tensors, strings and
        numbers only: loadable with weights_only); config.json: the config and history."""
        folder.mkdir(parents=True, exist_ok=True)
        seq = self.sequences
        arrays = {
            "seq_ptr": seq.ptr,
            "seq_items": seq.items,
            "seq_types": seq.types,
            "seq_gaps": seq.gaps,
            "seq_repeats": seq.repeats,
            "seen_ptr": self._seen_ptr,
            "seen_items": self._seen_items,
        }
        for name, scaler in (("user", self.user_scaler), ("item", self.item_scaler)):
            if scaler is not None:
                arrays[f"{name}_scaler_mean"], arrays[f"{name}_scaler_std"] = (
                    scaler.mean,
                    scaler.std,
                )
        if self.text_axes is not None:
            arrays["text_mean"], arrays["text_axes"] = self.text_mean, self.text_axes
        described = json.loads(json.dumps(self.describe(), default=str))
        payload = {
            "describe": described,
            "item_tower": self.item_tower.state_dict(),
            "user_tower": self.user_tower.state_dict(),
            "memory": self.memory.state_dict(),
            "user_latest": self.user_latest,
            "arrays": {k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()},
            "vocabulary": {
                "items": self.item_ids.tolist(),
                "users": self.user_index.tolist(),
                "categories": self.categories.tolist(),
                "attributes": self.attribute_ids.tolist(),
                "n_price_buckets": self.n_price_buckets,
                "serve_gap": self.serve_gap,
            },
        }
        path, tmp = folder / "model.pt", folder / ".model.pt.tmp"
        torch.save(payload, tmp)
        tmp.replace(path)
        (folder / "config.json").write_text(json.dumps(described, indent=2))
        return path

    @staticmethod
    def load(path: Path, device: str = "auto") -> EmbeddingRecommender:
        """A model saved by `save`: its model.pt, or the folder `save` wrote it to. Files of
        an older format get a "retrain it" error."""
        path = Path(path)
        if path.is_dir():  # the folder, as `save` takes it (it was read as a bad file)
            path = path / "model.pt"
        retrain = (
            f"{path} was saved by another version of the model (this code reads format "
            f"{FORMAT}): retrain it (materialize embedding_model, or run `make demo`)"
        )
        try:
            payload = torch.load(path, weights_only=True, map_location="cpu")
            described = payload["describe"]
            if described.get("format") != FORMAT:
                raise ValueError(retrain)
            config = EmbeddingConfig.from_dict(described["config"])
        except FileNotFoundError:
            raise
        except Exception as error:
            raise ValueError(retrain) from error
        # the device outside the try: a wrong one is the caller's error, not the file's
        return _restore_model(payload, replace(config, device=device))


def _restore_model(payload: dict, config: EmbeddingConfig) -> EmbeddingRecommender:
    """The recommender a `save` payload describes."""
    model = EmbeddingRecommender(config, progress=False)
    described, vocab, arrays = payload["describe"], payload["vocabulary"], payload["arrays"]
    a = {k: v.numpy() for k, v in arrays.items()}
    model.item_ids = np.asarray(vocab["items"], dtype=object)
    model.item_index = pd.Index(model.item_ids)
    model.user_index = pd.Index(vocab["users"])
    model.categories = pd.Index(vocab["categories"])
    model.attribute_ids = pd.Index(vocab["attributes"])
    model.n_price_buckets = vocab["n_price_buckets"]
    model.serve_gap = vocab["serve_gap"]
    model.trained_until = pd.Timestamp(described["trained_until"])
    model.history, model.best_epoch = described["history"], described["best_epoch"]
    model.warm_start_from, model.loss_used = described["warm_start_from"], described["loss_used"]
    model.fit_seconds = described["fit_seconds"]
    model.best_validation_ndcg = described["best_validation_ndcg@10"]
    model.trained_share = described["trained_share"]
    model.sequences = Sequences(
        a["seq_ptr"], a["seq_items"], a["seq_types"], a["seq_gaps"], a["seq_repeats"]
    )
    model._seen_ptr, model._seen_items = a["seen_ptr"], a["seen_items"]
    model.user_scaler, model.item_scaler = (
        _Standardiser(a[f"{n}_scaler_mean"], a[f"{n}_scaler_std"])
        if f"{n}_scaler_mean" in a
        else None
        for n in ("user", "item")
    )
    model.text_mean, model.text_axes = a.get("text_mean"), a.get("text_axes")
    model.user_latest = payload["user_latest"]
    state = payload["item_tower"]
    content = _Content(
        state["category_of"],
        state["price_bucket_of"],
        state["text_of"],
        state["attribute_offsets"],
        state["attribute_values"],
    )
    model._build(content, state["features_of"].numpy())
    model.item_tower.load_state_dict(state)
    model.user_tower.load_state_dict(payload["user_tower"])
    memory = payload["memory"]
    model.memory = LongTermMemory(
        memory["user_side"], memory["item_side"], memory["content_side"]
    ).to(model.device)
    model.memory.load_state_dict(memory)
    # files of this format written before the form was recorded held EASE
    model.memory_form = described.get("memory_form", "ease" if model.memory.rank else "none")
    return model


class _SoftmaxStep:
    """One training step's loss: every position of a batch of sequences predicts its next
    token (and, with `future_targets`, the tokens after it, each weighted `future_weight`),
    against the whole catalog (`full`) or shared sampled negatives with the logQ correction
    (`sampled`). Repeats of an item already in the sequence are not targets."""

    def __init__(self, model: EmbeddingRecommender, mode: str) -> None:
        self.model, self.mode = model, mode
        cfg, n_items, dev = model.config, len(model.item_ids), model.device
        self.id_dropout = cfg.id_dropout if model.item_tower.has_content else 0.0
        # for the memory's recency and repeat weights
        self.previous, self.occurrence = previous_occurrences(model.sequences)
        counts = np.bincount(model.sequences.items, minlength=n_items).astype(np.float64)
        # Proposal: half uniform, half by frequency (hard negatives); logQ of each draw.
        q = 0.5 / n_items + 0.5 * counts / max(counts.sum(), 1)
        self.proposal = torch.as_tensor(q, dtype=torch.float32, device=dev)
        self.log_q = torch.log(self.proposal * cfg.negatives)
        horizon = [1.0] + [cfg.future_weight] * cfg.future_targets
        self.horizon = torch.as_tensor(horizon, device=dev)

    def _targets(
        self,
        starts: np.ndarray,
        last: np.ndarray,
        lengths: np.ndarray,
        width: int,
        rng: np.random.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B x width x H) items each input position learns: the next token, then
        `future_targets` tokens drawn from anywhere later in the user's sequence (before the
        validation token `last`); with their weights (0 for repeats and padding)."""
        seq, dev = self.model.sequences, self.model.device
        position = starts[:, None] + np.arange(width)[None, :]  # absolute token index
        real = np.arange(width)[None, :] < lengths[:, None]
        later = np.maximum(last[:, None] - position - 2, 0)  # tokens p+2 .. last-1
        draws = rng.random((*position.shape, len(self.horizon) - 1))
        offsets = np.concatenate(
            [np.ones((*position.shape, 1)), 2 + np.floor(draws * later[..., None])], axis=-1
        ).astype(np.int64)
        index = np.minimum(position[..., None] + offsets, len(seq.items) - 1)
        valid = real[..., None] & ~seq.repeats[index]
        valid[..., 1:] &= later[..., None] > 0
        weight = torch.as_tensor(valid, device=dev) * self.horizon
        return torch.as_tensor(seq.items[index], device=dev), weight

    def _memory(self, first: np.ndarray, starts: np.ndarray, inputs: Window) -> torch.Tensor:
        """The long-term memory after each input position (B x T x rank): the user's tokens
        before the window, then the window's, summed (`first`: where each user's tokens
        begin, as the repeat counts do)."""
        model, seq = self.model, self.model.sequences
        if not model.memory.rank:
            return torch.zeros(*inputs.items.shape, 0, device=model.device)
        width = inputs.items.shape[1]
        position = np.minimum(starts[:, None] + np.arange(width), len(seq.items) - 1)
        real = np.arange(width)[None, :] < inputs.lengths[:, None]
        previous = self.previous[position]
        # events between an item's previous token in the history and this one; -1: new
        since = np.where(real & (previous >= first[:, None]), position - 1 - previous, -1)
        return model.memory.history_sums(
            torch.as_tensor(inputs.items, device=model.device),
            torch.as_tensor(real, device=model.device),
            torch.as_tensor(since, device=model.device),
            torch.as_tensor(self.occurrence[position], device=model.device),
            model._memory_sums(seq, first, starts),
        )

    def _seen(
        self,
        users: np.ndarray,
        first: np.ndarray,
        last: np.ndarray,
        starts: np.ndarray,
        width: int,
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """B x width x C: whether the user of row b had met `candidates[c]` (None: every item
        of the catalog, in order) by input position t (the token at starts[b] + t or any
        before it)."""
        seq, device = self.model.sequences, self.model.device
        counts = np.maximum(last - first, 0)
        tokens = ranges(first, counts)
        rows = np.repeat(np.arange(len(users)), counts)
        new = ~seq.repeats[tokens]  # an item's first token: when the user met it
        never = len(seq.items)  # beyond every token index
        met = torch.full((len(users), len(self.model.item_ids)), never, dtype=torch.int32)
        where = (torch.as_tensor(rows[new]), torch.as_tensor(seq.items[tokens[new]]))
        met[where] = torch.as_tensor(tokens[new], dtype=torch.int32)
        met = met.to(device)
        if candidates is not None:
            met = met[:, candidates.to(device)]
        position = torch.as_tensor(starts[:, None] + np.arange(width)[None, :], device=device)
        return met[:, None, :] <= position[:, :, None]

    def __call__(self, users: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, float]:
        """The loss of a batch of `users` (mean over targets, by weight) and the targets' total
        weight."""
        model, cfg = self.model, self.model.config
        seq, n = model.sequences, len(model.item_ids)
        first, last = seq.ptr[users], model.held_out[users]  # last: the validation token
        ends = _random_ends(first, last, cfg.max_length, rng)  # targets are tokens < ends
        starts = np.maximum(first, ends - 1 - cfg.max_length)
        vectors, bias = model.item_tower(self.id_dropout)
        inputs = windows(seq, starts, ends - 1, n)
        next_gaps = windows(seq, starts + 1, ends, n).gaps
        hidden = model._user_states(
            vectors, seq, first, starts, inputs, next_gaps, model.user_latest[users]
        )
        hidden = model.memory.users(hidden, self._memory(first, starts, inputs))
        vectors = model.memory.items(vectors)
        width = inputs.items.shape[1]
        targets, weight = self._targets(starts, last, inputs.lengths, width, rng)
        at = weight.sum(-1) > 0
        h, targets, weight = hidden[at], targets[at], weight[at]
        if self.mode == "full":
            logits = torch.addmm(bias, h, vectors.T)
            if cfg.mask_seen:
                seen = self._seen(users, first, last, starts, width)
                logits = logits.masked_fill(seen[at], -torch.inf)
            loss = torch.logsumexp(logits, 1)[:, None] - logits.gather(1, targets)
            # a repeat (weight 0) may be masked as seen: its infinite loss must not count
            loss = loss.masked_fill(weight == 0, 0.0)
            return (loss * weight).sum() / weight.sum(), float(weight.sum())
        negatives = torch.multinomial(self.proposal, cfg.negatives, replacement=True)
        negative = h @ vectors[negatives].T + bias[negatives] - self.log_q[negatives]
        hit = negatives[None, :] == targets[:, :1]  # the next item drawn as a negative
        if cfg.mask_seen:
            hit = hit | self._seen(users, first, last, starts, width, negatives)[at]
        rest = torch.logsumexp(negative.masked_fill(hit, -torch.inf), 1)[:, None]
        positive = (h[:, None, :] * vectors[targets]).sum(-1) + bias[targets]
        positive = positive - self.log_q[targets]
        loss = torch.logaddexp(positive, rest) - positive
        return (loss * weight).sum() / weight.sum(), float(weight.sum())


def _kept_form(gains: dict[str, torch.Tensor]) -> tuple[str, list[str]]:
    """Of memory forms with their per-user validation gains (in `FORMS` order), the first
    unless a later one beats it by `VALIDATION_EVIDENCE` standard errors; and each
    comparison in words."""
    form, *others = gains
    leads = []
    for other in others:
        lead = _standard_errors(gains[other], gains[form])
        leads.append(f"{FORM_NAMES[other]} - {FORM_NAMES[form]}: {lead:.1f} standard errors")
        if lead > VALIDATION_EVIDENCE:
            form = other
    return form, leads


def _memory_forms(long_term: str) -> tuple[str, ...]:
    """The memory forms a `long_term` setting fits, the one kept without clear validation
    evidence first: auto, ridge then EASE."""
    return FORMS if long_term == "auto" else (long_term,)


def _mean(gains: torch.Tensor) -> float:
    """Mean validation NDCG@10 of per-user gains (0 for no validation users)."""
    return float(gains.mean()) if len(gains) else 0.0


def _clearly_better(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Whether per-user scores `ours` beat `theirs` (the same users) by `VALIDATION_EVIDENCE`
    standard errors of the mean paired difference."""
    return _standard_errors(ours, theirs) > VALIDATION_EVIDENCE


def _standard_errors(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """The mean paired difference of per-user scores `ours` - `theirs` (the same users), in
    standard errors of that mean (0 for fewer than two users or no spread)."""
    difference = (ours - theirs).double()
    if len(difference) < 2:
        return 0.0
    error = float(difference.std()) / len(difference) ** 0.5
    if error == 0:
        return 0.0 if float(difference.mean()) == 0 else float(np.sign(difference.mean())) * np.inf
    return float(difference.mean()) / error


def _random_ends(
    first: np.ndarray, last: np.ndarray, max_length: int, rng: np.random.Generator
) -> np.ndarray:
    """Exclusive end of each training window's targets: the validation token `last` for
    short sequences; for longer ones a random crop, so every event is a target over epochs."""
    lowest = np.minimum(first + 1 + max_length, last)
    return lowest + np.floor(rng.random(len(first)) * (last - lowest + 1)).astype(np.int64)


def _columns(lengths: np.ndarray) -> np.ndarray:
    return ranges(np.zeros(len(lengths), np.int64), lengths)


def _scaled(scaler: _Standardiser | None, frame: pd.DataFrame, columns: tuple) -> np.ndarray:
    if scaler is None:
        return np.zeros((len(frame), 1), np.float32)
    return scaler(frame[list(columns)])


def _category(items: pd.DataFrame) -> pd.Series:
    if "category" not in items:
        return pd.Series(UNKNOWN_CATEGORY, index=items.index)
    return items["category"].fillna(UNKNOWN_CATEGORY)


def _attribute_lists(items: pd.DataFrame) -> list:
    """Each item's attribute ids (brand, category path, ...) as a list; empty without any."""
    if "attributes" not in items:
        return [()] * len(items)
    return [() if not isinstance(a, (list, tuple, np.ndarray)) else a for a in items["attributes"]]


def _text_matrix(items: pd.DataFrame) -> np.ndarray | None:
    """The items' MiniLM vectors as a matrix (zeros where missing), or None without text."""
    if "text_embedding" not in items or not items["text_embedding"].notna().any():
        return None
    has = items["text_embedding"].notna().to_numpy()
    text = np.zeros((len(items), len(items["text_embedding"][has].iloc[0])), np.float32)
    text[has] = np.stack(items["text_embedding"][has].to_numpy())
    return text


def _principal_axes(vectors: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and first `components` principal axes of `vectors`, so the item tower multiplies
    64 numbers per item instead of 384."""
    mean = vectors.mean(0)
    sample = vectors[:: max(1, len(vectors) // 20_000)] - mean
    _, _, axes = np.linalg.svd(sample, full_matrices=False)
    return mean, axes[:components]
