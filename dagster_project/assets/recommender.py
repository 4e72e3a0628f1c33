"""Group recommender: point-in-time training set from Feast, the torch model, top-K recommendations."""

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    AssetIn,
    Config,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
    asset_check,
)

from dagster_project.assets._common import MODEL_IO, MODEL_ITEM_INPUTS, OWNERS, suite_check_result
from dagster_project.features.model_outputs import (
    recommendation_lists,
    served_user_vectors,
    vector_table,
)
from dagster_project.privacy import opted_out_users
from dagster_project.recommender.inputs import (
    MODEL_TRAINING_COLUMNS,
    SPLIT_COLUMNS,
    evaluation_split,
    model_config,
    model_items,
    point_in_time_features,
    trained_model,
)
from dagster_project.resources import (
    FeastResource,
    PlatformStorage,
    QualityResource,
    RecommenderSettings,
)
from dagster_project.storage import publish_to_shared, write_parquet_atomic
from models.embedding import EmbeddingRecommender

TRAINING_SERVICE = "recommender_training"


class ModelTrainingConfig(Config):
    # True: start from the saved model (the daily refresh between weekly retrains); a missing
    # or incompatible saved model falls back to a full retrain.
    warm_start: bool = False


@asset(
    group_name="recommender",
    owners=OWNERS,
    kinds={"feast", "parquet"},
    ins={"behaviour_events": AssetIn(metadata={"columns": SPLIT_COLUMNS})},
    deps=["feast_registry"],
    description="Interactions before the hold-out cutoff, with user and item features joined point-in-time "
    "by Feast get_historical_features (feature service recommender_training).",
)
def training_set(
    context: AssetExecutionContext,
    behaviour_events: pd.DataFrame,
    feast: FeastResource,
    settings: RecommenderSettings,
) -> Output[pd.DataFrame]:
    split = evaluation_split(behaviour_events, settings.test_days)
    entity_df = split.train.rename(columns={"event_time": "event_timestamp"})
    store = feast.store()
    context.log.info(
        f"training_set: joining the features of {len(entity_df):,} interactions point in time "
        "(Feast get_historical_features) ..."
    )
    frame = point_in_time_features(
        store, entity_df, TRAINING_SERVICE, progress=context.log.info
    ).rename(columns={"event_timestamp": "event_time"})
    context.log.info(f"training_set: {len(frame):,} interactions before {split.cutoff:%Y-%m-%d}")
    return Output(
        frame,
        metadata={
            "cutoff": split.cutoff.isoformat(),
            "users": frame["user_id"].nunique(),
            "items": frame["item_id"].nunique(),
        },
    )


@asset_check(
    asset=training_set, blocking=True, description="GX suite expectations/training_set.json."
)
def training_set_suite(
    context: AssetCheckExecutionContext, storage: PlatformStorage, quality: QualityResource
) -> AssetCheckResult:
    runner = quality.runner(storage)
    outcome = runner.validate_table(
        "training_set", storage.layout().table("training_set"), run_name=context.run.run_id
    )
    return suite_check_result(outcome)


