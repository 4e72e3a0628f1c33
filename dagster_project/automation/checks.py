"""Freshness checks: the online features older than 26 hours, or the model outputs older than
8 days, warn."""

from datetime import timedelta

from dagster import (
    build_last_update_freshness_checks,
)

freshness_checks = [
    *build_last_update_freshness_checks(
        assets=["feast_online", "user_features", "item_features"],
        lower_bound_delta=timedelta(hours=26),
    ),
    *build_last_update_freshness_checks(
        assets=["recommendations", "feast_model_outputs"],
        lower_bound_delta=timedelta(days=8),
    ),
]
