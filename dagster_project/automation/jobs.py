"""The platform's asset jobs: the daily refresh (ingest to Feast and the daily reports), the
weekly retrain and the daily model refresh between retrains. Every job that writes the data
directory carries `WRITES_DATA`, so the instance runs one at a time."""

from dagster import (
    AssetSelection,
    define_asset_job,
)

DAILY_GROUPS = (
    "ingest",
    "quality",
    "detection",
    "behaviour",
    "features",
    "feature_store",
    "reports",
)
RETRAIN_GROUPS = ("recommender", "evaluation")
# Assets that follow their inputs on their own: everything the daily job builds after ingest.
AUTOMATED_GROUPS = tuple(g for g in DAILY_GROUPS if g != "ingest")
MODEL_OUTPUTS = ("feast_model_outputs",)
LANDING_KINDS = ("events", "items")  # the landing sub-folders ingestion reads
# Every job that writes the data directory carries this tag; the instance (dagster.yaml, see
# cli.prepare_dagster_home) runs one such run at a time and queues the rest.
WRITES_DATA = {"recsys/writes": "data_dir"}

daily_selection = AssetSelection.groups(*DAILY_GROUPS) - AssetSelection.assets(*MODEL_OUTPUTS)
daily_refresh = define_asset_job(
    "daily_refresh",
    selection=daily_selection,
    tags=WRITES_DATA,
    description="Ingest new landing files, clean, detect bots, rebuild features, materialize "
    "the online store.",
)
weekly_retrain = define_asset_job(
    "weekly_retrain",
    tags=WRITES_DATA,
    selection=AssetSelection.groups(*RETRAIN_GROUPS) | AssetSelection.assets(*MODEL_OUTPUTS),
    description="Train the recommender on a fresh Feast training set, score, evaluate, and "
    "push embeddings and recommendations to Feast.",
)


daily_model_refresh = define_asset_job(
    "daily_model_refresh",
    tags=WRITES_DATA,
    selection=AssetSelection.groups("recommender") | AssetSelection.assets(*MODEL_OUTPUTS),
    config={"ops": {"embedding_model": {"config": {"warm_start": True}}}},
    description="Between weekly retrains: a fresh Feast training set, the saved model "
    "warm-started on it, new recommendations and vectors pushed to Feast.",
)
