"""Fetch the platform's features three ways: the Feast SDK, the HTTP feature server, and a
point-in-time training set. Run after `make demo` (or on any materialized data directory):

    RECSYS_DATA_DIR=$PWD/data .venv/bin/python examples/fetch_features.py \
        [--server http://127.0.0.1:6566] [--user u0000001] [--item i0000001]

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

REPO = Path(__file__).resolve().parents[1] / "feature_repo"


def with_sdk(user: str, item: str) -> dict:
    """Online features for ranking one (user, item) pair, with the plain Feast SDK."""
    store = FeatureStore(repo_path=str(REPO))  # reads feature_store.yaml and RECSYS_DATA_DIR
    return store.get_online_features(
        features=store.get_feature_service("online_ranking"),
        entity_rows=[{"user_id": user, "item_id": item}],
        full_feature_names=True,
    ).to_dict()


def over_http(server: str, user: str, item: str) -> tuple[int, dict]:
    """The same over HTTP: POST /get-online-features. Returns (status, body)."""
    body = {
        "feature_service": "online_ranking",
        "full_feature_names": True,
        "entities": {"user_id": [user], "item_id": [item]},
    }
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


def training_set(interactions: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time features for (user_id, item_id, event_timestamp) rows: each row sees the
    features as they were at its own time, never later."""
    store = FeatureStore(repo_path=str(REPO))
    return store.get_historical_features(
        entity_df=interactions,
        features=store.get_feature_service("recommender_training"),
        full_feature_names=True,
    ).to_df()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", default="http://127.0.0.1:6566")
    parser.add_argument("--user", default="u0000001")
    parser.add_argument("--item", default="i0000001")
    args = parser.parse_args()

    features = with_sdk(args.user, args.item)
    print("SDK:", {k: v[0] for k, v in list(features.items())[:8]}, "...")
    unknown = with_sdk("no-such-user", args.item)
    print("SDK, unknown user: user_behaviour__views =", unknown["user_behaviour__views"][0])
    try:
        status, body = over_http(args.server, args.user, args.item)
        names = body.get("metadata", {}).get("feature_names", [])
        values = [r["values"][0] for r in body.get("results", [])]
        print(f"HTTP {status}:", dict(list(zip(names, values, strict=False))[:8]), "...")
    except urllib.error.URLError as error:
        print(f"HTTP: no server at {args.server} ({error.reason}); start it as shown above")
    rows = pd.DataFrame(
        {
            "user_id": [args.user, args.user],
            "item_id": [args.item, args.item],
            "event_timestamp": pd.to_datetime(["2026-09-05 12:00", "2026-09-20 12:00"], utc=True),
        }
    )
    print(
        training_set(rows)[["event_timestamp", "user_behaviour__views", "user_behaviour__views_7d"]]
    )


if __name__ == "__main__":
    main()
