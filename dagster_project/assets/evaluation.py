"""Group evaluation: the model beside every baseline on the temporal hold-out, GX Data Docs, the SQL warehouse."""

import json

import duckdb
import matplotlib
import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from dagster_project.assets._common import OWNERS
from dagster_project.assets.quality import accounting_by_table, drift_figures
from dagster_project.assets.recommender import (
    evaluation_split,
    model_config,
    model_items,
    trained_model,
)
from dagster_project.plots import figure_base64
from dagster_project.quality.report import collect_report_data, render_report
from dagster_project.resources import PlatformStorage, QualityResource, RecommenderSettings
from dagster_project.sources.raw_table import raw_relation
from dagster_project.storage import parquet_relation, write_text_atomic
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


def _segment_table(results: dict[str, dict]) -> pd.DataFrame:
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


WARM = "embedding_warm_start"


def _warm_started(
    context: AssetExecutionContext,
    rows: pd.DataFrame,
    settings: RecommenderSettings,
    cutoff: pd.Timestamp,
    catalog: pd.DataFrame,
) -> tuple[EmbeddingRecommender, str]:
    """The daily refresh, replayed on the training set `rows`: a full model of the rows up to
    `warm_start_days` before the cutoff (last week's retrain), warm-started on all of them."""
    week_ago = cutoff - pd.Timedelta(days=settings.warm_start_days)
    older = rows[rows["event_time"] < week_ago]
    context.log.info(
        f"warm start: last week's model on {len(older):,} rows before {week_ago:%Y-%m-%d}, "
        f"then warm-started on all {len(rows):,}"
    )
    earlier = EmbeddingRecommender(model_config(settings)).fit(older, catalog)
    warm = EmbeddingRecommender(model_config(settings)).fit(rows, catalog, warm_start=earlier)
    note = (
        f"{WARM}: a model trained on the rows before {week_ago:%Y-%m-%d} (as last week's "
        f"retrain would be), warm-started on every training row; its train_s is the warm "
        f"start's own time, against the full retrain's for embedding."
    )
    return warm, note


@asset(
    group_name="evaluation",
    owners=OWNERS,
    kinds={"pytorch", "html"},
    deps=["embedding_model", "training_set"],
    description=f"The model (full retrain, and warm-started from a week-old model) beside "
    f"popularity (plain and recent), item-kNN, EASE and ALS on the temporal hold-out: "
    f"accuracy at {K} (precision, recall, NDCG, MAP, hit rate, MRR), coverage, diversity, novelty "
    "and long-tail share, for all users and for cold and warm users.",
)
def evaluation_report(
    context: AssetExecutionContext, storage: PlatformStorage, settings: RecommenderSettings
) -> MaterializeResult:
    out = storage.layout()
    split = evaluation_split(storage, settings)
    rows = pd.read_parquet(out.table("training_set"))  # with features, for the warm start
    train = rows[["user_id", "item_id", "event_type", "event_time"]]
    split = Split(train, split.truth, split.protocol, split.cutoff)
    catalog = model_items(storage)
    baselines = {n: make for n, make in default_models(settings.seed).items() if n != "embedding"}
    fitted = {"embedding": trained_model(storage, settings)}
    warm_note = ""
    if settings.warm_start_days > 0:
        fitted[WARM], warm_note = _warm_started(context, rows, settings, split.cutoff, catalog)
    results = compare(
        split,
        catalog,
        baselines,
        K,
        report=context.log.info,
        fitted=fitted,
        segments=user_segments(train),
    )
    table = comparison_table(results, K)
    table["users"] = table["users"].astype(int)
    segments = _segment_table(results)
    text = comparison_markdown(table)
    report = {
        "protocol": "temporal",
        "cutoff": split.cutoff.isoformat(),
        "test_days": settings.test_days,
        "k": K,
        "models": results,
    }
    write_text_atomic(json.dumps(report, indent=2), out.reports / "evaluation.json")
    write_text_atomic(text + "\n", out.reports / "evaluation.md")
    html = (
        f"<html><head><meta charset='utf-8'><title>Recommender evaluation</title></head><body>"
        f"<h1>Recommender evaluation</h1><p>Temporal hold-out: the last {settings.test_days} days "
        f"(from {split.cutoff:%Y-%m-%d}); relevant = items a user interacted with for the first time "
        f"in that window; already-seen items are removed from every ranking. Every model is "
        f"trained on the same rows (the Feast training set). {warm_note}</p>"
        f"{table.to_html(float_format='%.4f')}"
        f"<img src='data:image/png;base64,{_plot(table)}'/>"
        f"<h2>Cold and warm users</h2><p>cold: at most 5 distinct items in training.</p>"
        f"{segments.to_html(index=False, float_format='%.4f')}</body></html>"
    )
    write_text_atomic(html, out.reports / "evaluation.html")
    context.log.info("\n" + text)
    best_baseline = table.drop(index=["embedding", WARM], errors="ignore")[f"ndcg@{K}"].idxmax()
    return MaterializeResult(
        metadata={
            "evaluation": MetadataValue.md(text),
            "by_segment": MetadataValue.md(segments.to_markdown(index=False, floatfmt=".4f")),
            "report": MetadataValue.path(str(out.reports / "evaluation.html")),
            **{f"ndcg@{K}_{name}": float(table.loc[name, f"ndcg@{K}"]) for name in table.index},
            "best_baseline": best_baseline,
            "users_evaluated": int(table.loc["embedding", "users"]),
        }
    )


