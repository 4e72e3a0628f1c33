"""Benchmark: the embedding recommender beside every baseline, on one split per data set.

    python -m bench.recommender [--parts movielens,generated,new_items,speed] [--data-dir DIR]

- movielens: MovieLens 100k (../shared/data/ml-100k or $RECSYS_SHARED_DATA), `msr` protocol,
  every model in one run (targets: the model at or above the best baseline on NDCG@10 and
  P@10; EASE about 0.48 / 0.42; BiVAE's published 0.475 / 0.412);
- generated: the default generated data set materialized by `make demo` (DIR, default
  ./data), temporal protocol on the Feast training rows, every model;
- new_items: on that data set, NDCG@10 over items unseen in training, ranked from content
  alone against each other;
- speed: one training epoch over 1M synthetic interactions (100k users, 50k items, dim 64)
  and top-100 for 100k users over 50k items.

Figures are printed and saved to bench/results/recommender.json with the machine; a part
that is not run keeps its saved figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.machine import machine_info
from models.compare import compare, comparison_table, default_models, load_interactions
from models.embedding import EmbeddingConfig, EmbeddingRecommender
from models.metrics import evaluate, user_segments
from models.split import Split, make_split

RESULTS = Path(__file__).parent / "results" / "recommender.json"
PARTS = ("movielens", "generated", "new_items", "speed")


def _shared_data() -> Path:
    env = os.environ.get("RECSYS_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def movielens() -> dict:
    interactions = load_interactions(_shared_data() / "ml-100k" / "ml-100k.inter")
    split = make_split(interactions, "msr")
    items = pd.DataFrame({"item_id": sorted(interactions["item_id"].unique())})
    # A variant for this data set: no recency weighting (the msr split is random in time, so
    # recent ratings are no better evidence than old ones).
    variant = EmbeddingConfig(history_half_life_days=1e9)
    models = {
        **default_models(),
        "embedding_no_recency": lambda: EmbeddingRecommender(variant),
    }
    results = compare(split, items, models, 10, segments=user_segments(split.train))
    print(comparison_table(results).iloc[:, :8].to_markdown(floatfmt=".4f"), flush=True)
    return {"protocol": "msr", "variant_config": variant.__dict__, "models": results}


def _generated(data_dir: Path):
    from dagster_project.assets.recommender import (
        ITEM_FEATURES,
        USER_FEATURES,
        evaluation_split,
        model_items,
    )
    from dagster_project.resources import PlatformStorage, RecommenderSettings

    storage, settings = PlatformStorage(data_dir=str(data_dir)), RecommenderSettings()
    held_out = evaluation_split(storage, settings)
    train = pd.read_parquet(storage.layout().table("training_set"))
    split = Split(train, held_out.truth, "temporal", held_out.cutoff)
    config = EmbeddingConfig(user_feature_columns=USER_FEATURES, item_feature_columns=ITEM_FEATURES)
    return split, model_items(storage), config


def generated(data_dir: Path) -> dict:
    split, items, config = _generated(data_dir)
    models = {
        **default_models(),
        "embedding": lambda: EmbeddingRecommender(config),
        # The same model trained from a random start, to show what the EASE start is worth.
        "embedding_random_start": lambda: EmbeddingRecommender(replace(config, ease_init=False)),
    }
    results = compare(split, items, models, 10, segments=user_segments(split.train))
    print(comparison_table(results).iloc[:, :8].to_markdown(floatfmt=".4f"), flush=True)
    return {"protocol": "temporal", "data_dir": str(data_dir), "models": results}


def new_items(data_dir: Path, share: float = 0.1, seed: int = 0) -> dict:
    """Hide a random share of the catalog from training; rank those items for the users who
    interacted with them after the cutoff, from content alone, against each other."""
    split, items, config = _generated(data_dir)
    rng = np.random.default_rng(seed)
    hidden = set(items["item_id"].to_numpy()[rng.random(len(items)) < share])
    train = split.train[~split.train["item_id"].isin(hidden)]
    truth = split.truth[split.truth["item_id"].isin(hidden)]
    truth = truth[truth["user_id"].isin(train["user_id"])]
    model = EmbeddingRecommender(config).fit(train, items[~items["item_id"].isin(hidden)])
    new = items[items["item_id"].isin(hidden)]
    recs = model.recommend_new_items(truth["user_id"].unique(), new, 10)
    random_recs = recs.assign(item_id=rng.choice(new["item_id"].to_numpy(), len(recs)))
    return {
        "hidden_items": len(new),
        "users": int(truth["user_id"].nunique()),
        "content_only": evaluate(truth, recs, len(new), 10),
        "random_order": evaluate(truth, random_recs, len(new), 10),
    }


def speed(users: int = 100_000, items: int = 50_000, interactions: int = 1_000_000) -> dict:
    rng = np.random.default_rng(0)
    # A long-tailed catalog that still leaves ~1M distinct (user, item) pairs.
    popularity = 1.0 / (np.arange(items) + 10.0) ** 0.7
    item_of = rng.choice(items, interactions, p=popularity / popularity.sum())
    frame = pd.DataFrame(
        {
            "user_id": (rng.integers(0, users, interactions)).astype(str),
            "item_id": item_of.astype(str),
            "event_time": pd.Timestamp("2026-09-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 30 * 86_400, interactions), unit="s"),
        }
    )
    catalog = pd.DataFrame({"item_id": np.arange(items).astype(str)})
    model = EmbeddingRecommender(EmbeddingConfig(dim=64, epochs=1, validation_share=0))
    model.fit(frame, catalog)
    epoch = next(r["seconds"] for r in model.history if r["phase"] == "refit")
    t0 = time.perf_counter()
    top = model.recommend(model.user_index, 100)
    scoring = time.perf_counter() - t0
    # What exact scoring costs here: every user x item product, at this machine's GEMM speed.
    a, b = torch.randn(4096, 64), torch.randn(items, 64)
    t0 = time.perf_counter()
    for _ in range(3):
        torch.mm(a, b.T)
    gemm = 3 * 2 * 4096 * 64 * items / (time.perf_counter() - t0) / 1e9
    return {
        "interactions": interactions,
        "users": int(frame["user_id"].nunique()),
        "items": items,
        "pairs": int(frame[["user_id", "item_id"]].drop_duplicates().shape[0]),
        "epoch_seconds": epoch,
        "top100_seconds": round(scoring, 2),
        "top100_rows": len(top),
        "top100_gflop": round(2 * len(model.user_index) * items * 64 / 1e9, 1),
        "machine_gemm_gflops": round(gemm, 1),
        "device": str(model.device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args()
    parts = args.parts.split(",")
    result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result.update({"benchmark": "recommender", "machine": machine_info()})
    for part in parts:
        started = time.perf_counter()
        if part == "movielens":
            result[part] = movielens()
        elif part == "generated":
            result[part] = generated(args.data_dir.resolve())
        elif part == "new_items":
            result[part] = new_items(args.data_dir.resolve())
        elif part == "speed":
            result[part] = speed()
        else:
            raise SystemExit(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
        result[part]["bench_seconds"] = round(time.perf_counter() - started, 1)
        print(f"[recommender] {part}: {json.dumps(result[part], default=str)[:600]}", flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2, default=str))
    print(f"[recommender] saved {RESULTS}")


if __name__ == "__main__":
    main()
