import argparse
import copy
import dataclasses
import functools
import json
import re
import time

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from models.__main__ import _parser, main
from models.base import top_k
from models.baselines import (
    ALSRecommender,
    EASERecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    RecentPopularityRecommender,
    ease_weights,
)
from models.compare import (
    comparison_table,
    default_models,
    load_interactions,
    load_items,
)
from models.embedding import (
    EmbeddingConfig,
    EmbeddingRecommender,
    _clearly_better,
    _kept_form,
    _mean,
    _SoftmaxStep,
)
from models.memory import FORMS, fit_memory
from models.metrics import (
    evaluate,
    evaluate_by_segment,
    hit_rate_at_k,
    intra_list_diversity,
    long_tail_items,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    novelty,
    precision_at_k,
    recall_at_k,
)
from models.rerank import mmr, prefer_long_tail
from models.sequences import (
    EVENT_TYPES,
    Window,
    build_sequences,
    codes_of_event_types,
    epoch_seconds,
    gap_buckets,
    held_tokens,
    split_for_validation,
    validation_tokens,
    validation_truth,
    windows,
)
from models.split import make_split, temporal_holdout
from models.towers import EncoderLayer, FastDropout


def test_metrics_on_a_hand_example():
    truth = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "z"]})
    recs = pd.DataFrame(
        {"user_id": ["a", "a", "b", "b"], "item_id": ["x", "q", "q", "r"], "rank": [1, 2, 1, 2]}
    )
    assert precision_at_k(truth, recs, 2) == pytest.approx((1 / 2 + 0) / 2)
    assert recall_at_k(truth, recs, 2) == pytest.approx((1 / 2 + 0) / 2)
    idcg_a = 1 + 1 / np.log2(3)
    assert ndcg_at_k(truth, recs, 2) == pytest.approx((1 / idcg_a + 0) / 2)


def test_ranking_and_beyond_accuracy_metrics_on_a_hand_example():
    truth = pd.DataFrame({"user_id": ["u1"] * 3 + ["u2"], "item_id": ["a", "b", "c", "d"]})
    recs = pd.DataFrame(
        {
            "user_id": ["u1"] * 3 + ["u2"] * 2,
            "item_id": ["a", "x", "b", "y", "z"],
            "rank": [1, 2, 3, 1, 2],
        }
    )
    assert precision_at_k(truth, recs, 3) == pytest.approx((2 / 3 + 0) / 2)
    assert map_at_k(truth, recs, 3) == pytest.approx(((1 + 2 / 3) / 3 + 0) / 2)
    assert hit_rate_at_k(truth, recs, 3) == 0.5 and mrr_at_k(truth, recs, 3) == 0.5
    assert mrr_at_k(truth, recs.assign(rank=[2, 1, 3, 1, 2]), 3) == pytest.approx(0.25)
    categories = pd.Series({"a": "A", "x": "A", "b": "B", "y": "B", "z": "C"})
    # u1: pairs (a,x) same, (a,b) and (x,b) differ -> 2/3; u2: 1.
    assert intra_list_diversity(recs, categories, 3) == pytest.approx((2 / 3 + 1) / 2)
    popularity = pd.Series({"a": 0.5, "b": 0.25, "x": 0.125, "y": 0.125})
    assert set(long_tail_items(popularity, head_share=0.7)) == {"x", "y"}
    # z was never seen in training: as rare as the rarest item (0.125 -> 3 bits).
    assert novelty(recs, popularity, 3) == pytest.approx((1 + 3 + 2 + 3 + 3) / 5)
    by_segment = evaluate_by_segment(
        truth, recs, pd.Series({"u1": "warm", "u2": "cold"}), 10, 3, popularity, categories
    )
    assert by_segment["warm"]["hr@3"] == 1.0 and by_segment["cold"]["hr@3"] == 0.0
    assert by_segment["all"]["users"] == 2 and by_segment["all"]["long_tail@3"] == pytest.approx(
        2 / 5
    )  # y and z


def test_no_interactions_give_every_user_an_empty_sequence():
    none = np.zeros(0, np.int64)
    seq = build_sequences(none, none, none, none, 3)
    assert seq.ptr.tolist() == [0, 0, 0, 0]
    assert len(seq.items) == len(seq.gaps) == len(seq.repeats) == len(seq.times) == 0
    assert seq.repeats.dtype == bool


def test_temporal_holdout_keeps_only_new_items_of_known_users():
    t = pd.to_datetime(
        ["2026-09-01", "2026-09-02", "2026-09-05", "2026-09-05", "2026-09-05"], utc=True
    )
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "a", "new"],
            "item_id": ["x", "y", "x", "z", "x"],
            "event_type": "view",
            "event_time": t + pd.Timedelta(hours=1),
        }
    )
    split = temporal_holdout(frame, test_days=2)
    assert split.cutoff == pd.Timestamp("2026-09-04", tz="UTC")
    assert split.truth.to_dict("records") == [{"user_id": "a", "item_id": "z"}]


def test_window_validation_holds_out_what_the_temporal_test_would():
    # The same events as above: the window's cut is the temporal split's, at midnight.
    t = pd.to_datetime(
        ["2026-09-01", "2026-09-02", "2026-09-05", "2026-09-05", "2026-09-05", "2026-09-01"],
        utc=True,
    ) + pd.Timedelta(hours=1)
    user = np.array([0, 0, 0, 0, 1, 1])
    item = np.array([0, 1, 0, 2, 0, 3])  # user 0 sees x, y, then x again and z; user 1: w, x
    seconds = t.astype("int64").to_numpy() // 10**9
    seq = build_sequences(user, item, np.zeros(6, np.int64), seconds, 2)
    held = validation_tokens(seq, 0, "window", window_days=2)
    assert held.tolist() == [2, 5]  # each user's first token on or after 09-04 00:00
    ptr, items = validation_truth(seq, held, "window")
    assert items[ptr[0] : ptr[1]].tolist() == [2]  # x again is not new: only z is asked for
    assert items[ptr[1] : ptr[2]].tolist() == [0]
    assert held_tokens(seq, held, "window").tolist() == [2, 3, 5]
    # Timestamps in any unit give the same seconds (a Parquet column is often in us or ms).
    for unit in ("ns", "us", "ms", "s"):
        assert (epoch_seconds(pd.Series(t).astype(f"datetime64[{unit}, UTC]")) == seconds).all()
    nothing_late = validation_tokens(seq, 0, "window", window_days=0.5)  # from 09-05 12:00
    assert nothing_late.tolist() == seq.ptr[1:].tolist()  # nothing held out: all train
    assert held_tokens(seq, validation_tokens(seq, 0, "next"), "next").tolist() == [3, 5]


def test_random_validation_holds_out_a_share_of_each_history_as_msr_does():
    # Ten users of 3..30 tokens over 40 items, each item once per user; user 9 ends by
    # going back to their first item.
    rng = np.random.default_rng(0)
    users, items = [], []
    for user, length in enumerate(range(3, 31, 3)):
        users += [user] * length
        items += rng.choice(40, length, replace=False).tolist()
    users, items = np.array([*users, 9]), np.array([*items, items[-30]])
    seconds = np.arange(len(users)) * 3600
    seq = build_sequences(users, items, np.zeros(len(users), np.int64), seconds, 10)
    split = split_for_validation(seq, "random", 0, seed=1, share=0.2)
    held = [max(1, round(0.2 * n)) for n in seq.lengths]
    assert (seq.lengths - split.train.lengths).tolist() == held and split.held == sum(held)
    assert (split.train.lengths >= 2).all() and (split.held_out == split.train.ptr[1:]).all()
    ptr, truth = split.truth
    for user in range(10):
        context = set(split.train.user_items(user).tolist())
        asked = truth[ptr[user] : ptr[user + 1]].tolist()
        # the held items: what the context lacks, each once; context + held = the history
        assert asked and not context & set(asked) and len(set(asked)) == len(asked)
        assert context | set(asked) == set(seq.user_items(user).tolist())
    # Repeats are those of what remains (user 9's return, when both visits stayed).
    for user in range(10):
        kept = split.train.user_items(user)
        repeats = split.train.repeats[split.train.ptr[user] : split.train.ptr[user + 1]]
        assert repeats.tolist() == [item in kept[:at] for at, item in enumerate(kept)]
    # Gaps are those of what remains: a user's first remaining token starts at gap 0.
    assert (split.train.gaps[split.train.ptr[:-1]] == 0).all()
    again = split_for_validation(seq, "random", 0, seed=1, share=0.2)
    assert np.array_equal(again.train.items, split.train.items)  # the seed decides
    with pytest.raises(ValueError, match="validation must be one of"):
        split_for_validation(seq, "sometimes", 0)


