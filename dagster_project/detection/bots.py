"""A first bot score per user from what a real export holds: timing, breadth and repetition.

Each traffic feature is turned into a robust z-score (median / MAD over all users); the
strongest evidence, damped for users with few events, maps to a bot score in [0, 1].
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DETECTOR_VERSION = "robust-z-0.1"
BOT_THRESHOLD = 0.5
MIN_EVENTS_FOR_EVIDENCE = 30


def user_traffic_features(events: pd.DataFrame) -> pd.DataFrame:
    """Per user: volume, event rate, timing regularity and item repetition.

    `events` needs user_id, item_id, event_type and event_time (UTC). Rates are per active
    minute (the sum of gaps shorter than 30 minutes, at least one minute).
    """
    ev = events[["user_id", "item_id", "event_type", "event_time"]].sort_values(
        ["user_id", "event_time"], kind="stable"
    )
    t = ev["event_time"].astype("datetime64[ns, UTC]").astype("int64").to_numpy() / 1e9
    same_user = np.r_[False, ev["user_id"].to_numpy()[1:] == ev["user_id"].to_numpy()[:-1]]
    gap = np.where(same_user, np.r_[0.0, np.diff(t)], np.nan)
    ev = ev.assign(gap=gap, active_gap=np.where(gap < 1800, gap, np.nan))
    g = ev.groupby("user_id", sort=True)
    views = ev[ev["event_type"] == "view"].groupby("user_id")
    out = pd.DataFrame(
        {
            "events": g.size(),
            "distinct_items": g["item_id"].nunique(),
            "active_minutes": (g["active_gap"].sum() / 60).clip(lower=1.0),
            "gap_mean": g["active_gap"].mean(),
            "gap_std": g["active_gap"].std(),
            "views": views.size(),
            "distinct_viewed_items": views["item_id"].nunique(),
        }
    ).fillna({"views": 0, "distinct_viewed_items": 0})
    out["events_per_minute"] = out["events"] / out["active_minutes"]
    out["gap_cv"] = (out["gap_std"] / out["gap_mean"]).fillna(1.0)
    out["views_per_item"] = out["views"] / out["distinct_viewed_items"].clip(lower=1)
    out["top_item_share"] = (
        ev.groupby(["user_id", "item_id"]).size().groupby(level=0).max() / out["events"]
    )
    return out.drop(columns=["gap_std"]).reset_index()


MIN_SCALE = 0.25  # log units: when most users share one value the MAD is 0; never divide by less


def _robust_z(x: pd.Series) -> pd.Series:
    median = x.median()
    mad = (x - median).abs().median() * 1.4826
    return (x - median) / max(mad, MIN_SCALE)


def score_users(features: pd.DataFrame, window: str = "all") -> pd.DataFrame:
    """Bot score in [0, 1], the flag at `BOT_THRESHOLD`, and the top reasons in words."""
    f = features
    evidence = (
        pd.DataFrame(
            {
                "fast": _robust_z(np.log1p(f["events_per_minute"])),
                "regular": _robust_z(-np.log(f["gap_cv"].clip(lower=1e-3))),
                "repetitive": _robust_z(np.log(f["views_per_item"].clip(lower=1.0))),
            }
        )
        .clip(lower=0)
        .fillna(0)
    )
    # Re-viewing the same items is normal comparison shopping; at machine speed it is a farm.
    evidence["repetitive"] = np.sqrt(evidence["repetitive"] * evidence["fast"])
    # Fewer events, weaker evidence: damp users below MIN_EVENTS_FOR_EVIDENCE.
    volume = (f["events"] / MIN_EVENTS_FOR_EVIDENCE).clip(upper=1.0)
    strength = evidence.max(axis=1) * volume
    bot_score = 1 - np.exp(-np.clip(strength - 3.0, 0, None) / 3.0)
    words = {
        "fast": lambda r: f"{r.events_per_minute:.1f} events per active minute",
        "regular": lambda r: (
            f"machine-regular timing (gap CV {r.gap_cv:.2f}, mean gap {r.gap_mean:.1f} s)"
        ),
        "repetitive": lambda r: (
            f"{r.views_per_item:.1f} views per distinct item (top item {r.top_item_share:.0%} "
            f"of events) at {r.events_per_minute:.1f} events per minute"
        ),
    }
    reasons = pd.Series("", index=f.index, dtype=object)
    flagged = bot_score >= BOT_THRESHOLD
    for i in np.flatnonzero(flagged.to_numpy()):
        row = f.iloc[i]
        top = evidence.iloc[i].sort_values(ascending=False)
        reasons.iloc[i] = "; ".join(
            f"{words[k](row)} (z={z:.1f})" for k, z in top.items() if z > 3.0
        )
    return pd.DataFrame(
        {
            "user_id": f["user_id"],
            "window": window,
            "events": f["events"],
            "events_per_minute": f["events_per_minute"],
            "gap_cv": f["gap_cv"],
            "views_per_item": f["views_per_item"],
            "bot_score": bot_score.round(4),
            "is_bot": flagged,
            "reasons": reasons,
            "detector_version": DETECTOR_VERSION,
        }
    )
