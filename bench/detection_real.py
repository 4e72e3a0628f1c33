"""The bot detector on a real export: the Taobao UserBehavior sample in ../shared/data.

    python -m bench.detection_real [--sample DIR] [--format taobao] [--top 15]

Lands the export through `source.json` (`"format": "taobao"`), cleans it with the platform's
assets, scores every user, and prints the flagged users with their reasons and the item
outliers. Saves bench/results/detection_<format>.json. There are no labels in a real export:
the figures say what was flagged and why, for a person to judge.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd
import polars as pl

from bench.detection import RESULTS, land_export
from bench.machine import machine_info
from dagster_project.detection.detector import detect_bots
from dagster_project.detection.items import item_outliers
from dagster_project.settings import layout

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "taobao_userbehavior"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sample", type=Path, default=SHARED)
    parser.add_argument("--format", default="taobao")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    if not args.sample.is_dir():
        raise SystemExit(f"{args.sample}: no such folder (the shared data samples)")

    with tempfile.TemporaryDirectory(prefix="detect-real-") as tmp:
        out = layout(Path(tmp))
        land_export(Path(tmp), args.sample, args.format)
        catalog = pl.read_parquet(
            out.table("items_clean"), columns=["item_id", "category", "price", "listed_at"]
        )
        events = pl.scan_parquet(out.table("events_clean") / "*.parquet").select(
            "user_id", "item_id", "event_type", "event_time", "query"
        )
        detection = detect_bots(events, catalog)
        scores = detection.users
        flagged_ids = pl.Series(scores.loc[scores["is_bot"], "user_id"].to_list(), dtype=pl.String)
        items = item_outliers(events, catalog, flagged_ids, detection.groups)

    flagged = scores[scores["is_bot"]].sort_values("bot_score", ascending=False)
    # The highest scores, flagged or not: what the detector found most suspicious, and why.
    top = scores.sort_values("bot_score", ascending=False).head(args.top)
    pd.set_option("display.max_colwidth", 200)
    print(
        f"{len(scores):,} users scored, {len(flagged)} flagged ({len(flagged) / len(scores):.1%})"
    )
    print(flagged["pattern"].value_counts().to_string())
    for r in top.itertuples():
        state = "FLAGGED" if r.is_bot else "not flagged"
        why = r.reasons or f"strongest pattern {r.strongest_pattern} at z={r.pattern_z:.1f}"
        print(f"- {r.user_id} ({state}): score {r.bot_score:.2f}, {r.events} events: {why}")
    outliers = items[items["is_outlier"]].sort_values("events", ascending=False)
    print(
        f"item outliers: {int(items['price_outlier'].sum())} price, "
        f"{int(items['popularity_spike'].sum())} popularity spikes, "
        f"{int(items['bot_driven'].sum())} bot-driven"
    )
    for r in outliers.head(5).itertuples():
        print(f"- {r.item_id} ({r.category}): {r.reasons}")
    path = RESULTS.with_name(f"detection_{args.format}.json")
    path.write_text(
        json.dumps(
            {
                "sample": str(args.sample),
                "machine": machine_info(),
                "users": len(scores),
                "flagged": len(flagged),
                "groups": len(detection.groups),
                "by_pattern": flagged["pattern"].value_counts().to_dict(),
                "score_quantiles": scores["bot_score"].quantile([0.5, 0.9, 0.99]).to_dict(),
                "top_flagged": top[
                    ["user_id", "bot_score", "events", "pattern", "reasons"]
                ].to_dict("records"),
                "item_outliers": {
                    "price": int(items["price_outlier"].sum()),
                    "popularity_spike": int(items["popularity_spike"].sum()),
                    "bot_driven": int(items["bot_driven"].sum()),
                    "top": outliers.head(10)[["item_id", "category", "events", "reasons"]].to_dict(
                        "records"
                    ),
                },
            },
            indent=2,
            default=str,
        )
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