WAREHOUSE_TABLES = [
    "raw_events",
    "raw_items",
    "events_clean",
    "items_clean",
    "quarantine",
    "user_traffic_scores",
    "session_traffic_scores",
    "item_outliers",
    "behaviour_events",
    "behaviour_exclusions",
    "items",
    "training_set",
    "recommendations",
]


@asset(
    group_name="evaluation",
    owners=OWNERS,
    kinds={"duckdb"},
    deps=[
        "quarantine",
        "behaviour_events",
        "item_outliers",
        "items",
        "user_features",
        "item_features",
        "recommendations",
    ],
    description="A DuckDB file of views over the Parquet tables, for SQL by analysts (rebuilt; never the source of truth).",
)
def warehouse(storage: PlatformStorage) -> MaterializeResult:
    out = storage.layout()
    tmp = out.duckdb_file.with_name(".warehouse.duckdb.tmp")
    tmp.unlink(missing_ok=True)
    paths = {
        t: out.raw_table(t) if t.startswith("raw_") else out.table(t) for t in WAREHOUSE_TABLES
    }
    paths |= {t: out.feature_table(t) for t in ("user_features", "item_features")}
    with duckdb.connect(str(tmp)) as con:
        for name, path in paths.items():
            if path.exists():
                source = raw_relation(path) if path.is_dir() else parquet_relation(path)
                con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {source}")
    tmp.replace(out.duckdb_file)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out.duckdb_file)),
            "views": ", ".join(sorted(p for p, f in paths.items() if f.exists())),
        }
    )


@asset(
    group_name="evaluation",
    owners=OWNERS,
    kinds={"great_expectations", "html"},
    deps=["events_clean", "items_clean", "user_features", "item_features", "training_set"],
    description="Great Expectations Data Docs: every suite and its latest validation results, as HTML (the analysts' quality report).",
)
def data_docs(storage: PlatformStorage, quality: QualityResource) -> MaterializeResult:
    index = quality.runner(storage).build_docs()
    return MaterializeResult(
        metadata={"index": MetadataValue.path(str(index)), "url": MetadataValue.url(index.as_uri())}
    )


@asset(
    group_name="evaluation",
    owners=OWNERS,
    kinds={"html", "duckdb"},
    deps=["quarantine", "behaviour_events", "item_outliers", "data_docs"],
    description="The analysts' data-quality report for this run, one self-contained HTML page: "
    "rows in / clean / quarantined by reason and source, null rates, failing checks and since "
    "when, drift against the previous day, bot share, with plots.",
)
def quality_report(
    context: AssetExecutionContext, storage: PlatformStorage, quality: QualityResource
) -> MaterializeResult:
    out = storage.layout()
    names = [
        "raw_events",
        "raw_items",
        "events_clean",
        "items_clean",
        "quarantine",
        "user_traffic_scores",
        "behaviour_exclusions",
        "item_outliers",
    ]
    stats = {
        table: json.loads((out.reports / "quality" / f"cleaning_{table}.json").read_text())
        for table in ("behaviour_events", "items")
    }
    days, verdicts = drift_figures(out)
    runner = quality.runner(storage)
    data = collect_report_data(
        {n: out.raw_table(n) if n.startswith("raw_") else out.table(n) for n in names},
        accounting_by_table(out),
        {t: s["rule_hits"] for t, s in stats.items()},
        runner.validations_dir,
        days,
        verdicts,
        context.run.run_id,
        traffic_labels=out.ground_truth / "traffic_labels.parquet",
    )
    page = render_report(data, runner.docs_index)
    latest = write_text_atomic(page, out.reports / "quality_report.html")
    write_text_atomic(page, out.reports / "quality" / f"report_{context.run.run_id}.html")
    failing = data.checks[data.checks["status"] == "FAILED"] if len(data.checks) else data.checks
    return MaterializeResult(
        metadata={
            "report": MetadataValue.path(str(latest)),
            "report_url": MetadataValue.url(latest.as_uri()),
            "failing_expectations": len(failing),
            "drift_warnings": int(verdicts["warn"].sum()),
            "quarantined_by_reason": MetadataValue.md(
                data.by_reason.to_markdown(index=False) if len(data.by_reason) else "none"
            ),
        }
    )
