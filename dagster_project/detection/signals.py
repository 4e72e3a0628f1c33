"""Signals that need no baseline: evidence rare enough among people that one observation
flags an account, each with its pattern name and a reason in words.

Each signal maps a user's features (`bots.traffic_features`, plus the coordination columns
of `groups`) to a score in [0, 1]; a score of `bots.BOT_THRESHOLD` or more flags the user.

- `buy_now_scalping`: purchases paid within `funnel.INSTANT_PURCHASE_S` of the last view of
  the item with no add-to-cart between, for at least `INSTANT_SHARE` of the purchases that
  had a view before them. Among Taobao's real shoppers 0.1% of such purchases were that
  fast; a flash-sale rush reloads the deal, adds it to the cart and then pays.
- `listing_crawl`: a run of views walking a category's listing in id or price order. In
  random order a run of k rising steps has probability 1/(k+1)!; the most ordered human
  run on the generated shop was 9 views (48k shoppers) and 6 on the Taobao sample, so the
  flag starts at 13. B2B buyers going down their order lists walked 11 and 14 in the
  benchmark's shops: they buy, and a crawl needs purchases under 5% of the account's events.
- `coordinated_group`: a member of a lockstep group (`groups.lockstep_groups`).
- `copied_sessions`: sessions repeating another account's earlier session
  (`groups.session_copies`); the first-seen account is the original and is not flagged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dagster_project.detection.funnel import INSTANT_PURCHASE_S

ORDERED_RUN_START, ORDERED_RUN_FULL = 10, 16  # views in listing order -> 0 .. 1 (0.5 at 13)
CRAWL_MAX_PURCHASE_SHARE = 0.05  # of the user's events
INSTANT_SHARE = 0.75  # of the purchases with a view before them
GROUP_SCORE = 0.9
COPY_SCORE = 0.8


def _ramp(x: np.ndarray, start: float, full: float) -> np.ndarray:
    return np.clip((x - start) / (full - start), 0.0, 1.0)


def column_or(f: pd.DataFrame, name: str, default: object = 0) -> pd.Series:
    """`f[name]` with missing values (or the whole column) as `default`."""
    if name not in f:
        return pd.Series(default, index=f.index)
    return f[name].fillna(default)


def signal_scores(f: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per signal, each user's score in [0, 1] (0 where a column is missing)."""
    instant = column_or(f, "instant_purchases").to_numpy(float)
    decided = column_or(f, "decided_purchases").to_numpy(float)
    scalping = np.where(
        (instant >= 1) & (instant >= INSTANT_SHARE * np.maximum(decided, 1)),
        np.minimum(0.6 + 0.2 * (instant - 1), 1.0),
        0.0,
    )
    ordered = column_or(f, "ordered_views").to_numpy(float)
    # the walk starts at its first view: a run of n views is n - 1 ordered steps
    # a walk to buy (a B2B buyer going down its list) is no crawl: crawlers barely buy
    barely_buys = column_or(f, "purchase_share").to_numpy(float) < CRAWL_MAX_PURCHASE_SHARE
    crawl = _ramp(ordered, ORDERED_RUN_START, ORDERED_RUN_FULL) * barely_buys
    in_group = column_or(f, "group_id", "").astype(str).to_numpy() != ""
    copied = column_or(f, "copied_sessions").to_numpy(float)
    return {
        "buy_now_scalping": scalping,
        "listing_crawl": crawl,
        "coordinated_group": np.where(in_group, GROUP_SCORE, 0.0),
        "copied_sessions": np.where(copied >= 1, COPY_SCORE, 0.0),
    }


def describe_signal(name: str, r: pd.Series) -> str:
    """The evidence of one signal, in figures an analyst can check."""
    if name == "buy_now_scalping":
        first = r.get("first_purchase_after_s")
        since = f"; first purchase {first:.0f} s after the account's first event" if first else ""
        return (
            f"paid for {int(r['instant_purchases'])} of {int(r['decided_purchases'])} viewed "
            f"items within {INSTANT_PURCHASE_S:.0f} s of viewing them with no add-to-cart "
            f"between (median {r['median_decision_s']:.0f} s){since}"
        )
    if name == "listing_crawl":
        cover = r.get("category_coverage")
        share = f", up to {cover:.0%} of a category's items" if pd.notna(cover) else ""
        return (
            f"{int(r['ordered_views'])} consecutive views walking a category's listing in "
            f"{r['listing_order']} order{share}"
        )
    if name == "coordinated_group":
        return f"group {r['group_id']} ({int(r['group_partners'])} partners): {r['group_reason']}"
    if name == "copied_sessions":
        return str(r["copy_reason"])
    return ""