def test_sequences_without_some_tokens_have_the_gaps_and_repeats_of_what_remains():
    # One user: x at 0 h, y at 1 h, z at 2 h, x again at 3 h; a second user: w.
    hours = np.array([0, 1, 2, 3, 0]) * 3600
    seq = build_sequences(
        np.array([0, 0, 0, 0, 1]), np.array([0, 1, 2, 0, 3]), np.zeros(5, np.int64), hours, 2
    )
    assert seq.repeats.tolist() == [False, False, False, True, False]
    first_gone = seq.without(np.array([0]))  # x's first visit held: its return is new
    assert first_gone.items.tolist() == [1, 2, 0, 3] and first_gone.ptr.tolist() == [0, 3, 4]
    assert first_gone.repeats.tolist() == [False] * 4
    hour = gap_buckets(np.array([3600.0]))[0]
    assert first_gone.gaps.tolist() == [0, hour, hour, 0]
    middle_gone = seq.without(np.array([1]))  # y held: z follows x after 2 h
    assert middle_gone.repeats.tolist() == [False, False, True, False]
    assert middle_gone.gaps[1] == gap_buckets(np.array([7200.0]))[0] != seq.gaps[1]


def _toy_config(**values) -> EmbeddingConfig:
    """The model's config for the toy worlds here (a few hundred users): 10 steps make an
    epoch (the product's minimum, 50, is for real catalogs) and sequences are read up to 32
    events, as long as the worlds' own; everything else as given or the default."""
    return EmbeddingConfig(**{"min_steps_per_epoch": 10, "max_length": 32, **values})


def _taste_world(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users who each like one of 8 categories; popularity alone cannot tell them apart."""
    interactions, items = _taste_world_once(seed)
    return interactions.copy(), items.copy()


@functools.cache
def _taste_world_once(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    items = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(160)],
            "category": [f"c{k % 8}" for k in range(160)],
            "price_bucket": 0,
        }
    )
    rows = []  # (user, item, day, hour)
    for u in range(400):
        pool = items.index[items["category"] == f"c{u % 8}"].to_numpy()
        for d in range(12):
            for item in rng.choice(pool, 2, replace=False):
                rows.append((u, item, d, int(rng.integers(0, 23))))
    user, item, day, hour = np.array(rows).T
    interactions = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in user],
            "item_id": items["item_id"].to_numpy()[item],
            "event_type": "view",
            "event_time": pd.Timestamp("2026-09-01", tz="UTC")
            + pd.to_timedelta(day * 24 + hour, unit="h"),
        }
    )
    return interactions, items


def test_embedding_model_learns_taste_and_beats_popularity():
    interactions, items = _taste_world()
    split = temporal_holdout(interactions, 3)
    users = split.truth["user_id"].unique()
    pop = PopularityRecommender().fit(split.train, items)
    model = EmbeddingRecommender(_toy_config(dim=16, epochs=15), progress=False).fit(
        split.train, items
    )
    ours = evaluate(split.truth, model.recommend(users, 10), len(items))
    theirs = evaluate(split.truth, pop.recommend(users, 10), len(items))
    assert ours["ndcg@10"] > 2 * theirs["ndcg@10"]
    recs = model.recommend(["u0"], 10)
    seen = set(split.train.loc[split.train["user_id"] == "u0", "item_id"])
    assert not seen & set(recs["item_id"])  # already-seen items are filtered
    similar = model.similar_items("i0", 5)
    assert len(similar) == 5 and "i0" not in set(similar["item_id"])


def test_training_is_seeded_and_saved_without_pickles(tmp_path):
    interactions, items = _taste_world(1)
    cfg = _toy_config(dim=8, epochs=2)
    a = (
        EmbeddingRecommender(cfg, progress=False)
        .fit(interactions, items)
        .recommend(["u1", "u2"], 5)
    )
    model = EmbeddingRecommender(cfg, progress=False).fit(interactions, items)
    path = model.save(tmp_path / "m")
    # A state dict, vocabularies and the config: loadable without unpickling any object.
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {
        "describe",
        "item_tower",
        "user_tower",
        "memory",
        "user_latest",
        "arrays",
        "vocabulary",
    }
    assert payload["describe"]["config"]["dim"] == 8
    assert payload["vocabulary"]["items"] == items["item_id"].tolist()
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["loss_used"] == "full" and saved["version"] == model.version
    assert saved["memory_form"] == model.memory_form and model.memory_form in FORMS
    loaded = EmbeddingRecommender.load(path, "cpu")
    assert loaded.version == model.version and loaded.memory_form == model.memory_form
    # what validation chose for the memory is saved and read back with it
    assert (
        loaded.memory_settings()
        == model.memory_settings()
        == {k: saved[k] for k in ("memory_rank", "memory_repeat_power", "memory_half_life")}
    )
    assert EmbeddingRecommender.load(tmp_path / "m", "cpu").version == model.version  # folder
    b = model.recommend(["u1", "u2"], 5)
    pd.testing.assert_frame_equal(b, loaded.recommend(["u1", "u2"], 5))
    # Seeded: the same training twice gives the same ranking (scores equal up to the order
    # of float sums in multithreaded gradient kernels).
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=2e-3, atol=1e-3)
    history = pd.DataFrame({"item_id": ["i3", "i11"], "event_type": "view"})
    pd.testing.assert_frame_equal(
        model.recommend_for_history(history), loaded.recommend_for_history(history)
    )
    # A model saved by older code (a whole pickled object) is refused: retrain it.
    torch.save({"not": "a model", "artifact_format": 3}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="retrain it"):
        EmbeddingRecommender.load(tmp_path / "old.pt", "cpu")
    (tmp_path / "junk.pt").write_bytes(b"pickled junk")
    with pytest.raises(ValueError, match="retrain it"):
        EmbeddingRecommender.load(tmp_path / "junk.pt", "cpu")
    # A wrong device is the caller's mistake, not the file's: no "retrain it".
    with pytest.raises(ValueError, match=r"^EmbeddingConfig: device must be .* not 'gpu'$"):
        EmbeddingRecommender.load(path, "gpu")


def test_a_config_is_checked_when_it_is_made_naming_every_wrong_field():
    default = EmbeddingConfig()
    saved = json.loads(json.dumps(dataclasses.asdict(_toy_config(item_feature_columns=("a",)))))
    assert EmbeddingConfig.from_dict(saved) == _toy_config(item_feature_columns=("a",))
    assert EmbeddingConfig.from_dict(dataclasses.asdict(default)) == default
    with pytest.raises(ValueError) as error:
        EmbeddingConfig(dropout=1.5, heads=0, loss="softer", device="gpu", seed=-1, epochs=2.5)
    assert str(error.value) == (
        "EmbeddingConfig: heads must be at least 1, not 0; dropout must be in [0, 1), not 1.5; "
        "epochs must be an integer, not 2.5; loss must be one of auto, full, sampled, not "
        "'softer'; seed must be at least 0, not -1; device must be auto, cpu, cuda, cuda:N or "
        "mps, not 'gpu'"
    )
    wrong = {
        "dim": (0, "dim must be at least 1, not 0"),
        "max_length": (0, "max_length must be at least 1"),
        "encoder": ("lstm", "encoder must be one of attention, hybrid, pooled, not 'lstm'"),
        "layers": (0, "layers must be at least 1"),
        "patience": (0, "patience must be at least 1"),
        "train_seconds": (-1.0, "train_seconds must be at least 0"),
        "batch_size": (0, "batch_size must be at least 1"),
        "min_steps_per_epoch": (0, "min_steps_per_epoch must be at least 1"),
        "negatives": (0, "negatives must be at least 1"),
        "future_targets": (-1, "future_targets must be at least 0"),
        "future_weight": (-0.5, "future_weight must be at least 0"),
        "long_term": ("lstm", "long_term must be one of auto, ridge, ease, none, not 'lstm'"),
        "long_term_rank": (-1, "long_term_rank must be at least 0"),
        "ease_l2": (0.0, "ease_l2 must be above 0, not 0.0"),
        "long_term_refit_share": (1.5, "long_term_refit_share must be in [0, 1], not 1.5"),
        "validation": ("later", "validation must be one of next, random, window"),
        "validation_days": (0.0, "validation_days must be above 0"),
        "validation_share": (1.0, "validation_share must be in [0, 1), not 1.0"),
        "learning_rate": (float("nan"), "learning_rate must be above 0, not nan"),
        "weight_decay": (-1e-4, "weight_decay must be at least 0"),
        "text_components": (0, "text_components must be at least 1"),
        "id_dropout": (1.0, "id_dropout must be in [0, 1), not 1.0"),
        "validation_users": (0, "validation_users must be at least 1"),
        "user_feature_columns": ("views", "user_feature_columns must be a tuple of column"),
    }
    for name, (value, message) in wrong.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            EmbeddingConfig(**{name: value})
    # The attention layers split dim over the heads, whatever the encoder.
    with pytest.raises(ValueError, match=re.escape("dim must be divisible by heads (3), not 64")):
        EmbeddingConfig(heads=3, encoder="pooled")
    for device in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert EmbeddingConfig(device=device).device == device
    assert EmbeddingConfig(long_term_refit_share=1.0, validation="window", epochs=0).epochs == 0


def test_a_trained_epoch_replaces_the_start_only_beyond_validation_noise():
    rng = np.random.default_rng(0)
    start = torch.as_tensor(rng.random(900))
    noisy = start + torch.as_tensor(rng.normal(0.005, 0.3, 900))  # +0.005, error 0.01
    assert not _clearly_better(noisy, start)
    assert _clearly_better(start + torch.as_tensor(rng.normal(0.05, 0.3, 900)), start)
    assert not _clearly_better(start[:1] + 1, start[:1])  # one user is no evidence


def _two_chain_world(users: int = 300, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user walks two chains of items (A: a0 -> a1 -> ..., B: b0 -> b1 -> ...) in
    sessions that stay on one chain; the next item continues the chain of the newest event.
    The set of items seen names two candidates (the next of A and of B): only the order tells
    which one comes next."""
    rng = np.random.default_rng(seed)
    chain = 40
    items = pd.DataFrame(
        {"item_id": [f"a{k}" for k in range(chain)] + [f"b{k}" for k in range(chain)]}
    )
    rows = []
    for u in range(users):
        position = {"a": int(rng.integers(chain)), "b": int(rng.integers(chain))}
        t = 0
        for session in range(int(rng.integers(3, 6))):
            name = "ab"[session % 2] if rng.random() < 0.5 else "ba"[session % 2]
            for _ in range(int(rng.integers(2, 4))):
                rows.append((f"u{u}", f"{name}{position[name] % chain}", t))
                position[name] += 1
                t += 1
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "seconds"])
    frame["event_time"] = pd.to_datetime(frame.pop("seconds"), unit="h", utc=True)
    return frame, items


