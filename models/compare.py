"""Every recommender on one split, side by side: the engine of `python -m models evaluate`
and of the benchmarks.

`load_interactions` reads any interactions file (CSV, Parquet or a RecBole `.inter` file)
into user_id, item_id, event_time[, weight | event_type]; `compare` trains each model on the
same split and measures it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from models.base import Recommender
from models.baselines import (
    ALSRecommender,
    EASERecommender,
    ItemKNNRecommender,
    PopularityRecommender,
)
from models.embedding import EmbeddingConfig, EmbeddingRecommender
from models.metrics import evaluate, evaluate_by_segment, item_popularity
from models.split import Split

REQUIRED = ("user_id", "item_id", "timestamp")


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".inter":  # RecBole atomic file: tab separated, header "name:type"
        frame = pd.read_csv(path, sep="\t", dtype=str)
        return frame.rename(columns=lambda c: c.split(":", 1)[0])
    if path.suffix in (".csv", ".tsv", ".txt"):
        return pd.read_csv(path, sep=None, engine="python", dtype=str)
    raise ValueError(f"{path}: expected a .csv, .parquet or RecBole .inter file")


def load_interactions(path: Path | str, report: Callable[[str], None] = print) -> pd.DataFrame:
    """user_id, item_id (strings), event_time (UTC) and weight or event_type where given.

    `timestamp` may be epoch seconds or a date-time string. Rows missing a user, an item or
    a readable timestamp are dropped and counted (`report`); no row is lost silently."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such interactions file")
    frame = _read_table(path)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)}. "
            "Expected user_id, item_id, timestamp and optionally weight or event_type."
        )
    stamp = frame["timestamp"]
    numeric = pd.to_numeric(stamp, errors="coerce")
    event_time = (
        pd.to_datetime(numeric, unit="s", utc=True)
        if numeric.notna().mean() > 0.5
        else pd.to_datetime(stamp, utc=True, errors="coerce")
    )
    out = pd.DataFrame(
        {
            "user_id": frame["user_id"].astype("string"),
            "item_id": frame["item_id"].astype("string"),
            "event_time": event_time,
        }
    )
    if "weight" in frame:
        out["weight"] = pd.to_numeric(frame["weight"], errors="coerce")
    elif "event_type" in frame:
        out["event_type"] = frame["event_type"].astype("string")
    bad = out[["user_id", "item_id", "event_time"]].isna().any(axis=1)
    if "weight" in out:
        bad |= out["weight"].isna() | (out["weight"] <= 0)
    if bad.any():
        report(
            f"{path.name}: dropped {int(bad.sum()):,} of {len(out):,} rows without a user, an "
            "item, a readable timestamp or a positive weight"
        )
    out = out[~bad].reset_index(drop=True)
    if out.empty:
        raise ValueError(f"{path}: no usable interactions")
    out["user_id"] = out["user_id"].astype(str)
    out["item_id"] = out["item_id"].astype(str)
    return out


def default_models(seed: int = 42, device: str = "auto") -> dict[str, Callable[[], Recommender]]:
    """The model and every baseline, each made fresh for a run."""
    return {
        "embedding": lambda: EmbeddingRecommender(EmbeddingConfig(seed=seed, device=device)),
        "popularity": PopularityRecommender,
        "item_knn": ItemKNNRecommender,
        "ease": EASERecommender,
        "als": lambda: ALSRecommender(seed=seed),
    }


def compare(
    split: Split,
    items: pd.DataFrame,
    models: dict[str, Callable[[], Recommender]],
    k: int = 10,
    report: Callable[[str], None] = print,
    fitted: dict[str, Recommender] | None = None,
    segments: pd.Series | None = None,
) -> dict[str, dict]:
    """Train each model on `split.train` (or take it from `fitted`), rank for the users in
    `split.truth`, and measure; with `segments` (segment per user_id), also per segment."""
    users = split.truth["user_id"].unique()
    popularity = item_popularity(split.train)
    categories = items.set_index("item_id")["category"] if "category" in items else None
    results: dict[str, dict] = {}
    for name in [*(fitted or {}), *models]:
        t0 = time.perf_counter()
        if fitted and name in fitted:
            model = fitted[name]
        else:
            report(f"[compare] {name}: training on {len(split.train):,} interactions")
            model = models[name]().fit(split.train, items)
        t1 = time.perf_counter()
        train_s = getattr(model, "fit_seconds", t1 - t0)  # a fitted model's own training time
        recommendations = model.recommend(users, k)
        t2 = time.perf_counter()
        metrics = evaluate(split.truth, recommendations, len(items), k, popularity, categories)
        results[name] = {
            **metrics,
            "map": metrics[f"map@{k}"],
            "coverage": metrics[f"coverage@{k}"],
            "train_s": round(train_s, 2),
            "score_s": round(t2 - t1, 2),
        }
        if segments is not None:
            by_segment = evaluate_by_segment(
                split.truth, recommendations, segments, len(items), k, popularity, categories
            )
            results[name]["segments"] = {s: m for s, m in by_segment.items() if s != "all"}
        report(
            f"[compare] {name}: ndcg@{k} {metrics[f'ndcg@{k}']:.4f}, train {train_s:.1f} s, "
            f"score {t2 - t1:.1f} s"
        )
    return results


def comparison_table(results: dict[str, dict[str, float]], k: int = 10) -> pd.DataFrame:
    """One row per model, the headline columns first."""
    table = pd.DataFrame(
        {
            name: {m: v for m, v in r.items() if not isinstance(v, dict)}
            for name, r in results.items()
        }
    ).T
    first = [f"ndcg@{k}", f"precision@{k}", f"recall@{k}", "map", f"hr@{k}", f"mrr@{k}", "coverage"]
    rest = [c for c in table.columns if c not in first and c not in (f"map@{k}", f"coverage@{k}")]
    return table[[c for c in first if c in table] + rest].rename_axis("model")
