import numpy as np
import pandas as pd
import pytest

from models.baselines import PopularityRecommender
from models.embedding import EmbeddingConfig, EmbeddingRecommender
from models.metrics import evaluate, ndcg_at_k, precision_at_k, recall_at_k
from models.split import temporal_holdout


def test_metrics_on_a_hand_example():
    truth = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "z"]})
    recs = pd.DataFrame(
        {"user_id": ["a", "a", "b", "b"], "item_id": ["x", "q", "q", "r"], "rank": [1, 2, 1, 2]}
    )
    assert precision_at_k(truth, recs, 2) == pytest.approx((1 / 2 + 0) / 2)
    assert recall_at_k(truth, recs, 2) == pytest.approx((1 / 2 + 0) / 2)
    idcg_a = 1 + 1 / np.log2(3)
    assert ndcg_at_k(truth, recs, 2) == pytest.approx((1 / idcg_a + 0) / 2)


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
    model = EmbeddingRecommender(
        EmbeddingConfig(dim=16, epochs=15, validation_days=2), progress=False
    ).fit(split.train, items)
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
    cfg = EmbeddingConfig(dim=8, epochs=2, validation_days=0)
    a = (
        EmbeddingRecommender(cfg, progress=False)
        .fit(interactions, items)
        .recommend(["u1", "u2"], 5)
    )
    model = EmbeddingRecommender(cfg, progress=False).fit(interactions, items)
    path = model.save(tmp_path / "m")
    b = EmbeddingRecommender.load(path, "cpu").recommend(["u1", "u2"], 5)
    pd.testing.assert_frame_equal(a, b)
