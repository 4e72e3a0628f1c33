"""Fetch the platform's features and recommendations three ways: the Feast SDK, the HTTP
feature server, and a point-in-time training set. Run after `make demo` (or on any
materialized data directory):

    RECSYS_DATA_DIR=$PWD/data .venv/bin/python examples/fetch_features.py \
        [--server http://127.0.0.1:6566] [--user p7b2620b048a9f82f] [--item i0000001]

User ids in Feast are pseudonyms: `python -m dagster_project.cli pseudonym u0000001`.

Start the server first for the HTTP part:
    RECSYS_DATA_DIR=$PWD/data .venv/bin/python -m dagster_project.feature_server
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
from feast import FeatureStore

from dagster_project.settings import layout
from dagster_project.sources.manifest import source_window

REPO = Path(__file__).resolve().parents[1] / "feature_repo"


def with_sdk(service: str, entity_rows: list[dict]) -> dict:
    """Online values of a feature service for some entities, with the plain Feast SDK:
    `online_ranking` for (user_id, item_id) pairs, `recommendations` for user_ids."""
    store = FeatureStore(repo_path=str(REPO))  # reads feature_store.yaml and RECSYS_DATA_DIR
    return store.get_online_features(
        features=store.get_feature_service(service),
        entity_rows=entity_rows,
        full_feature_names=True,
    ).to_dict()


def over_http(server: str, service: str, entities: dict[str, list]) -> tuple[int, dict]:
    """The same over HTTP: POST /get-online-features. Returns (status, body)."""
    body = {"feature_service": service, "full_feature_names": True, "entities": entities}
    request = urllib.request.Request(
        f"{server}/get-online-features",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:  # 4xx: the request was wrong, and says why
        return error.code, json.loads(error.read() or b"{}")


def by_name(body: dict) -> dict[str, dict]:
    """An HTTP answer as {feature name: {"values": [...], "statuses": [...]}}."""
    return dict(zip(body["metadata"]["feature_names"], body["results"], strict=True))


def training_set(
    interactions: pd.DataFrame, features: str | list[str] = "recommender_training"
) -> pd.DataFrame:
    """Point-in-time values for (user_id[, item_id], event_timestamp) rows: each row sees the
    features as they were at its own time, never later. `features` is a feature service
    name or a list of "view:feature" references."""
    store = FeatureStore(repo_path=str(REPO))
    return store.get_historical_features(
        entity_df=interactions,
        features=store.get_feature_service(features) if isinstance(features, str) else features,
        full_feature_names=True,
    ).to_df()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", default="http://127.0.0.1:6566")
    parser.add_argument("--user", default="p7b2620b048a9f82f", help="a pseudonymous user id")
    parser.add_argument("--item", default="i0000001")
    parser.add_argument(
        "--at",
        default=None,
        help="time for the point-in-time recommendations (default: noon of the data's last day)",
    )
    args = parser.parse_args()
    start, end = source_window(layout().landing)  # the data set's days (the demo's end yesterday)
    at = pd.Timestamp(args.at, tz="UTC") if args.at else end - pd.Timedelta(hours=12)
    pair = {"user_id": args.user, "item_id": args.item}

    features = with_sdk("online_ranking", [pair])
    print("SDK ranking features:", {k: v[0] for k, v in features.items()})
    recs = with_sdk("recommendations", [{"user_id": args.user}])
    print("SDK recommendations:", recs["user_recommendations__item_ids"][0])
    print("   by model", recs["user_recommendations__model_version"][0])
    unknown = with_sdk("recommendations", [{"user_id": "no-such-user"}])
    print("SDK, unknown user:", unknown["user_recommendations__item_ids"][0])
    try:
        status, body = over_http(args.server, "online_ranking", {k: [v] for k, v in pair.items()})
        print(
            f"HTTP {status} ranking features:",
            {k: v["values"][0] for k, v in by_name(body).items()},
        )
        status, body = over_http(args.server, "recommendations", {"user_id": [args.user]})
        print(f"HTTP {status} recommendations:", by_name(body)["user_recommendations__item_ids"])
    except urllib.error.URLError as error:
        print(f"HTTP: no server at {args.server} ({error.reason}); start it as shown above")
    rows = pd.DataFrame(
        {
            "user_id": [args.user, args.user],
            "item_id": [args.item, args.item],
            "event_timestamp": [start + pd.Timedelta(days=d, hours=12) for d in (4, 19)],
        }
    )
    print(
        training_set(rows)[["event_timestamp", "user_behaviour__views", "user_behaviour__views_7d"]]
    )
    served = training_set(
        pd.DataFrame({"user_id": [args.user], "event_timestamp": [at]}),
        ["user_recommendations:item_ids", "user_recommendations:model_version"],
    )
    print(
        f"Recommendations the user would have been served at {at:%Y-%m-%d %H:%M} (offline store):"
    )
    print(served.iloc[0].to_dict())


if __name__ == "__main__":
    main()
