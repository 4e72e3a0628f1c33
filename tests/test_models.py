import json

import numpy as np
import pandas as pd
import pytest

from models.__main__ import main
from models.baselines import (
    ALSRecommender,
    EASERecommender,
    ItemKNNRecommender,
    PopularityRecommender,
)
from models.compare import load_interactions
from models.embedding import EmbeddingConfig, EmbeddingRecommender
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
from models.split import make_split, temporal_holdout


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


def _taste_world(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users who each like one of 8 categories; popularity alone cannot tell them apart."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(160)],
            "category": [f"c{k % 8}" for k in range(160)],
            "price_bucket": 0,
        }
    )
    rows = []
    for u in range(400):
        taste = u % 8
        pool = items.index[items["category"] == f"c{taste}"].to_numpy()
        for d in range(12):
            for item in rng.choice(pool, 2, replace=False):
                rows.append(
                    (
                        f"u{u}",
                        items["item_id"][item],
                        "view",
                        pd.Timestamp("2026-09-01", tz="UTC")
                        + pd.Timedelta(days=d, hours=int(rng.integers(0, 23))),
                    )
                )
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "event_time"]), items


def test_embedding_model_learns_taste_and_beats_popularity():
    interactions, items = _taste_world()
    split = temporal_holdout(interactions, 3)
    users = split.truth["user_id"].unique()
    pop = PopularityRecommender().fit(split.train, items)
    model = EmbeddingRecommender(EmbeddingConfig(dim=16, epochs=15), progress=False).fit(
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


def test_training_is_seeded(tmp_path):
    interactions, items = _taste_world(1)
    cfg = EmbeddingConfig(dim=8, epochs=2, validation_share=0)
    a = (
        EmbeddingRecommender(cfg, progress=False)
        .fit(interactions, items)
        .recommend(["u1", "u2"], 5)
    )
    model = EmbeddingRecommender(cfg, progress=False).fit(interactions, items)
    path = model.save(tmp_path / "m")
    b = EmbeddingRecommender.load(path, "cpu").recommend(["u1", "u2"], 5)
    pd.testing.assert_frame_equal(a, b)
    # A model saved by older code is refused with a clear message.
    model.artifact_format = 1
    model.save(tmp_path / "old")
    with pytest.raises(ValueError, match="older version"):
        EmbeddingRecommender.load(tmp_path / "old" / "model.pt", "cpu")


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


def test_leave_last_out_holds_out_each_users_last_new_item():
    t = pd.Timestamp("2026-09-01", tz="UTC") + pd.to_timedelta([0, 1, 2, 0, 1, 0], unit="D")
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b", "c"],
            "item_id": ["x", "y", "z", "x", "x", "y"],
            "event_time": t,
        }
    )
    split = make_split(frame, "loo")
    # a's last item z is held out; b's last item x repeats an earlier one, c has one event.
    assert split.truth.to_dict("records") == [{"user_id": "a", "item_id": "z"}]
    assert len(split.train) == 5 and split.protocol == "loo"


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


def test_new_users_and_new_items_are_served_from_the_same_vectors():
    interactions, items = _taste_world()
    # A text vector per item that says its category (as a title would).
    items["text_embedding"] = [np.eye(8, dtype=np.float32)[k % 8] for k in range(len(items))]
    model = EmbeddingRecommender(EmbeddingConfig(dim=16, epochs=10), progress=False)
    model.fit(interactions, items)
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


def test_the_model_can_start_from_low_rank_ease():
    interactions, items = _taste_world()
    split = temporal_holdout(interactions, 3)
    users = split.truth["user_id"].unique()
    config = EmbeddingConfig(dim=16, epochs=3, ease_init=True, ease_l2=10.0)
    model = EmbeddingRecommender(config, progress=False).fit(split.train, items)
    pop = PopularityRecommender().fit(split.train, items)
    ours = evaluate(split.truth, model.recommend(users, 10), len(items))["ndcg@10"]
    assert ours > 2 * evaluate(split.truth, pop.recommend(users, 10), len(items))["ndcg@10"]
    assert model.history[0]["phase"] == "select epochs"


def _with_category_text(items: pd.DataFrame) -> pd.DataFrame:
    """A text vector per item that says its category (as a title would)."""
    return items.assign(
        text_embedding=[np.eye(8, dtype=np.float32)[int(c[1:])] for c in items["category"]]
    )


def test_an_ease_start_still_gives_new_items_a_vector_from_content():
    interactions, items = _taste_world()
    items = _with_category_text(items)
    config = EmbeddingConfig(dim=16, epochs=2, ease_init=True, ease_l2=10.0)
    model = EmbeddingRecommender(config, progress=False).fit(interactions, items)
    new = _with_category_text(
        pd.DataFrame(
            {
                "item_id": [f"new{k}" for k in range(16)],
                "category": [f"c{k % 8}" for k in range(16)],
            }
        ).assign(price_bucket=0)
    )
    for user, taste in [("u0", "c0"), ("u5", "c5")]:
        top = model.recommend_new_items([user], new, 2)
        assert set(new.set_index("item_id").loc[top["item_id"], "category"]) == {taste}


def test_search_finds_items_by_text_and_personalises_for_a_known_user():
    interactions, items = _taste_world()
    items = _with_category_text(items)
    model = EmbeddingRecommender(EmbeddingConfig(dim=16, epochs=10), progress=False)
    model.fit(interactions, items)
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
    config = EmbeddingConfig(dim=16, epochs=3, ease_l2=10.0)
    earlier = EmbeddingRecommender(config, progress=False).fit(last_week, items)
    # A catalog that grew since: the new items have only their content.
    new_items = _with_category_text(
        pd.DataFrame({"item_id": ["new0", "new1"], "category": ["c0", "c1"], "price_bucket": 0})
    )
    catalog = pd.concat([items, new_items], ignore_index=True)
    # Zero epochs: the start itself is the earlier model, item for item.
    start = EmbeddingRecommender(
        EmbeddingConfig(dim=16, epochs=0, validation_share=0), progress=False
    ).fit(split.train, catalog, warm_start=earlier)
    assert start.warm_start_from == earlier.version
    before = earlier.item_vectors().set_index("item_id")
    after = start.item_vectors().set_index("item_id")
    np.testing.assert_allclose(
        np.stack(after.loc[before.index, "embedding"]), np.stack(before["embedding"]), atol=1e-5
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
    with pytest.raises(ValueError, match="cannot warm-start"):
        EmbeddingRecommender(EmbeddingConfig(dim=8), progress=False).fit(
            split.train, catalog, warm_start=earlier
        )
