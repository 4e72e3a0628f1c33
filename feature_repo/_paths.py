"""Where the feature assets write their Parquet files, and which offline store reads them
(shared by the definition modules)."""

import os
from pathlib import Path

import yaml

from recsys_feast.paths import FEAST_CONFIG_ENV, data_dir

DATA_DIR = data_dir()
FEATURES_DIR = DATA_DIR / "features"
REPO_DIR = Path(__file__).resolve().parent


def offline_store_type() -> str:
    """The offline store of the configuration $RECSYS_FEAST_CONFIG names (default
    feature_store.yaml): the data sources are Spark sources when it is `spark`."""
    config = REPO_DIR / (os.environ.get(FEAST_CONFIG_ENV) or "feature_store.yaml")
    if not config.is_file():
        raise FileNotFoundError(f"${FEAST_CONFIG_ENV} names {config}, which does not exist")
    return str((yaml.safe_load(config.read_text()).get("offline_store") or {}).get("type", ""))
