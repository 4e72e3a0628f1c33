"""The platform's data directory, for the Feast repo and the platform alike (one resolver)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "RECSYS_DATA_DIR"
# The Feast configuration file in use (the profile): feature_store.yaml (SQLite, DuckDB),
# feature_store.redis.yaml, feature_store.redis_cluster.yaml or feature_store.spark.yaml
FEAST_CONFIG_ENV = "RECSYS_FEAST_CONFIG"
CHECKOUT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The data directory: `$RECSYS_DATA_DIR`, else `data/` inside the checkout."""
    return Path(os.environ.get(DATA_DIR_ENV) or CHECKOUT / "data").resolve()
