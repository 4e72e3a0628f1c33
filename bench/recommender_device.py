"""The model on Amazon Sports (`loo`) on whichever device it runs on: epochs per second and
quality, so the GPU figure is one command away.

    python -m bench.recommender_device [--device auto|cpu|cuda] [--loss auto|full|sampled]

Prints and saves bench/results/recommender_device_<device>.json with the machine (and the
GPU's name where there is one).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import torch

from bench.machine import machine_info, save_figures
from bench.recommender import shared_data
from models.compare import load_interactions, load_items
from models.embedding import EmbeddingConfig, EmbeddingRecommender, resolve_device
from models.metrics import evaluate
from models.split import make_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--loss", default="auto", choices=("auto", "full", "sampled"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    path = shared_data() / "amazon_sports" / "Sports_and_Outdoors.txt"
    interactions = load_interactions(path)
    items = load_items(path, interactions)
    split = make_split(interactions, "loo")
    config = EmbeddingConfig(device=str(device), loss=args.loss)
    started = time.perf_counter()
    model = EmbeddingRecommender(config).fit(split.train, items)
    trained = time.perf_counter() - started
    t0 = time.perf_counter()
    recommendations = model.recommend(split.truth["user_id"].unique(), 10)
    scoring = time.perf_counter() - t0
    metrics = evaluate(split.truth, recommendations, len(items), 10)
    epoch_seconds = [r["seconds"] for r in model.history]
    figures = {
        "benchmark": "recommender_device",
        "machine": machine_info(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "config": asdict(config),
        "loss_used": model.loss_used,
        "epochs": len(model.history),
        "best_epoch": model.best_epoch,
        "epochs_per_second": round(len(epoch_seconds) / max(sum(epoch_seconds), 1e-9), 3),
        "train_seconds": round(trained, 1),
        "score_seconds": round(scoring, 1),
        "ndcg@10": round(metrics["ndcg@10"], 4),
        "hr@10": round(metrics["hr@10"], 4),
    }
    save_figures(f"recommender_device_{device.type}", figures)


if __name__ == "__main__":
    main()
