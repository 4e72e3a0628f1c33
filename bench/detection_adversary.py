"""Benchmark: bots written without sight of the detector, injected into real and generated traffic.

    python -m bench.detection_adversary [--seeds 1 2 3] [--share 0.04]
                                        [--rates 0.01 0.03 0.10] [--skip-generated]

The designs are `devtools/independent_bots.py` (eight designs in four classes: accounts acting
in lockstep, buy-now scalpers, slow catalog crawlers, copies of real sessions), written by
someone who read neither the detector nor the generator.

- Taobao: the real UserBehavior sample in ../shared/data is landed through its adapter and
  cleaned by the platform's assets; each seed adds `--share` bot accounts (as a share of the
  real users) to the clean events, and the detector scores everything.
- Generated shops: a `bench` shop (20k users, 400k events, with the generator's own bots and
  hard negatives) per bot rate, with the independent designs added at that rate.

Per class and design: recall at the flag threshold, recall at the score that flags 1% of the
real (or human) users, and the share of caught bots whose pattern names their class; the real
users' false-positive rate; for generated shops also each hard negative's flagged share and
the generator's own bot types; and the copies' recall by how many distinct steps the copied
sessions hold (a replay of a two-step session carries too little evidence to tell from chance,
which is where the copy class's recall is lost). Every figure is given for this detector and, side by side, for
detector 1.0 (its per-user patterns and isolation forest alone: `profile_score`), from the
same run. Results: bench/results/detection_adversary.json, with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from bench.detection import bench_shop, land_export
from bench.machine import machine_info
from dagster_project.contracts import SESSION_GAP
from dagster_project.detection.bots import BOT_THRESHOLD
from dagster_project.detection.detector import detect_bots
from dagster_project.pseudonyms import pseudonymise
from dagster_project.settings import layout
from devtools.independent_bots import DESIGNS, event_seconds, independent_bot_events

RESULTS = Path(__file__).parent / "results" / "detection_adversary.json"
TAOBAO = Path(__file__).resolve().parents[2] / "shared" / "data" / "taobao_userbehavior"
PATTERN_OF_CLASS = {
    "lockstep": {"coordinated_group"},
    "scalper": {"buy_now_scalping", "checkout_sniping"},
    "crawler": {"listing_crawl", "scripted_crawl", "catalog_sweep"},
    "copy": {"copied_sessions"},
}
SCORES = {"now": "bot_score", "detector_1.0": "profile_score"}
EVENT_COLUMNS = ["user_id", "item_id", "event_type", "event_time", "query"]


def _tables(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = layout(root)
    events = pl.read_parquet(
        out.table("events_clean") / "*.parquet", columns=EVENT_COLUMNS
    ).to_pandas()
    catalog = pl.read_parquet(out.table("items_clean"), columns=["item_id", "category", "price"])
    return events, catalog.to_pandas()


def _land_taobao(root: Path) -> None:
    # a throw-away copy in a temporary folder: the development pseudonym key is enough
    os.environ.setdefault("RECSYS_ALLOW_DEVELOPMENT_KEY", "1")
    land_export(root, TAOBAO, "taobao")


def class_figures(scores: pd.DataFrame, labels: pd.DataFrame, people: pd.Series) -> dict:
    """Recall per class and design (at the threshold and at 1% FPR of `people`), the share of
    caught bots named by their class's pattern, and the people's FPR, for both detectors."""
    s = scores.merge(labels, on="user_id", how="left")
    out: dict = {}
    for name, column in SCORES.items():
        human_scores = s.loc[people.to_numpy(), column]
        cut = float(np.quantile(human_scores, 0.99))
        flagged = s[column] >= BOT_THRESHOLD
        figures = {"people_fpr": float(flagged[people.to_numpy()].mean()), "score_at_1pct": cut}
        for group_key in ("bot_class", "design"):
            per = {}
            for key, rows in s[s[group_key].notna()].groupby(group_key):
                caught = rows[column] >= BOT_THRESHOLD
                entry = {
                    "accounts": len(rows),
                    "recall": float(caught.mean()),
                    "recall_at_1pct_fpr": float((rows[column] > cut).mean()),
                }
                if name == "now":
                    wanted = rows["bot_class"].map(PATTERN_OF_CLASS)
                    named = [p in w for p, w in zip(rows["pattern"], wanted, strict=True)]
                    entry["pattern_matches_class"] = (
                        float(np.mean(np.array(named)[caught.to_numpy()])) if caught.any() else None
                    )
                per[str(key)] = entry
            figures[f"per_{group_key}"] = per
        out[name] = figures
    return out


COPY_STEP_BUCKETS = [(0, 2), (3, 4), (5, 8), (9, None)]  # None: no upper end


def copy_steps(bots: pd.DataFrame, labels: pd.DataFrame) -> pd.Series:
    """Per copying account, the distinct steps (consecutive pairs of distinct items within a
    30-minute session) of what it replayed: the evidence a copy can carry at most."""
    copiers = labels.loc[labels["bot_class"] == "copy", "user_id"]
    ev = bots[bots["user_id"].isin(copiers)].sort_values(["user_id", "event_time"])
    t = pd.Series(event_seconds(ev["event_time"]), index=ev.index)
    same_user = ev["user_id"].eq(ev["user_id"].shift())
    session = (~same_user | (t.diff() > SESSION_GAP.total_seconds())).cumsum()
    moved = ~(same_user & session.eq(session.shift()) & ev["item_id"].eq(ev["item_id"].shift()))
    walk = pd.DataFrame({"user_id": ev["user_id"], "session": session, "item": ev["item_id"]})
    walk = walk[moved.to_numpy()]
    walk["prev"] = walk.groupby("session")["item"].shift()
    steps = walk.dropna(subset=["prev"]).drop_duplicates(["session", "prev", "item"])
    return steps.groupby("user_id").size().reindex(copiers, fill_value=0)


def copy_recall_by_steps(bots: pd.DataFrame, labels: pd.DataFrame, scores: pd.DataFrame) -> dict:
    """Copy recall at the threshold by how many distinct steps the copied sessions hold: a
    replay of a two-step session carries too little to tell it from chance."""
    steps = copy_steps(bots, labels)
    flagged = set(scores.loc[scores["bot_score"] >= BOT_THRESHOLD, "user_id"])
    out = {}
    for lo, hi in COPY_STEP_BUCKETS:
        accounts = steps[(steps >= lo) & ((steps <= hi) if hi is not None else True)].index
        key = f"{lo}+" if hi is None else f"{lo}-{hi}"
        caught = [u in flagged for u in accounts]
        out[key] = {"accounts": len(accounts), "recall": float(np.mean(caught)) if caught else None}
    return out


def taobao_runs(seeds: list[int], share: float) -> list[dict]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-adversary-taobao-") as tmp:
        _land_taobao(Path(tmp))
        real, catalog = _tables(Path(tmp))
    for seed in seeds:
        bots, labels = independent_bot_events(real, catalog, share, seed)
        events = pd.concat([real, bots[EVENT_COLUMNS]], ignore_index=True)
        t0 = time.perf_counter()
        detection = detect_bots(events, catalog)
        scores = detection.users
        people = ~scores["user_id"].isin(labels["user_id"])
        run = {"seed": seed, "bot_share": share, "real_users": int(people.sum())}
        run.update(class_figures(scores, labels, people))
        run["copy_recall_by_steps"] = copy_recall_by_steps(bots, labels, scores)
        run["groups"] = len(detection.groups)
        run["score_s"] = round(time.perf_counter() - t0, 2)
        runs.append(run)
        _say("taobao", run)
    return runs


def generated_runs(rates: list[float], seed: int) -> list[dict]:
    from dagster_project.sources.synthetic.traffic import BOT_TYPES, HARD_NEGATIVES

    runs = []
    for rate in rates:
        with tempfile.TemporaryDirectory(prefix="bench-adversary-shop-") as tmp:
            root = Path(tmp)
            bench_shop(root, rate, seed)
            real, catalog = _tables(root)
            truth = pd.read_parquet(layout(root).ground_truth / "traffic_labels.parquet")
        truth["user_id"] = pseudonymise(truth["user_id"])
        bots, labels = independent_bot_events(real, catalog, rate, seed)
        detection = detect_bots(pd.concat([real, bots[EVENT_COLUMNS]], ignore_index=True), catalog)
        scores = detection.users
        kind = scores["user_id"].map(truth.set_index("user_id")["kind"])
        humans = kind.isna() & ~scores["user_id"].isin(labels["user_id"])
        run = {"bot_rate": rate, "seed": seed, "humans": int(humans.sum())}
        run.update(class_figures(scores, labels, humans))
        run["copy_recall_by_steps"] = copy_recall_by_steps(bots, labels, scores)
        for name, column in SCORES.items():
            flagged = scores[column] >= BOT_THRESHOLD
            run[name]["hard_negatives_flagged"] = {
                k: float(flagged[kind == k].mean()) for k in HARD_NEGATIVES
            }
            run[name]["generator_bot_recall"] = {
                k: float(flagged[kind == k].mean()) for k in BOT_TYPES
            }
        run["groups"] = len(detection.groups)
        runs.append(run)
        _say(f"shop {rate:.0%}", run)
    return runs


def _say(where: str, run: dict) -> None:
    now, old = run["now"], run["detector_1.0"]
    parts = [
        f"{c} {now['per_bot_class'][c]['recall']:.2f} (was {old['per_bot_class'][c]['recall']:.2f})"
        for c in sorted(now["per_bot_class"])
    ]
    print(
        f"[adversary] {where} seed {run['seed']}: recall {', '.join(parts)}; "
        f"people FPR {now['people_fpr']:.2%} (was {old['people_fpr']:.2%})",
        flush=True,
    )


def summarize(runs: list[dict]) -> dict:
    """Per class, the worst recall over runs (both detectors) and the worst people FPR."""
    out = {}
    for name in SCORES:
        per_class = {}
        for c in sorted(set(DESIGNS.values())):
            per_class[c] = {
                "recall_min": min(r[name]["per_bot_class"][c]["recall"] for r in runs),
                "recall_at_1pct_fpr_min": min(
                    r[name]["per_bot_class"][c]["recall_at_1pct_fpr"] for r in runs
                ),
            }
        out[name] = {
            "per_class": per_class,
            "people_fpr_max": max(r[name]["people_fpr"] for r in runs),
        }
    out["copy_recall_by_steps"] = _pooled_copy_recall(runs)
    return out


def _pooled_copy_recall(runs: list[dict]) -> dict:
    """The runs' copy recall by steps, pooled over their accounts."""
    pooled = {}
    for key in runs[0]["copy_recall_by_steps"]:
        parts = [r["copy_recall_by_steps"][key] for r in runs]
        n = sum(p["accounts"] for p in parts)
        hits = sum(p["accounts"] * p["recall"] for p in parts if p["recall"] is not None)
        pooled[key] = {"accounts": n, "recall": round(hits / n, 3) if n else None}
    return pooled


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--share", type=float, default=0.04)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.03, 0.10])
    parser.add_argument("--skip-generated", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    result: dict = {"benchmark": "detection_adversary", "threshold": BOT_THRESHOLD}
    taobao = taobao_runs(args.seeds, args.share)
    result["taobao"] = {"summary": summarize(taobao), "runs": taobao}
    if not args.skip_generated:
        shops = generated_runs(args.rates, args.seeds[0])
        result["generated"] = {"summary": summarize(shops), "runs": shops}
    result["bench_seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = machine_info()
    print(
        json.dumps(
            {k: v["summary"] for k, v in result.items() if isinstance(v, dict) and "summary" in v},
            indent=2,
        )
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str))
    print(f"[adversary] saved {RESULTS}")


if __name__ == "__main__":
    main()
