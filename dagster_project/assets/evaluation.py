"""Group evaluation: the model beside every baseline on the temporal hold-out."""

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, MaterializeResult, MetadataValue, asset

from dagster_project.assets._common import MODEL_ITEM_INPUTS, OWNERS
from dagster_project.recommender.evaluation import K, evaluate_models, write_evaluation
from dagster_project.recommender.inputs import (
    SPLIT_COLUMNS,
    evaluation_split,
    model_items,
)
from dagster_project.resources import PlatformStorage, RecommenderSettings
from models.embedding import EmbeddingRecommender


@asset(
    group_name="evaluation",
    owners=OWNERS,
    kinds={"pytorch", "html"},
    ins={
        "training_set": AssetIn(metadata={"columns": SPLIT_COLUMNS}),
        "behaviour_events": AssetIn(metadata={"columns": SPLIT_COLUMNS}),
        **MODEL_ITEM_INPUTS,
    },
    description=f"The trained model beside "
    f"popularity (plain and recent), item-kNN, EASE and ALS on the temporal hold-out: "
    f"accuracy at {K} (precision, recall, NDCG, MAP, hit rate, MRR), coverage, diversity, novelty "
    "and long-tail share, for all users and for cold and warm users.",
)
def evaluation_report(
    context: AssetExecutionContext,
    embedding_model: EmbeddingRecommender,
    training_set: pd.DataFrame,  # the rows every baseline trains on
    behaviour_events: pd.DataFrame,
    items: pd.DataFrame,
    item_text_embedding: pd.DataFrame,
    storage: PlatformStorage,
    settings: RecommenderSettings,
) -> MaterializeResult:
    out = storage.layout()
    evaluation = evaluate_models(
        evaluation_split(behaviour_events, settings.test_days),
        training_set,
        model_items(items, item_text_embedding),
        embedding_model,
        settings,
        log=context.log.info,
    )
    write_evaluation(out, evaluation, settings.test_days)
    context.log.info("\n" + evaluation.markdown)
    table = evaluation.table
    return MaterializeResult(
        metadata={
            "evaluation": MetadataValue.md(evaluation.markdown),
            "by_segment": MetadataValue.md(
                evaluation.segments.to_markdown(index=False, floatfmt=".4f")
            ),
            "report": MetadataValue.path(str(out.reports / "evaluation.html")),
            **{f"ndcg@{K}_{name}": float(table.loc[name, f"ndcg@{K}"]) for name in table.index},
            "best_baseline": evaluation.best_baseline,
            "users_evaluated": int(table.loc["embedding", "users"]),
        }
    )
