"""Benchmark: bot detection quality per bot type over bot rates and seeds, and scoring speed.

    python -m bench.detection [--rates 0.01 0.03 0.05 0.10] [--seeds 1 2 3]
                              [--speed-root DIR] [--skip-speed]

For every (bot rate, seed) a `bench` shop is generated (20k users, 400k events, 30 days),
ingested and cleaned by the platform's own assets, and scored by the detector, which sees
only the clean events and the catalog. Labels are read afterwards, only to measure:

- per bot type: recall, and precision of the users the detector assigns to that type's
  pattern (crawler -> scripted_crawl, click_farm -> click_farm, ...);
- humanlike bots: recall at the score threshold that flags 1% of humans, and at the default;
- hard negatives: share flagged per kind;
- a bot design not written for the generator (devtools/foreign_bots.py), mixed into the first
  run: recall per design.

Speed: features, lockstep groups, copies and scores for the large preset's clean events (10M
rows), timed on this machine. Results: bench/results/detection.json, with the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from bench.machine import machine_info
from dagster_project.detection.bots import BOT_THRESHOLD
from dagster_project.detection.detector import detect_bots
from dagster_project.pseudonyms import pseudonymise
from dagster_project.settings import layout
from dagster_project.sources.synthetic.generator import GeneratorConfig, generate, preset
from dagster_project.sources.synthetic.traffic import BOT_TYPES, HARD_NEGATIVES, TrafficMix
from devtools.foreign_bots import foreign_bot_events

RESULTS = Path(__file__).parent / "results" / "detection.json"
PATTERN_OF_TYPE = {  # the detector's patterns that name each planted type
    "crawler": {"scripted_crawl", "catalog_sweep"},
    "click_farm": {"click_farm"},
    "cart_stuffer": {"cart_hoarding"},
    "price_scraper": {"search_scraping"},
    "humanlike": {"scheduled_automation"},
}
SPEED_EVENTS = 10_000_000
CLEAN_ASSETS = {
    "raw_events",
    "raw_items",
    "items_clean",
    "quarantine_items",
    "events_clean",
    "quarantine_events",
}


def clean_tables(root: Path) -> None:
    """Materialize ingestion and cleaning with the platform's assets, as the pipeline does."""
    from dagster import DagsterInstance, materialize

    from dagster_project.definitions import all_assets, every_event_day, platform_resources

    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            all_assets,
            selection=sorted(CLEAN_ASSETS),
            instance=instance,
            resources=platform_resources(str(root)),
            tags=every_event_day(root),  # every event day, in one run
        )
    if not result.success:
        raise RuntimeError(f"cleaning failed under {root}")


def score_tables(
    root: Path, extra_events: pd.DataFrame | None = None, user_share: float = 1.0
) -> pd.DataFrame:
    """The detector on a materialized root's clean events (plus optional extra events).

    `user_share` < 1 keeps a hash-chosen share of the users, with all of their events.
    """
    out = layout(root)
    events = pl.scan_parquet(out.table("events_clean") / "*.parquet").select(
        "user_id", "item_id", "event_type", "event_time", "query"
    )
    if user_share < 1:
        events = events.filter(pl.col("user_id").hash(seed=0) % 10_000 < int(user_share * 10_000))
    if extra_events is not None:
        extra = pl.from_pandas(
            extra_events[["user_id", "item_id", "event_type", "event_time", "query"]]
        )
        events = pl.concat([events, extra.lazy().cast(events.collect_schema())], how="vertical")
    catalog = pl.read_parquet(out.table("items_clean"), columns=["item_id", "category", "price"])
    return detect_bots(events, catalog).users