def test_the_sequence_encoder_reads_order_that_a_pooled_tower_cannot():
    interactions, items = _two_chain_world()
    split = make_split(interactions, "loo")
    scores = {}
    for encoder in ("attention", "pooled"):  # the towers alone: a decayed memory reads order
        config = _toy_config(
            dim=32,
            epochs=40,
            patience=8,
            encoder=encoder,
            dropout=0.1,
            learning_rate=0.005,
            long_term="none",
        )
        model = EmbeddingRecommender(config, progress=False).fit(split.train, items)
        recs = model.recommend(split.truth["user_id"].unique(), 10)
        scores[encoder] = ndcg_at_k(split.truth, recs, 10)
        assert model.best_epoch > 0  # training beat the random start
    assert scores["attention"] > 0.8
    assert scores["attention"] > scores["pooled"] + 0.15


def test_the_long_term_memory_starts_from_ease_and_is_served_as_dot_products():
    interactions, items = _taste_world()
    split = temporal_holdout(interactions, 3)
    users = split.truth["user_id"].unique()

    def start(**config) -> EmbeddingRecommender:  # epoch 0 only: the start itself
        config = EmbeddingConfig(dim=16, epochs=0, **config)
        return EmbeddingRecommender(config, progress=False).fit(split.train, items)

    def ndcg(model) -> float:
        return evaluate(split.truth, model.recommend(users, 10), len(items))["ndcg@10"]

    with_memory, without = start(long_term_rank=32), start(long_term="none")
    # the rank fit or half of it, by validation (`NARROWER_RANK_SHARE`)
    assert with_memory.memory.rank in (16, 32)
    assert without.memory.rank == 0
    ease = ndcg(EASERecommender(progress=False).fit(split.train, items))
    assert ndcg(with_memory) > 0.9 * ease and ndcg(with_memory) > 2 * ndcg(without)
    # Past long_term_max_items the dense solve holds that many items, those with the most
    # users; the others' factors come from content (their category here), none on the user side.
    half = start(long_term_rank=32, long_term_max_items=len(items) // 2)
    held = half.memory.user_side.abs().sum(1).numpy() > 0
    assert held.sum() == len(items) // 2 and half.memory_form != "none"
    users_of = split.train.groupby("item_id")["user_id"].nunique().reindex(half.item_ids)
    assert users_of[held].min() >= users_of[~held].max()
    assert (half.memory.item_side[torch.as_tensor(~held)].abs().sum(1) > 0).all()
    assert ndcg(half) > 2 * ndcg(without)
    # Feast's vectors alone reproduce the model's scores: e_u . e_i + b_i.
    user = with_memory.user_vectors().set_index("user_id").loc[users[:5], "embedding"]
    item = with_memory.item_vectors()
    assert len(item["embedding"][0]) == 16 + with_memory.memory.rank
    served = np.stack(user) @ np.stack(item["embedding"]).T + item["bias"].to_numpy()
    own = with_memory._score(with_memory.user_index.get_indexer(users[:5])).detach().numpy()
    np.testing.assert_allclose(served, own, rtol=1e-4, atol=1e-4)


def _return_visit_world(users: int = 400, seed: int = 0) -> pd.DataFrame:
    """Each user has a main category, whose items they come back to again and again, and a
    side category, whose items they opened once each more recently, as many of each; their
    last two events are new items of the main one. How often an item came back tells the
    two apart, and recency points the wrong way."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(users):
        main, side = rng.choice(12, 2, replace=False)
        picked = {c: rng.choice(20, 8, replace=False) for c in (main, side)}
        events = [(main, k) for _ in range(3) for k in rng.permutation(picked[main][:6])]
        events += [(side, k) for k in picked[side][:6]]
        events += [(main, k) for k in picked[main][6:]]
        rows += [(f"u{user}", f"c{c}-i{k}", t) for t, (c, k) in enumerate(events)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "t"])
    return frame.assign(event_time=pd.Timestamp("2026-01-01") + pd.to_timedelta(frame.t, "h"))


def test_items_a_user_comes_back_to_weigh_more_where_validation_finds_it(monkeypatch):
    import models.embedding as embedding

    interactions = _return_visit_world().drop(columns="t")
    items = pd.DataFrame({"item_id": sorted(interactions["item_id"].unique())})
    split = make_split(interactions, "loo")

    def start() -> EmbeddingRecommender:  # the memory alone
        config = _toy_config(dim=8, epochs=0, long_term="ease", long_term_rank=32)
        return EmbeddingRecommender(config, progress=False).fit(split.train, items)

    def ndcg(model) -> float:
        users = split.truth["user_id"].unique()
        return evaluate(split.truth, model.recommend(users, 10), len(items))["ndcg@10"]

    weighted = start()
    assert float(weighted.memory.repeat_power) > 0
    monkeypatch.setattr(embedding, "REPEAT_POWERS", (0.0,))  # each item once
    once = start()
    assert float(once.memory.repeat_power) == 0
    assert ndcg(weighted) > 1.3 * ndcg(once)
    # where no item comes back, no power is tried
    no_returns = split.train.drop_duplicates(["user_id", "item_id"])
    monkeypatch.undo()
    config = _toy_config(dim=8, epochs=0, long_term="ease", long_term_rank=32)
    said: list[str] = []
    model = EmbeddingRecommender(config, progress=False)
    model._say = said.append
    model.fit(no_returns, items)
    assert float(model.memory.repeat_power) == 0
    assert not any("repeat power 0:" in line for line in said)


def test_a_truncated_memory_is_the_best_factorisation_of_its_rank_with_the_same_settings():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 300, 3_000), rng.integers(0, 200, 3_000)
    memory = fit_memory(users, items, 300, 200, 16, 10.0, lambda _: None)["ease"]
    memory.half_life.fill_(8.0)
    memory.repeat_power.fill_(0.5)
    memory.content_side = torch.randn(5, 16)
    narrow = memory.truncated(4)
    assert narrow.rank == 4 and narrow.content_side.shape == (5, 4)
    torch.testing.assert_close(narrow.user_side, memory.user_side[:, :4])
    torch.testing.assert_close(narrow.content_side, memory.content_side[:, :4])
    assert float(narrow.half_life) == 8.0 and float(narrow.repeat_power) == 0.5
    # the first factors carry the largest singular values: the closest rank-4 product
    full = memory.user_side @ memory.item_side.T
    first = full - narrow.user_side @ narrow.item_side.T
    last = full - memory.user_side[:, -4:] @ memory.item_side[:, -4:].T
    assert torch.linalg.norm(first) < torch.linalg.norm(last)


def test_the_memory_is_the_same_whatever_drew_random_numbers_before():
    """The memory's randomised SVD has its own seeded generator: a refit after training
    (which draws dropout masks and negatives) factorises as one before it."""
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 300, 3_000), rng.integers(0, 200, 3_000)

    def memory(seed: int = 0) -> torch.Tensor:
        return fit_memory(users, items, 300, 200, 16, 10.0, lambda _: None, seed)["ease"].item_side

    first = memory()
    torch.rand(1_000)  # as training would
    torch.testing.assert_close(memory(), first, rtol=0, atol=0)
    assert not torch.equal(memory(seed=1), first)


def test_validation_keeps_the_share_of_a_trained_epoch_that_scores_best():
    interactions, items = _taste_world()
    model = EmbeddingRecommender(
        EmbeddingConfig(dim=16, epochs=0, long_term_rank=32, validation="window"),
        progress=False,
    ).fit(temporal_holdout(interactions, 3).train, items)
    validation, start = model._validation_users(), model._state_copy()
    assert len(validation) > 50
    # a "trained" epoch whose blend overshoots: encoder opened wide, noise in the bias
    with torch.no_grad():
        model.memory.gate.fill_(30.0)
        model.item_tower.item_bias.weight.normal_(0.0, 30.0)
    blend = [model.memory.gate, model.memory.log_scale, model.item_tower.item_bias.weight]
    trained = [p.detach().clone() for p in blend]
    whole = _mean(model._validation_gains(validation))
    gains, share = model._blend_shares(validation, start)
    state = model._shared_state(start, share)
    assert share < 1.0 and _mean(gains) > whole + 0.05
    assert float(state["memory"]["gate"]) == pytest.approx(30.0 * share)
    bias = state["item"]["item_bias.weight"]
    torch.testing.assert_close(bias, trained[2] * share)
    # the model itself is left as trained: training goes on from there
    for parameter, was in zip(blend, trained, strict=True):
        torch.testing.assert_close(parameter.detach(), was)
    # without a memory a share only rescales the scores: the whole is kept
    plain = EmbeddingRecommender(
        EmbeddingConfig(dim=16, epochs=0, long_term="none", validation="window"),
        progress=False,
    ).fit(temporal_holdout(interactions, 3).train, items)
    assert plain._blend_shares(plain._validation_users(), plain._state_copy())[1] == 1.0


def _check_seen_mask(model: EmbeddingRecommender, candidates: torch.Tensor | None) -> None:
    """The seen mask of the first users' windows (after one token) against a hand count
    (`candidates` None: the whole catalog in order)."""
    seq, users = model.sequences, np.arange(3)
    first, last = seq.ptr[users], model.held_out[users]
    starts, width = first + 1, int((last - first - 1).max())  # windows after one token
    seen = _SoftmaxStep(model, "full")._seen(users, first, last, starts, width, candidates)
    if candidates is None:
        candidates = torch.arange(len(model.item_ids))
    for row, user in enumerate(users):
        for t in range(last[user] - starts[row]):
            met = set(seq.items[first[row] : starts[row] + t + 1])
            found = set(candidates.numpy()[np.flatnonzero(seen[row, t].numpy())])
            assert found == met & set(candidates.numpy())


def test_training_reads_the_memory_each_position_is_served():
    """The running memory of a training window (after some earlier tokens) is, at every
    position, the whole-history sum that serving computes for that prefix: each item once,
    weighted by the events after its last token and by its number of tokens (items come back
    in this world)."""
    interactions, items = _taste_world()
    model = EmbeddingRecommender(
        _toy_config(dim=8, epochs=0, long_term="ease", long_term_rank=16), progress=False
    ).fit(interactions, items)
    seq, users = model.sequences, np.arange(6)
    first, ends = seq.ptr[users], model.held_out[users]
    assert seq.repeats[first[0] : ends[-1]].sum() > 10
    assert (ends - first > 3).all()  # every window starts after three of its user's tokens
    starts = first + 3
    inputs = windows(seq, starts, ends, len(model.item_ids))
    for half_life, power in ((0.0, 0.0), (3.0, 0.0), (0.0, 0.5), (3.0, 1.0)):
        model.memory.half_life.fill_(half_life)
        model.memory.repeat_power.fill_(power)
        _check_running_memory(model, first, starts, inputs)


def _check_running_memory(
    model: EmbeddingRecommender, first: np.ndarray, starts: np.ndarray, inputs: Window
) -> None:
    """Training's memory at each position of `inputs` against serving's and a hand sum."""
    seq, half_life = model.sequences, float(model.memory.half_life)
    power = float(model.memory.repeat_power)
    running = _SoftmaxStep(model, "full")._memory(first, starts, inputs)
    side = model.memory.user_side
    for row in range(len(first)):
        for t in range(int(inputs.lengths[row])):
            end = starts[row] + t + 1
            served = model._memory_sums(seq, first[row : row + 1], np.array([end]))[0]
            torch.testing.assert_close(running[row, t], served, rtol=1e-4, atol=1e-5)
            history = list(seq.items[first[row] : end])  # by hand: each item at its last token
            by_hand = sum(
                side[i]
                * 0.5 ** ((history[::-1].index(i)) / half_life if half_life else 0)
                * history.count(i) ** power
                for i in set(history)
            )
            torch.testing.assert_close(served, by_hand, rtol=1e-4, atol=1e-5)


def test_the_loss_leaves_out_what_each_position_has_already_met():
    interactions, items = _two_chain_world(users=20)
    model = EmbeddingRecommender(_toy_config(dim=8, epochs=0), progress=False).fit(
        interactions, items
    )
    _check_seen_mask(model, torch.arange(len(model.item_ids)))
    # users who meet items again (repeats), and repeats among the later targets (weight 0)
    interactions, items = _taste_world()
    model = EmbeddingRecommender(
        _toy_config(dim=8, epochs=0, future_targets=2), progress=False
    ).fit(interactions, items)
    assert model.sequences.repeats[: model.sequences.ptr[3]].any()
    _check_seen_mask(model, torch.arange(len(model.item_ids)))
    _check_seen_mask(model, torch.as_tensor([5, 0, 17, 5]))  # sampled negatives, any order
    _check_seen_mask(model, None)
    # as many negatives as the catalog has items, shuffled: not the catalog in order
    _check_seen_mask(
        model, torch.randperm(len(model.item_ids), generator=torch.Generator().manual_seed(0))
    )
    for mode in ("full", "sampled"):
        loss, _ = _SoftmaxStep(model, mode)(np.arange(64), np.random.default_rng(0))
        assert torch.isfinite(loss)


def test_the_loss_is_the_full_softmax_up_to_a_catalog_size_then_sampled():
    interactions, items = _taste_world()
    split = temporal_holdout(interactions, 3)
    users = split.truth["user_id"].unique()
    pop = evaluate(
        split.truth,
        PopularityRecommender().fit(split.train, items).recommend(users, 10),
        len(items),
    )["ndcg@10"]
    for threshold, expected in [(len(items), "full"), (len(items) - 1, "sampled")]:
        config = _toy_config(dim=16, epochs=3, negatives=32, full_softmax_max_items=threshold)
        model = EmbeddingRecommender(config, progress=False).fit(split.train, items)
        assert model.loss_used == expected
        assert model.describe()["loss_used"] == expected
        ours = evaluate(split.truth, model.recommend(users, 10), len(items))["ndcg@10"]
        assert ours > 2 * pop


def test_the_memory_holds_ridge_or_ease_from_one_solve_and_keeps_ridge_without_evidence():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 300, 2_000), rng.integers(0, 40, 2_000)
    history = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(300, 40))
    history.data[:] = 1.0
    precision = np.linalg.inv((history.T @ history).toarray() + 30.0 * np.eye(40))
    ridge = np.eye(40) - 30.0 * precision
    ease = np.eye(40) - precision / np.diag(precision)
    for expected in (ridge, ease):
        np.fill_diagonal(expected, 0.0)  # a history's own items are never ranked
    memories = fit_memory(users, items, 300, 40, 40, 30.0, lambda _: None, forms=FORMS)
    assert set(memories) == {"ridge", "ease"}  # full rank: the closed forms themselves
    for form, expected in (("ridge", ridge), ("ease", ease)):
        product = memories[form].user_side @ memories[form].item_side.T
        np.testing.assert_allclose(product.numpy(), expected, atol=1e-4)
    with pytest.raises(ValueError, match="memory forms must be among ridge, ease"):
        fit_memory(users, items, 300, 40, 8, 30.0, lambda _: None, forms=("svd",))
    # Ridge is kept unless EASE beats it on validation by two standard errors.
    noise = torch.as_tensor(rng.normal(0, 0.3, 900))
    base = torch.as_tensor(rng.random(900))
    assert _kept_form({"ridge": base, "ease": base})[0] == "ridge"
    assert _kept_form({"ridge": base, "ease": base + 0.01 + noise})[0] == "ridge"
    form, leads = _kept_form({"ridge": base, "ease": base + 0.1 + noise})
    assert form == "ease" and leads[0].startswith("EASE - ridge: ")


def test_training_holds_the_chosen_memory_and_a_warm_start_keeps_only_its_own_form(
    monkeypatch, capsys
):
    import models.embedding as embedding

    interactions, items = _taste_world()
    split = temporal_holdout(interactions, 3)
    built_for = []
    build = EmbeddingRecommender._optimiser
    monkeypatch.setattr(
        EmbeddingRecommender,
        "_optimiser",
        lambda self: built_for.append(self.memory_form) or build(self),
    )
    with monkeypatch.context() as patched:  # validation prefers EASE, the second form fit
        patched.setattr(embedding, "_kept_form", lambda gains: ("ease", []))
        config = _toy_config(dim=16, epochs=1, validation="window")
        earlier = EmbeddingRecommender(config, progress=False).fit(split.train, items)
    # the optimiser was built for the chosen memory, not for the first one fit
    assert built_for == ["ease"] and earlier.memory_form == "ease"
    with torch.no_grad():
        earlier.memory.gate.fill_(0.5)  # as if it had kept a trained epoch
    # Today's memory of another form: the earlier blend's scale does not suit it.
    config = _toy_config(dim=16, epochs=0, validation="window", long_term="ridge")
    ridge = EmbeddingRecommender(config, progress=False).fit(split.train, items, earlier)
    assert ridge.memory_form == "ridge" and float(ridge.memory.gate.detach()) == 0.0
    # The same form: the earlier blend is tried against today's memory alone.
    capsys.readouterr()
    config = _toy_config(dim=16, epochs=0, validation="window", long_term="ease")
    EmbeddingRecommender(config).fit(split.train, items, earlier)
    assert "the start: the earlier model blended in" in capsys.readouterr().out


def test_ease_weights_are_the_closed_form_through_cholesky_and_through_the_inverse():
    rng = np.random.default_rng(0)
    history = sp.csr_matrix((rng.random((300, 40)) < 0.2).astype(np.float32))
    counts = (history.T @ history).toarray().astype(np.float64)

    def closed_form(l2: float) -> np.ndarray:
        precision = np.linalg.inv(counts + l2 * np.eye(40))
        weights = np.eye(40) - precision / np.diag(precision)
        np.fill_diagonal(weights, 0.0)
        return weights

    weights = ease_weights(history, 30.0)
    np.testing.assert_allclose(weights.numpy(), closed_form(30.0), atol=1e-5)
    assert weights.is_contiguous()  # row-major, as numpy's sparse products read it
    # past one block of the in-place inverse's mirroring (1,024 rows)
    wide = sp.csr_matrix((rng.random((2_000, 1_100)) < 0.02).astype(np.float32))
    precision = np.linalg.inv((wide.T @ wide).toarray().astype(np.float64) + 30.0 * np.eye(1_100))
    expected = np.eye(1_100) - precision / np.diag(precision)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(ease_weights(wide, 30.0).numpy(), expected, atol=1e-5)
    # a ridge that leaves the Gram matrix indefinite: Cholesky fails, the inverse answers
    indefinite = -float(np.linalg.eigvalsh(counts)[0]) - 0.5
    np.testing.assert_allclose(
        ease_weights(history, indefinite).numpy(), closed_form(indefinite), rtol=2e-3, atol=1e-3
    )


@pytest.mark.parametrize(
    "baseline",
    [ItemKNNRecommender(), EASERecommender(l2=50.0), ALSRecommender(factors=16, seed=3)],
    ids=lambda m: m.name,
)
def test_each_baseline_learns_taste_and_beats_popularity(baseline):
    interactions, items = _taste_world()
    split = temporal_holdout(interactions, 3)
    users = split.truth["user_id"].unique()
    pop = PopularityRecommender().fit(split.train, items)
    recs = baseline.fit(split.train, items).recommend(users, 10)
    ours = evaluate(split.truth, recs, len(items))
    assert (
        ours["ndcg@10"] > 2 * evaluate(split.truth, pop.recommend(users, 10), len(items))["ndcg@10"]
    )
    seen = split.train[["user_id", "item_id"]].drop_duplicates()
    assert recs.merge(seen, on=["user_id", "item_id"]).empty  # already-seen items are filtered
    similar = baseline.similar_items("i0", 5)  # category c0: items i0, i8, i16, ...
    assert "i0" not in set(similar["item_id"])
    assert (items.set_index("item_id").loc[similar["item_id"], "category"] == "c0").mean() >= 0.8


def test_leave_last_out_evaluates_every_user_with_two_interactions_on_their_last():
    t = pd.Timestamp("2026-09-01", tz="UTC") + pd.to_timedelta([0, 1, 2, 0, 1, 0, 5, 5], unit="D")
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b", "c", "d", "d"],
            "item_id": ["x", "y", "z", "x", "x", "y", "q", "w"],
            "event_time": t,
        }
    )
    split = make_split(frame.iloc[::-1], "loo")  # row order only matters for ties
    # a's last item z; b's last item x repeats an earlier one and is still its test item;
    # d's two events tie in time: the later row (w, in the original order) is the last.
    truth = split.truth.sort_values("user_id").to_dict("records")
    assert truth == [
        {"user_id": "a", "item_id": "z"},
        {"user_id": "b", "item_id": "x"},
        {"user_id": "d", "item_id": "q"},
    ]
    split = make_split(frame, "loo")
    assert split.truth.set_index("user_id")["item_id"].to_dict() == {"a": "z", "b": "x", "d": "w"}
    # Training: everything but each evaluated user's last interaction (c has one: kept).
    assert len(split.train) == 5 and split.protocol == "loo"
    assert sorted(split.train["user_id"]) == ["a", "a", "b", "c", "d"]
    # b's test item is in its history, so removed from its ranking: b counts, as a miss.
    items = pd.DataFrame({"item_id": sorted(frame["item_id"].unique())})
    recs = PopularityRecommender().fit(split.train, items).recommend(["a", "b", "d"], 10)
    assert "x" not in set(recs.loc[recs["user_id"] == "b", "item_id"])
    result = evaluate(split.truth, recs, len(items), 10)
    assert result["users"] == 3 and result["hr@10"] == pytest.approx(2 / 3)


def test_msr_split_keeps_three_quarters_of_each_item_and_is_seeded():
    interactions, _ = _taste_world()
    a, b = make_split(interactions, "msr"), make_split(interactions, "msr")
    pd.testing.assert_frame_equal(a.train, b.train)
    per_item = a.train.groupby("item_id").size() / interactions.groupby("item_id").size()
    assert per_item.between(0.7, 0.8).all()
    assert a.truth["user_id"].isin(a.train["user_id"]).all()
    with pytest.raises(ValueError, match="unknown protocol"):
        make_split(interactions, "random")


def test_evaluate_command_reads_any_interactions_file_and_writes_the_comparison(tmp_path, capsys):
    interactions, _ = _taste_world()
    inter = tmp_path / "taste.inter"  # RecBole atomic file, epoch-second timestamps
    interactions.assign(timestamp=interactions["event_time"].astype("int64") // 10**9).rename(
        columns={
            "user_id": "user_id:token",
            "item_id": "item_id:token",
            "timestamp": "timestamp:float",
        }
    )[["user_id:token", "item_id:token", "timestamp:float"]].to_csv(inter, sep="\t", index=False)
    out = tmp_path / "result.json"
    code = main(
        [
            "evaluate",
            "--interactions",
            str(inter),
            "--protocol",
            "loo",
            "--json",
            str(out),
            "--models",
            "popularity,item_knn",
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["protocol"] == "loo" and set(result["models"]) == {"popularity", "item_knn"}
    for metrics in result["models"].values():
        assert {
            "ndcg@10",
            "precision@10",
            "recall@10",
            "map",
            "hr@10",
            "coverage",
            "train_s",
            "score_s",
        } <= set(metrics)
    assert result["models"]["item_knn"]["ndcg@10"] > result["models"]["popularity"]["ndcg@10"]
    assert "item_knn" in capsys.readouterr().out


def test_every_option_of_the_command_line_says_what_it_does(capsys):
    parser = _parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in commands.choices.items():
        assert command.description, name
        for action in command._actions:
            assert action.help, (name, action.dest)
    with pytest.raises(SystemExit) as done:
        main(["evaluate", "--help"])
    assert done.value.code == 0
    assert "ml-100k.inter --protocol msr" in capsys.readouterr().out  # an example to copy


def test_interactions_files_with_problems_get_clear_errors_or_counted_drops(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,ts\nu1,i1,1\n")
    with pytest.raises(ValueError, match="missing column"):
        load_interactions(bad)
    partial = tmp_path / "partial.csv"
    partial.write_text(
        "user_id,item_id,timestamp,weight\nu1,i1,1700000000,1\nu2,,1700000001,1\nu3,i3,1700000002,0\n"
    )
    said = []
    frame = load_interactions(partial, report=said.append)
    assert len(frame) == 1 and "dropped 2 of 3 rows" in said[0]
    with pytest.raises(FileNotFoundError):
        load_interactions(tmp_path / "nope.csv")


def test_recommendations_leave_out_unavailable_and_excluded_items():
    interactions, items = _taste_world()
    model = ItemKNNRecommender().fit(interactions, items)
    plain = model.recommend(["u0", "u1"], 5)
    gone = plain.loc[plain["user_id"] == "u0", "item_id"].iloc[0]
    bought = plain.loc[plain["user_id"] == "u1", "item_id"].iloc[1]
    filtered = model.recommend(
        ["u0", "u1"],
        5,
        unavailable=[gone],
        exclude=pd.DataFrame({"user_id": ["u1"], "item_id": [bought]}),
    )
    assert gone not in set(filtered["item_id"])
    assert bought not in set(filtered.loc[filtered["user_id"] == "u1", "item_id"])
    assert filtered.groupby("user_id").size().tolist() == [5, 5]


@pytest.mark.parametrize("items", [50, 997, 5003, 20000])
def test_the_top_k_through_group_maxima_is_torchs_top_k(items):
    """Every row's k largest, exactly: ties (rounded scores), rows of -inf, rows with fewer
    finite scores than k, and widths that the groups do not divide."""
    rng = np.random.default_rng(items)
    scores = torch.as_tensor(rng.normal(size=(40, items)).round(1), dtype=torch.float32)
    scores[3] = -torch.inf
    scores[5, 7:] = -torch.inf
    scores[6, rng.permutation(items)[: items // 2]] = -torch.inf
    scores[8, -3:] = 10.0  # the best of the row past the last whole group
    for k in (1, 10, 100):
        k = min(k, items)
        values, columns = top_k(scores, k)
        torch.testing.assert_close(values, torch.topk(scores, k, dim=1).values)
        torch.testing.assert_close(scores.gather(1, columns), values)
        finite = torch.isfinite(values)
        for row in range(len(scores)):  # no column twice among a row's finite scores
            assert len(set(columns[row][finite[row]].tolist())) == int(finite[row].sum())


def test_the_top_k_stays_on_the_scores_device():
    """No tensor of its own on the CPU: the `meta` device stands in for a GPU."""
    values, columns = top_k(torch.empty(3, 5003, device="meta"), 10)
    assert values.device.type == columns.device.type == "meta"
    assert values.shape == columns.shape == (3, 10)


def test_users_scored_in_blocks_get_the_lists_of_one_block(taste_model_with_text, monkeypatch):
    """`recommend` scores blocks of users into one block's memory: the lists are those of
    scoring every user at once, whatever the block (the last one short), the default block
    (`SCORE_BLOCK_BYTES`) included."""
    import models.base

    model, _ = taste_model_with_text
    users = list(model.user_index)
    at_once = model.recommend(users, 20, batch_size=len(users))
    monkeypatch.setattr(models.base, "SCORE_BLOCK_BYTES", 4 * len(model.item_ids) * 9)
    for block in (1, 7, 64, None):  # scores equal up to the order of float sums in the product
        blocks = model.recommend(users, 20, batch_size=block)
        pd.testing.assert_frame_equal(blocks, at_once, check_exact=False, rtol=1e-5)
    knn = ItemKNNRecommender().fit(*_taste_world())
    pd.testing.assert_frame_equal(
        knn.recommend(users, 20, batch_size=7), knn.recommend(users, 20, batch_size=len(users))
    )


def test_mmr_trades_relevance_for_variety_and_long_tail_lifts_rare_items():
    candidates = pd.DataFrame(
        {"user_id": "u", "item_id": ["a", "b", "c", "d"], "score": [1.0, 0.9, 0.5, 0.8]}
    )
    category = {"a": 0, "b": 0, "c": 1, "d": 0}
    vectors = pd.DataFrame(
        {"item_id": list(category), "embedding": [np.eye(2)[c] for c in category.values()]}
    )
    assert mmr(candidates, vectors, 2, diversity=0.0)["item_id"].tolist() == ["a", "b"]
    assert mmr(candidates, vectors, 2, diversity=0.7)["item_id"].tolist() == ["a", "c"]
    with pytest.raises(ValueError, match="diversity"):
        mmr(candidates, vectors, 2, diversity=2.0)
    popularity = pd.Series({"a": 0.9, "b": 0.8, "c": 0.01, "d": 0.5})
    assert prefer_long_tail(candidates, popularity, 2, 0.0)["item_id"].tolist() == ["a", "b"]
    assert prefer_long_tail(candidates, popularity, 1, 2.0)["item_id"].tolist() == ["c"]


@pytest.fixture(scope="module")
def taste_model_with_text() -> tuple[EmbeddingRecommender, pd.DataFrame]:
    """The taste world's model, its items carrying a text vector that says their category;
    trained once for the tests that only read it."""
    interactions, items = _taste_world()
    items = _with_category_text(items)
    model = EmbeddingRecommender(_toy_config(dim=16, epochs=10), progress=False)
    return model.fit(interactions, items), items


def test_new_users_and_new_items_are_served_from_the_same_vectors(taste_model_with_text):
    model, items = taste_model_with_text
    category = items.set_index("item_id")["category"]
    # A new user with three c3 views, no retraining.
    history = pd.DataFrame({"item_id": ["i3", "i11", "i19"], "event_type": "view"})
    recs = model.recommend_for_history(history, 10)
    assert not set(history["item_id"]) & set(recs["item_id"])
    assert (category[recs["item_id"]] == "c3").mean() >= 0.8
    # New items, from content alone: user u0 likes c0.
    new = pd.DataFrame(
        {
            "item_id": [f"new{k}" for k in range(16)],
            "category": [f"c{k % 8}" for k in range(16)],
            "price_bucket": 0,
            "text_embedding": [np.eye(8, dtype=np.float32)[k % 8] for k in range(16)],
        }
    )
    top = model.recommend_new_items(["u0"], new, 2)
    assert set(top["item_id"]) == {"new0", "new8"}
    with pytest.raises(ValueError, match="none of the history"):
        model.recommend_for_history(pd.DataFrame({"item_id": ["nope"]}))


def test_a_history_as_arrays_gives_the_frames_vector(taste_model_with_text):
    """`encode_history` (the real-time service's path, arrays in) is `history_vector`."""
    model, _ = taste_model_with_text
    history = pd.DataFrame(
        {
            "item_id": ["i3", "i11", "nope", "i3", "i19"],
            "event_type": ["view", "add_to_cart", "view", "view", "bogus"],
            "event_time": pd.to_datetime([5, 1, 2, 9, 3], unit="h", utc=True),
        }
    )
    rows = model.item_index.get_indexer(history["item_id"])
    known = rows >= 0
    arrays = model.encode_history(
        rows[known],
        codes_of_event_types(history["event_type"][known].tolist()),
        epoch_seconds(history["event_time"][known]),
    )
    torch.testing.assert_close(arrays, model.history_vector(history))


@pytest.mark.parametrize("n", [1, 7, 400, 3000])
def test_small_and_large_inputs_take_paths_that_agree(n):
    """Type codes and repeated items: the per-request path (short arrays) and the bulk path
    give the same answers."""
    rng = np.random.default_rng(n)
    names = rng.choice(["view", "favorite", "add_to_cart", "purchase", "??"], n).tolist()
    want = np.asarray(
        [EVENT_TYPES.index(x) if x in EVENT_TYPES else 0 for x in names], dtype=np.int64
    )
    np.testing.assert_array_equal(codes_of_event_types(names), want)
    assert codes_of_event_types([]).shape == (0,)
    sequences = build_sequences(
        rng.integers(0, 4, n), rng.integers(0, 12, n), np.zeros(n, np.int64), np.arange(n), 4
    )
    token_users = np.repeat(np.arange(4), np.diff(sequences.ptr))
    seen: set = set()
    repeats = [
        (u, i) in seen or bool(seen.add((u, i)))
        for u, i in zip(token_users, sequences.items, strict=True)
    ]
    np.testing.assert_array_equal(sequences.repeats, np.asarray(repeats, bool))


def test_stored_user_vectors_reproduce_the_rankings(taste_model_with_text):
    """Scoring from `user_vectors()`' frame (what model_vectors writes for Feast) gives the
    model's own rankings; vectors missing a user or of another size are refused."""
    model, _ = taste_model_with_text
    users = list(model.user_index[:50])
    vectors = model.user_vectors()
    served = copy.deepcopy(model)
    served.use_user_vectors(vectors.sample(frac=1.0, random_state=0))  # any row order
    pd.testing.assert_frame_equal(served.recommend(users, 10), model.recommend(users, 10))
    with pytest.raises(ValueError, match="1 known user"):
        copy.deepcopy(model).use_user_vectors(vectors.iloc[1:])
    short = vectors.assign(embedding=[v[:3] for v in vectors["embedding"]])
    with pytest.raises(ValueError, match="3 dimensions"):
        copy.deepcopy(model).use_user_vectors(short)


def test_a_user_vector_does_not_depend_on_the_batch_it_is_encoded_in():
    """Users are encoded in chunks sorted by history length (each padded to its longest):
    every vector equals the one encoded alone, in the user's own row: the encoder's output
    (without the memory, e_u is that alone) and the memory's sums."""
    interactions, items = _taste_world()
    for long_term in ("none", "ease"):
        config = _toy_config(dim=16, epochs=1, long_term=long_term)
        model = EmbeddingRecommender(config, progress=False).fit(interactions, items)
        lengths = np.diff(model.sequences.ptr)
        assert lengths.min() < lengths.max()  # the chunks reorder the users
        together = np.stack(model.user_vectors()["embedding"])
        alone = np.stack(model.user_vectors(batch=1)["embedding"])
        np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


def _with_category_text(items: pd.DataFrame) -> pd.DataFrame:
    """A text vector per item that says its category (as a title would)."""
    return items.assign(
        text_embedding=[np.eye(8, dtype=np.float32)[int(c[1:])] for c in items["category"]]
    )


def test_search_finds_items_by_text_and_personalises_for_a_known_user(taste_model_with_text):
    model, items = taste_model_with_text
    text = items[["item_id"]].assign(embedding=items["text_embedding"])
    category = items.set_index("item_id")["category"]
    query_c3 = np.eye(8, dtype=np.float32)[3]
    anyone = model.search(query_c3, text, k=10)
    assert (category[anyone["item_id"]] == "c3").all()
    assert anyone["rank"].tolist() == list(range(1, 11))
    # A query that matches c0 and c3 equally: the user who likes c0 gets c0 items first.
    both = np.eye(8, dtype=np.float32)[0] + query_c3
    for user, taste in [("u0", "c0"), ("u3", "c3")]:
        mine = model.search(both, text, user_id=user, k=10, personalisation=0.8)
        assert (category[mine["item_id"]] == taste).all()
        assert mine["interest"].notna().all()
    # An unknown user gets plain relevance, with no interest.
    stranger = model.search(both, text, user_id="nobody", k=10)
    assert stranger["interest"].isna().all()
    assert set(category[stranger["item_id"]]) <= {"c0", "c3"}
    with pytest.raises(ValueError, match="dimensions"):
        model.search(np.ones(5), text)
    with pytest.raises(ValueError, match="personalisation"):
        model.search(query_c3, text, personalisation=2.0)


def test_a_warm_start_carries_the_earlier_model_over_and_learns_the_new_week():
    interactions, items = _taste_world()
    items = _with_category_text(items)
    split = temporal_holdout(interactions, 3)
    users = split.truth["user_id"].unique()
    last_week = split.train[split.train["event_time"] < split.cutoff - pd.Timedelta(days=4)]
    config = _toy_config(dim=16, epochs=3)
    earlier = EmbeddingRecommender(config, progress=False).fit(last_week, items)
    # A catalog that grew since: the new items have only their content.
    new_items = _with_category_text(
        pd.DataFrame({"item_id": ["new0", "new1"], "category": ["c0", "c1"], "price_bucket": 0})
    )
    catalog = pd.concat([items, new_items], ignore_index=True)
    # Zero epochs: the start itself is the earlier model, item for item.
    start = EmbeddingRecommender(_toy_config(dim=16, epochs=0), progress=False).fit(
        split.train, catalog, warm_start=earlier
    )
    assert start.warm_start_from == earlier.version
    before = earlier.item_vectors().set_index("item_id")
    after = start.item_vectors().set_index("item_id")
    # The item tower's part (the long-term memory's part is today's EASE).
    np.testing.assert_allclose(
        np.stack(after.loc[before.index, "embedding"])[:, :16],
        np.stack(before["embedding"])[:, :16],
        atol=1e-5,
    )
    np.testing.assert_allclose(after.loc[before.index, "bias"], before["bias"], atol=1e-6)
    content = start.new_item_vectors(new_items).set_index("item_id")
    np.testing.assert_allclose(
        np.stack(after.loc[["new0", "new1"], "embedding"]),
        np.stack(content.loc[["new0", "new1"], "embedding"]),
        atol=1e-5,
    )
    # Trained on: as good as a full retrain, and far better than popularity.
    warm = EmbeddingRecommender(config, progress=False).fit(
        split.train, catalog, warm_start=earlier
    )
    full = EmbeddingRecommender(config, progress=False).fit(split.train, catalog)
    pop = PopularityRecommender().fit(split.train, catalog)
    score = {
        name: evaluate(split.truth, m.recommend(users, 10), len(catalog))["ndcg@10"]
        for name, m in [("warm", warm), ("full", full), ("pop", pop)]
    }
    assert score["warm"] > 2 * score["pop"] and score["warm"] > 0.8 * score["full"]
    # An earlier blend that validation finds worse than today's memory alone is shut off.
    with torch.no_grad():
        earlier.memory.gate.fill_(-100.0)
    shut = EmbeddingRecommender(_toy_config(dim=16, epochs=0), progress=False).fit(
        split.train, catalog, warm_start=earlier
    )
    assert float(shut.memory.gate.detach()) == 0.0
    with pytest.raises(ValueError, match="cannot warm-start"):
        EmbeddingRecommender(EmbeddingConfig(dim=8), progress=False).fit(
            split.train, catalog, warm_start=earlier
        )


def _write_sequences(path, users: int, seed: int = 0) -> dict[str, list[str]]:
    """An S3-Rec sequence file (`user item item ...`), users of 3 to 12 items; returns it."""
    rng = np.random.default_rng(seed)
    sequences = {
        str(u): [str(i) for i in rng.integers(1, 200, rng.integers(3, 13))]
        for u in range(1, users + 1)
    }
    path.write_text("".join(f"{u} {' '.join(items)}\n" for u, items in sequences.items()))
    return sequences


def test_s3rec_sequence_files_are_read_in_line_order_with_their_attributes(tmp_path):
    path = tmp_path / "Shop.txt"
    path.write_text("1 5 3 5\n\n2 3 7\n10 8 1 2 9\n")
    said = []
    frame = load_interactions(path, report=said.append)
    assert frame["user_id"].tolist() == ["1"] * 3 + ["2"] * 2 + ["10"] * 4
    assert frame["item_id"].tolist() == ["5", "3", "5", "3", "7", "8", "1", "2", "9"]
    start = pd.Timestamp("1970-01-01", tz="UTC")
    assert frame["event_time"].tolist()[:3] == [start + pd.Timedelta(seconds=s) for s in range(3)]
    assert "no timestamps" in said[0] and "order" in said[0]
    # The last item of each line is the loo test item, the repeat of 5 included.
    truth = make_split(frame, "loo").truth.set_index("user_id")["item_id"].to_dict()
    assert truth == {"1": "5", "2": "7", "10": "9"}
    # Without an attributes file: the items, sorted, and nothing else.
    assert load_items(path, frame, report=said.append).to_dict("list") == {
        "item_id": ["1", "2", "3", "5", "7", "8", "9"]
    }
    (tmp_path / "Shop_item2attributes.json").write_text('{"5": [1, 2], "9": [3], "42": [4]}')
    said.clear()
    items = load_items(path, frame, report=said.append)
    attributes = items.set_index("item_id")["attributes"]
    assert tuple(attributes["5"]) == (1, 2) and tuple(attributes["9"]) == (3,)
    assert tuple(attributes["1"]) == () and "42" not in attributes
    assert "attributes for 2 of 7 items" in said[0]
    # A table that happens to be a .txt file is still read as a table.
    table = tmp_path / "table.txt"
    table.write_text("user_id\titem_id\ttimestamp\nu1\ti1\t1700000000\n")
    assert load_interactions(table, report=said.append)["item_id"].tolist() == ["i1"]


def test_a_large_sequence_file_loads_in_seconds(tmp_path):
    path = tmp_path / "big.txt"
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 12, 40_000)  # ~300k interactions, as Amazon Sports
    items = rng.integers(1, 18_000, lengths.sum()).astype(str)
    bounds = np.r_[0, np.cumsum(lengths)]
    path.write_text(
        "".join(f"{u + 1} {' '.join(items[bounds[u] : bounds[u + 1]])}\n" for u in range(40_000))
    )
    t0 = time.perf_counter()
    frame = load_interactions(path, report=lambda _: None)
    assert len(frame) == lengths.sum()
    assert time.perf_counter() - t0 < 10  # about 0.3 s on 2 cores; generous for a busy machine


def test_bad_sequence_files_name_the_line_or_the_user(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n2 4 5 6\n3 4 x\n")
    with pytest.raises(ValueError, match=r"bad.txt:3: 'x'"):
        load_interactions(bad, report=lambda _: None)
    twice = tmp_path / "twice.txt"
    twice.write_text("1 2 3\n2 4 5 6\n1 4\n")
    with pytest.raises(ValueError, match="user 1 is on 2 lines"):
        load_interactions(twice, report=lambda _: None)


@pytest.mark.parametrize(
    "name, content",
    [
        ("wrong_columns.csv", b"user,item,ts\nu1,i1,1\n"),
        ("empty.csv", b""),
        ("binary.csv", bytes(range(256)) * 8),
        ("binary.parquet", b"\x00\x01not parquet\xff" * 10),
        ("no_times.csv", b"user_id,item_id,timestamp\nu1,i1,never\nu2,i2,later\n"),
        ("notes.json", b"{}"),
    ],
)
def test_an_unreadable_file_exits_2_naming_columns_and_formats(tmp_path, capsys, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    code = main(["evaluate", "--interactions", str(path), "--protocol", "loo"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert "user_id, item_id, timestamp" in err and "weight, event_type or rating" in err
    for fmt in ("CSV/TSV", "Parquet", "RecBole", "S3-Rec sequence"):
        assert fmt in err


def test_a_rating_column_is_ignored_out_loud(tmp_path):
    inter = tmp_path / "ratings.inter"
    inter.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t5\t881250949\n1\t11\t1\t881250950\n"
    )
    said = []
    frame = load_interactions(inter, report=said.append)
    assert list(frame.columns) == ["user_id", "item_id", "event_time"]
    assert any("rating column ignored" in line for line in said)


def test_the_cli_reads_a_sequence_file_and_prints_user_counts_as_integers(tmp_path, capsys):
    path = tmp_path / "Shop.txt"
    _write_sequences(path, 1_200)
    out = tmp_path / "result.json"
    args = ["evaluate", "--interactions", str(path), "--protocol", "loo", "--json", str(out)]
    assert main([*args, "--models", "popularity,popularity_recent"]) == 0
    printed = capsys.readouterr().out
    assert "1,200 users" in printed and "1,200 relevant items" in printed
    assert "no timestamps" in printed
    header, _, row = [line for line in printed.splitlines() if line.startswith("|")][:3]
    cells = {h.strip(): v.strip() for h, v in zip(header.split("|"), row.split("|"), strict=True)}
    assert cells["users"] == "1,200"  # an integer with a thousands separator, not 1200.0000
    result = json.loads(out.read_text())
    assert set(result) == {"protocol", "interactions", "k", "models"}
    assert set(result["models"]) == {"popularity", "popularity_recent"}
    table = comparison_table(result["models"])
    assert table["users"].dtype.kind == "i" and table["users"].tolist() == [1_200, 1_200]


def test_popularity_counts_interactions_and_the_recent_variant_decays_them():
    t0 = pd.Timestamp("2026-09-01", tz="UTC")
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u1", "u4"],
            "item_id": ["old", "old", "old", "new", "new"],
            "event_type": ["view", "view", "view", "purchase", "view"],
            "event_time": [t0] * 3 + [t0 + pd.Timedelta(days=28)] * 2,
        }
    )
    items = pd.DataFrame({"item_id": ["new", "old", "never"]})
    plain = PopularityRecommender().fit(frame, items)
    assert plain.popularity.tolist() == [2.0, 3.0, 0.0]  # interactions per item, as PopRec
    recent = RecentPopularityRecommender(half_life_days=7).fit(frame, items)
    assert recent.name == "popularity_recent"
    # new: purchase 4 + view 1 today; old: 3 views four half-lives ago.
    assert recent.popularity.tolist() == pytest.approx([5.0, 3 / 16, 0.0])
    assert list(default_models()) == [
        "embedding",
        "popularity",
        "popularity_recent",
        "item_knn",
        "ease",
        "als",
    ]


def test_ease_says_when_it_solves_and_how_long_it_took(capsys):
    interactions, items = _taste_world()
    EASERecommender(l2=50.0).fit(interactions, items)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[ease] solving the 160 x 160 item-item system ..."
    assert lines[1].startswith("[ease] solved in ") and lines[1].endswith(" s")
    EASERecommender(l2=50.0, progress=False).fit(interactions, items)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_the_fast_dropout_drops_at_its_rate_and_keeps_the_expected_value(rate):
    dropout = FastDropout(rate)
    x = torch.ones(200, 50, 64, requires_grad=True)
    torch.manual_seed(0)
    out = dropout(x)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - rate) < 0.005  # 640,000 draws: a few standard errors
    assert torch.allclose(out[out != 0], torch.tensor(1 / (1 - rate)))
    assert abs(out.mean().item() - 1.0) < 0.01
    out.sum().backward()  # the gradient passes the kept elements, scaled, and no others
    assert torch.equal(x.grad, out.detach())
    torch.manual_seed(0)
    assert torch.equal(dropout(x), out)  # seeded like every other draw
    assert torch.equal(dropout.eval()(x), x)  # no dropout when serving
    assert torch.equal(FastDropout(1.0)(x), torch.zeros_like(x))  # torch's, at the ends
    assert abs(FastDropout(1e-6)(x).mean().item() - 1.0) < 1e-4  # a p below 1/65,536 too


def test_the_encoder_layers_own_attention_is_torchs_and_drops_weights_in_training():
    torch.manual_seed(0)
    layer = EncoderLayer(32, 2, 0.5).train()
    x = torch.randn(4, 12, 32)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(12)
    layer.attention_dropout.p = layer.dropout1.p = 0.0  # its own path, nothing dropped
    ours = layer._sa_block(x, causal, None, True)
    # the causal mask holds: position t never reads a later one
    changed = x.clone()
    changed[:, 6:] += 1.0
    torch.testing.assert_close(layer._sa_block(changed, causal, None, True)[:, :6], ours[:, :6])
    layer.self_attn.dropout = 0.0  # torch's own path
    theirs = layer._sa_block(x, causal, None, True)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    layer.self_attn.dropout = layer.attention_dropout.p = 0.5  # training: weights dropped
    assert not torch.allclose(layer._sa_block(x, causal, None, True), theirs)
    # the state dict is torch's layer's, so models saved before load
    stock = torch.nn.TransformerEncoderLayer(32, 2, 64, 0.5, batch_first=True, norm_first=True)
    assert set(layer.state_dict()) == set(stock.state_dict())