@asset(
    group_name="recommender",
    owners=OWNERS,
    kinds={"pytorch"},
    io_manager_key=MODEL_IO,
    ins={
        **MODEL_ITEM_INPUTS,
        "training_set": AssetIn(metadata={"columns": MODEL_TRAINING_COLUMNS}),
    },
    description="Sequence-aware two-tower torch recommender, I(u,i) = e_u . e_i + b_i: e_u is a "
    "causal self-attention encoder over the user's events in time order (item vector, event "
    "type, time gap, position) plus user features; e_i joins an id embedding, the MiniLM text "
    "vector, category, price bucket and item features. Trained on the Feast training set: "
    "from scratch weekly, warm-started from the saved model daily (config warm_start).",
)
def embedding_model(
    context: AssetExecutionContext,
    config: ModelTrainingConfig,
    training_set: pd.DataFrame,
    items: pd.DataFrame,
    item_text_embedding: pd.DataFrame,
    storage: PlatformStorage,
    settings: RecommenderSettings,
) -> Output[EmbeddingRecommender]:
    earlier = None
    if config.warm_start:  # the model this asset saved before
        try:
            earlier = trained_model(storage.layout(), settings.device)
        except (FileNotFoundError, ValueError) as problem:
            context.log.warning(f"no saved model to warm-start from ({problem}): full retrain")
    model = EmbeddingRecommender(model_config(settings)).fit(
        training_set, model_items(items, item_text_embedding), warm_start=earlier
    )
    history = pd.DataFrame(model.history)
    start = f"warm start from {earlier.version}" if earlier is not None else "full retrain"
    context.log.info(f"model {model.version} ({start}, {model.fit_seconds:.0f} s)")
    if model.best_epoch == 0:
        context.log.warning("no trained epoch beat the start on the validation items")
    return Output(
        model,
        metadata={
            "start": start,
            "fit_seconds": round(model.fit_seconds, 1),
            "model_version": model.version,
            "device": str(model.device),
            "users": len(model.user_index),
            "items": len(model.item_ids),
            "loss": model.loss_used,
            "memory_form": model.memory_form,
            **model.memory_settings(),
            "best_epoch": model.best_epoch,
            "trained_share": model.trained_share,
            "trained_epochs_beat_start": model.best_epoch > 0,
            "history": MetadataValue.md(history.to_markdown(index=False)),
        },
    )


@asset(
    group_name="recommender",
    owners=OWNERS,
    kinds={"parquet", "pytorch"},
    deps=["model_vectors"],
    description="Top-K items per user (already-seen items removed) with scores and the model "
    "version, scored from the user vectors model_vectors wrote for Feast; also one list row "
    "per user for the Feast view user_recommendations. Users on the opt-out list "
    "(privacy/opt_out.txt) get none.",
)
def recommendations(
    context: AssetExecutionContext,
    embedding_model: EmbeddingRecommender,
    storage: PlatformStorage,
    settings: RecommenderSettings,
) -> Output[pd.DataFrame]:
    out, model = storage.layout(), embedding_model
    version = model.version
    if served_user_vectors(out, model):
        context.log.info("recommendations: scored from the user vectors served by Feast")
    else:
        context.log.info(
            f"recommendations: no stored user vectors of {version} for every user it knows; "
            "encoding the histories"
        )
    opted_out = opted_out_users(out)
    frame = model.recommend(model.user_index.difference(opted_out), settings.top_k)
    frame["model_version"] = version
    lists = recommendation_lists(frame, version, model.trained_until)
    source = write_parquet_atomic(lists, out.asset_table("user_recommendations"))  # Feast's
    publish_to_shared(out.root, source)
    context.log.info(f"recommendations: top {settings.top_k} for {len(lists):,} users by {version}")
    return Output(
        frame,
        metadata={
            "users": frame["user_id"].nunique(),
            "distinct_items": frame["item_id"].nunique(),
            "model_version": version,
            "as_of": model.trained_until.isoformat(),
            "opted_out_users": len(opted_out & set(model.user_index)),
        },
    )


@asset(
    group_name="recommender",
    owners=OWNERS,
    kinds={"parquet", "pytorch"},
    description="The trained model's user vectors e_u and item vectors e_i with biases b_i, "
    "for the Feast views user_embedding and item_embedding.",
)
def model_vectors(
    embedding_model: EmbeddingRecommender, storage: PlatformStorage
) -> MaterializeResult:
    out, model = storage.layout(), embedding_model
    version, as_of = model.version, model.trained_until
    users = vector_table(model.user_vectors(), version, as_of)
    items = vector_table(model.item_vectors(), version, as_of)
    user_path = write_parquet_atomic(users, out.asset_table("user_embedding"))  # Feast's
    path = write_parquet_atomic(items, out.asset_table("item_embedding"))  # sources
    publish_to_shared(out.root, user_path, path)
    return MaterializeResult(
        metadata={
            "users": len(users),
            "items": len(items),
            "dimensions": model.config.dim + model.memory.rank,  # the served vectors' width
            "model_version": version,
            "as_of": as_of.isoformat(),
            "path": MetadataValue.path(str(path.parent)),
        }
    )