def quality_figures(scores: pd.DataFrame, labels: pd.DataFrame) -> dict:
    """Per-type recall and precision, humanlike recall at 1% human FPR, hard negatives flagged."""
    s = scores.merge(labels, on="user_id", how="left")
    s["kind"] = s["kind"].fillna("human")
    bot = s["kind"].isin(BOT_TYPES)
    plain_human = s["kind"] == "human"
    per_type = {}
    for kind in BOT_TYPES:
        truth = s["kind"] == kind
        assigned = s["is_bot"] & s["pattern"].isin(PATTERN_OF_TYPE[kind])
        per_type[kind] = {
            "users": int(truth.sum()),
            "recall": float((truth & s["is_bot"]).sum() / max(truth.sum(), 1)),
            "precision": float((assigned & truth).sum() / assigned.sum())
            if assigned.any()
            else None,
            "precision_any_bot": float((assigned & bot).sum() / assigned.sum())
            if assigned.any()
            else None,
        }
    # Operating points on the humans' own score distribution (most humans score exactly 0,
    # so "> the 99th percentile" is lenient; the 99.9th and the default threshold are not).
    cut = float(np.quantile(s.loc[plain_human, "bot_score"], 0.99))
    cut_strict = float(np.quantile(s.loc[plain_human, "bot_score"], 0.999))
    humanlike = s["kind"] == "humanlike"
    flagged = s["is_bot"]
    return {
        "per_type": per_type,
        "humanlike_recall_at_1pct_fpr": float((s.loc[humanlike, "bot_score"] > cut).mean()),
        "humanlike_recall_at_0.1pct_fpr": float(
            (s.loc[humanlike, "bot_score"] > cut_strict).mean()
        ),
        "humanlike_recall_at_threshold": float(flagged[humanlike].mean()),
        "human_score_p99": cut,
        "human_score_p99.9": cut_strict,
        "human_fpr_at_threshold": float(flagged[plain_human].mean()),
        "hard_negatives_flagged": {
            k: float(flagged[s["kind"] == k].mean()) for k in HARD_NEGATIVES
        },
        "precision_all": float((flagged & bot).sum() / max(flagged.sum(), 1)),
        "recall_all": float((flagged & bot).sum() / max(bot.sum(), 1)),
    }


def land_export(root: Path, sample: Path, fmt: str) -> None:
    """Land a real export's files (`sample`, read through the `fmt` adapter) under `root`
    and clean them with the platform's assets."""
    out = layout(root)
    out.landing.mkdir(parents=True)
    for f in sample.iterdir():
        if f.is_file():
            (out.landing / f.name).symlink_to(f.resolve())
    (out.landing / "source.json").write_text(json.dumps({"format": fmt}))
    clean_tables(root)


def bench_shop(root: Path, rate: float, seed: int) -> GeneratorConfig:
    """Generate the `bench` shop (20k users, 5k items, 400k events, bots at `rate`) under
    `root` and clean it with the platform's assets; returns its config."""
    cfg = preset(
        "default",
        preset="bench",
        n_users=20_000,
        n_items=5_000,
        n_events=400_000,
        seed=seed,
        traffic=TrafficMix().with_bot_rate(rate),
    )
    generate(cfg, layout(root), progress=False)
    clean_tables(root)
    return cfg


def run_quality(rates: list[float], seeds: list[int]) -> list[dict]:
    runs = []
    for rate in rates:
        for seed in seeds:
            with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmp:
                root = Path(tmp)
                cfg = bench_shop(root, rate, seed)
                labels = pd.read_parquet(layout(root).ground_truth / "traffic_labels.parquet")
                labels["user_id"] = pseudonymise(labels["user_id"])  # tables hold pseudonyms
                t0 = time.perf_counter()
                scores = score_tables(root)
                figures = quality_figures(scores, labels)
                run = {"bot_rate": rate, "seed": seed, "score_s": time.perf_counter() - t0}
                run.update(figures)
                if not runs:  # the foreign design, mixed into the first run
                    catalog = pd.read_parquet(layout(root).table("items_clean"))
                    fb, fb_labels = foreign_bot_events(catalog, cfg.start, cfg.n_days, 50, seed)
                    mixed = score_tables(root, fb)
                    fl = mixed.merge(fb_labels, on="user_id")
                    run["foreign_recall"] = fl.groupby("design")["is_bot"].mean().to_dict()
                    plain = mixed[
                        ~mixed["user_id"].isin(labels["user_id"])
                        & ~mixed["user_id"].isin(fb_labels["user_id"])
                    ]
                    run["foreign_run_human_fpr"] = float(plain["is_bot"].mean())
                runs.append(run)
                worst = min(v["recall"] for v in figures["per_type"].values())
                print(
                    f"[detect] rate {rate:.0%} seed {seed}: min recall {worst:.3f}, "
                    f"humanlike@1%FPR {figures['humanlike_recall_at_1pct_fpr']:.3f}, "
                    f"hard negatives flagged {max(figures['hard_negatives_flagged'].values()):.3%}",
                    flush=True,
                )
    return runs


