"""The recommender's evaluation on the temporal hold-out: the trained model beside every
baseline, trained on the same rows, written as JSON, Markdown and an HTML report with plots,
for all users and for cold and warm users. (A warm start against a full retrain is measured
by `python -m bench.recommender --parts warm_start`.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib
import pandas as pd

from dagster_project.plots import figure_base64
from dagster_project.recommender.inputs import ModelSettings
from dagster_project.settings import DataLayout
from dagster_project.storage import write_text_atomic
from models.compare import compare, comparison_markdown, comparison_table, default_models
from models.embedding import EmbeddingRecommender
from models.metrics import user_segments
from models.split import Split

matplotlib.use("Agg")
import matplotlib.pyplot as plt

K = 10
HEADLINE = [f"ndcg@{K}", f"precision@{K}", f"recall@{K}", "map", f"hr@{K}", f"mrr@{K}"]
BEYOND = ["coverage", f"diversity@{K}", f"long_tail@{K}"]


def _plot(table: pd.DataFrame) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [3, 2]})
    table[[c for c in HEADLINE if c in table]].T.plot.bar(ax=axes[0], rot=0)
    axes[0].set_title(f"Accuracy at {K} (temporal hold-out)")
    table[[c for c in BEYOND if c in table]].T.plot.bar(ax=axes[1], rot=0, legend=False)
    axes[1].set_title("Beyond accuracy")
    for ax in axes:
        ax.set_ylabel("score")
    fig.tight_layout()
    return figure_base64(fig, dpi=110)


def segment_table(results: dict[str, dict]) -> pd.DataFrame:
    """Per model and user segment (cold, warm): users, NDCG, recall and hit rate at K."""
    rows = [
        {
            "model": name,
            "segment": segment,
            "users": int(m["users"]),
            f"ndcg@{K}": m[f"ndcg@{K}"],
            f"recall@{K}": m[f"recall@{K}"],
            f"hr@{K}": m[f"hr@{K}"],
        }
        for name, r in results.items()
        for segment, m in r.get("segments", {}).items()
    ]
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Evaluation:
    """Every model's figures: per-model results, the table, its segments and its Markdown."""

    split: Split
    results: dict[str, dict]
    table: pd.DataFrame
    segments: pd.DataFrame
    markdown: str

    @property
    def best_baseline(self) -> str:
        """The baseline with the highest NDCG@K."""
        rivals = self.table.drop(index=["embedding"])
        return str(rivals[f"ndcg@{K}"].idxmax())


def evaluate_models(
    split: Split,
    rows: pd.DataFrame,
    catalog: pd.DataFrame,
    trained: EmbeddingRecommender,
    settings: ModelSettings,
    log: Callable[[str], None] = print,
) -> Evaluation:
    """The trained model and every baseline on `split`, each baseline trained on the
    interactions of the training set `rows`."""
    train = rows[["user_id", "item_id", "event_type", "event_time"]]
    split = Split(train, split.truth, split.protocol, split.cutoff)
    baselines = {n: make for n, make in default_models(settings.seed).items() if n != "embedding"}
    results = compare(
        split,
        catalog,
        baselines,
        K,
        report=log,
        fitted={"embedding": trained},
        segments=user_segments(train),
    )
    table = comparison_table(results, K)
    table["users"] = table["users"].astype(int)
    return Evaluation(split, results, table, segment_table(results), comparison_markdown(table))


def write_evaluation(out: DataLayout, evaluation: Evaluation, test_days: int) -> None:
    """reports/evaluation.json (every figure), evaluation.md (the table) and evaluation.html
    (the table, its plot and the segments, with how the hold-out was made)."""
    split, table = evaluation.split, evaluation.table
    report = {
        "protocol": "temporal",
        "cutoff": split.cutoff.isoformat(),
        "test_days": test_days,
        "k": K,
        "models": evaluation.results,
    }
    write_text_atomic(json.dumps(report, indent=2), out.reports / "evaluation.json")
    write_text_atomic(evaluation.markdown + "\n", out.reports / "evaluation.md")
    html = (
        f"<html><head><meta charset='utf-8'><title>Recommender evaluation</title></head><body>"
        f"<h1>Recommender evaluation</h1><p>Temporal hold-out: the last {test_days} days "
        f"(from {split.cutoff:%Y-%m-%d}); relevant = items a user interacted with for the first time "
        f"in that window; already-seen items are removed from every ranking. Every model is "
        f"trained on the same rows (the Feast training set).</p>"
        f"{table.to_html(float_format='%.4f')}"
        f"<img src='data:image/png;base64,{_plot(table)}'/>"
        f"<h2>Cold and warm users</h2><p>cold: at most 5 distinct items in training.</p>"
        f"{evaluation.segments.to_html(index=False, float_format='%.4f')}</body></html>"
    )
    write_text_atomic(html, out.reports / "evaluation.html")