def summarize(runs: list[dict]) -> dict:
    """Worst and mean figures per bot type over every run."""
    summary = {}
    for kind in BOT_TYPES:
        recall = [r["per_type"][kind]["recall"] for r in runs]
        precision = [
            r["per_type"][kind]["precision"]
            for r in runs
            if r["per_type"][kind]["precision"] is not None
        ]
        summary[kind] = {
            "recall_min": min(recall),
            "recall_mean": float(np.mean(recall)),
            "precision_min": min(precision) if precision else None,
            "precision_mean": float(np.mean(precision)) if precision else None,
        }
    summary["humanlike_recall_at_1pct_fpr_min"] = min(
        r["humanlike_recall_at_1pct_fpr"] for r in runs
    )
    summary["humanlike_recall_at_0.1pct_fpr_min"] = min(
        r["humanlike_recall_at_0.1pct_fpr"] for r in runs
    )
    summary["humanlike_recall_at_threshold_min"] = min(
        r["humanlike_recall_at_threshold"] for r in runs
    )
    summary["hard_negatives_flagged_max"] = {
        k: max(r["hard_negatives_flagged"][k] for r in runs) for k in HARD_NEGATIVES
    }
    summary["human_fpr_max"] = max(r["human_fpr_at_threshold"] for r in runs)
    return summary


def run_speed(root: Path | None) -> dict:
    """Features + scores for 10M of the large preset's clean events (whole users); the large
    preset is generated and cleaned first when `root` holds no clean events."""
    if root is None or not (layout(root).table("events_clean")).exists():
        root = Path(root or tempfile.mkdtemp(prefix="bench-detect-large-"))
        generate(preset("large"), layout(root))
        clean_tables(root)
    total = (
        pl.scan_parquet(layout(root).table("events_clean") / "*.parquet")
        .select(pl.len())
        .collect()
        .item()
    )
    share = min(1.0, SPEED_EVENTS / total)  # score 10M events: a share of the users, whole
    t0 = time.perf_counter()
    scores = score_tables(root, user_share=share)
    seconds = time.perf_counter() - t0
    rows = int(scores["events"].sum())
    return {
        "events": rows,
        "events_in_table": total,
        "users": len(scores),
        "seconds": round(seconds, 2),
        "events_per_second": round(rows / seconds),
        "flagged_users": int(scores["is_bot"].sum()),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.03, 0.05, 0.10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--speed-root", type=Path, default=None)
    parser.add_argument("--skip-speed", action="store_true", help="keep the saved speed figures")
    parser.add_argument(
        "--only-speed", action="store_true", help="re-measure speed, keep the saved quality runs"
    )
    args = parser.parse_args()

    # Keep the other half of a saved result (quality runs or speed) when re-measuring one.
    result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result.update({"benchmark": "detection", "threshold": BOT_THRESHOLD, "machine": machine_info()})
    if not args.only_speed:
        runs = run_quality(args.rates, args.seeds)
        result.update({"summary": summarize(runs), "runs": runs})
        print(json.dumps(result["summary"], indent=2))
    if not args.skip_speed:
        result["speed"] = run_speed(args.speed_root)
        print(f"[detect] speed: {result['speed']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str))
    print(f"[detect] saved {RESULTS}")


if __name__ == "__main__":
    main()
