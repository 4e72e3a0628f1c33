"""Item outliers: prices out of line with their category, popularity spikes, bot-driven
items, the targets of lockstep groups, and drops bought out within a minute of their listing.

Pure logic over frames: events (user_id, item_id, event_type, event_time), the catalog
(item_id, category, price, optional listed_at), the flagged users and the groups. Every flag
carries its reason in words.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl

PRICE_Z_LIMIT = 4.0  # robust z of log price inside the category
MIN_CATEGORY_ITEMS = 5
PRICE_MIN_SCALE = 0.1  # log units: categories with near-identical prices
SPIKE_RATIO = 5.0  # a day's share of traffic against the item's usual share
SPIKE_MIN_EVENTS = 30
BOT_SHARE_LIMIT = 0.5
BOT_MIN_EVENTS = 20
DROP_WINDOW_S = 60  # purchases this soon after an item's listing: bought at script speed
DROP_MIN_BUYERS = 3


def price_outliers(catalog: pl.DataFrame) -> pl.DataFrame:
    """Robust z of log price against the item's category (median / MAD of the category)."""
    logp = pl.col("price").log()
    median = logp.median().over("category")
    mad = (logp - median).abs().median().over("category") * 1.4826
    return catalog.select("item_id", "category", "price").with_columns(
        pl.when((pl.len().over("category") >= MIN_CATEGORY_ITEMS) & (pl.col("price") > 0))
        .then((logp - median) / pl.max_horizontal(mad, pl.lit(PRICE_MIN_SCALE)))
        .alias("price_z"),
        median.exp().alias("category_median_price"),
    )


def popularity_spikes(events: pl.LazyFrame) -> pl.DataFrame:
    """Each item's busiest day against its usual share of the shop's daily traffic.

    usual share = the item's median daily share over the days it had any traffic or could
    have (every day of the window, zeros included); the spike ratio compares the peak day's
    share with it (add-one smoothed, so rare items do not spike on a handful of views).
    """
    daily = (
        events.select("item_id", (pl.col("event_time").dt.epoch("ms") // 86_400_000).alias("day"))
        .group_by("item_id", "day")
        .agg(pl.len().alias("n"))
        .collect()
    )
    totals = daily.group_by("day").agg(pl.col("n").sum().alias("day_total"))
    n_days = totals.height
    daily = daily.join(totals, on="day")
    mean_total = float(totals["day_total"].mean()) if n_days else 1.0
    per_item = daily.group_by("item_id").agg(
        pl.col("n").sum().alias("events"),
        # ties broken by the later day: the same peak however the rows arrive
        pl.col("day").sort_by("n", "day").last().alias("peak_day"),
        pl.col("n").max().alias("peak_day_events"),
        (pl.col("n") / pl.col("day_total")).sort_by("n", "day").last().alias("peak_share"),
        # median over every day of the window: days without traffic count as zero
        (pl.col("n") / pl.col("day_total")).alias("shares"),
    )
    usual = np.array(
        [
            np.median(np.r_[s.to_numpy(), np.zeros(n_days - len(s))]) if n_days else 0.0
            for s in per_item["shares"]
        ]
    )
    return (
        per_item.drop("shares")
        .with_columns(
            pl.Series("usual_share", usual),
            (
                (pl.col("peak_share") * mean_total + 1)
                / (pl.Series("usual_share", usual) * mean_total + 1)
            ).alias("spike_ratio"),
            (pl.col("peak_day") * 86_400_000)
            .cast(pl.Datetime("ms", "UTC"))
            .dt.date()
            .alias("peak_date"),
        )
        .drop("peak_day")
    )


def drop_purchases(events: pl.LazyFrame, catalog: pl.DataFrame) -> pl.DataFrame:
    """Per item with a listing time (`listed_at`) and purchases after it: seconds from the
    listing to the first purchase, and the accounts that bought within `DROP_WINDOW_S` of it
    (a drop bought out by scripts). Empty when the catalog has no listing times."""
    columns = ["item_id", "first_purchase_after_listing_s", "drop_buyers"]
    names = events.collect_schema().names()
    if "listed_at" not in catalog.columns or "event_type" not in names:
        return pl.DataFrame(
            schema={"item_id": pl.String, columns[1]: pl.Float64, columns[2]: pl.UInt32}
        )
    listed = catalog.select(
        pl.col("item_id").cast(pl.String), pl.col("listed_at").dt.epoch("ms").alias("listed_ms")
    ).drop_nulls("listed_ms")
    since = (pl.col("event_time").dt.epoch("ms") - pl.col("listed_ms")) / 1000
    return (
        events.filter(pl.col("event_type") == "purchase")
        .select(pl.col("item_id").cast(pl.String), "user_id", "event_time")
        .join(listed.lazy(), on="item_id")
        .with_columns(since.alias("since_s"))
        .filter(pl.col("since_s") >= 0)
        .group_by("item_id")
        .agg(
            pl.col("since_s").min().alias(columns[1]),
            pl.col("user_id")
            .filter(pl.col("since_s") <= DROP_WINDOW_S)
            .n_unique()
            .alias(columns[2]),
        )
        .collect()
    )


def _group_targets(groups: pd.DataFrame | None) -> pd.DataFrame:
    """Per item a lockstep group acted on (`groups.lockstep_groups`): the group and its reason."""
    if groups is None or groups.empty:
        return pd.DataFrame({"item_id": pd.Series(dtype=str), "target_of_group": "", "why": ""})
    targets = groups.assign(item_id=groups["item_ids"].str.split(",")).explode("item_id")
    targets = targets.groupby("item_id", as_index=False).agg(
        target_of_group=("group_id", ",".join), why=("reason", "; ".join)
    )
    return targets


def _outlier_reason(r: tuple) -> str:
    """One item's flags in words, with the figures behind them."""
    parts = []
    if r.price_outlier:
        parts.append(
            f"price {r.price:.2f} is {r.price / r.category_median_price:.1f}x the "
            f"{r.category} median {r.category_median_price:.2f} (z={r.price_z:.1f})"
        )
    if r.popularity_spike:
        parts.append(
            f"{r.peak_day_events} events on {r.peak_date:%Y-%m-%d}, {r.spike_ratio:.0f}x its usual "
            "share of the day's traffic"
        )
    if r.bot_driven:
        parts.append(f"{r.bot_share:.0%} of its {r.events} events came from flagged users")
    if r.sniped_drop:
        parts.append(
            f"bought by {r.drop_buyers} accounts within {DROP_WINDOW_S} s of its listing "
            f"(the first {r.first_purchase_after_listing_s:.0f} s after it)"
        )
    if r.group_target:
        parts.append(f"a target of group {r.target_of_group}: {r.why}")
    return "; ".join(parts)


def item_outliers(
    events: pl.LazyFrame | pl.DataFrame,
    catalog: pl.DataFrame,
    flagged_users: pl.Series,
    groups: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per catalog item with its outlier tests (price, popularity spike, bot-driven,
    target of a lockstep group from `groups`, a drop bought out within a minute of its
    listing), the flags and reasons."""
    events = events.lazy()
    bot = (
        events.select("item_id", pl.col("user_id").is_in(flagged_users.implode()).alias("bot"))
        .group_by("item_id")
        .agg(pl.col("bot").sum().alias("bot_events"))
        .collect()
    )
    frame = (
        price_outliers(catalog)
        .join(popularity_spikes(events), on="item_id", how="left")
        .join(bot, on="item_id", how="left")
        .join(drop_purchases(events, catalog), on="item_id", how="left")
        .with_columns(
            pl.col("events").fill_null(0),
            pl.col("bot_events").fill_null(0),
            pl.col("drop_buyers").fill_null(0),
        )
        .with_columns((pl.col("bot_events") / pl.col("events")).fill_nan(None).alias("bot_share"))
        .with_columns(
            (pl.col("price_z").abs() >= PRICE_Z_LIMIT).fill_null(False).alias("price_outlier"),
            (
                (pl.col("spike_ratio") >= SPIKE_RATIO)
                & (pl.col("peak_day_events") >= SPIKE_MIN_EVENTS)
            )
            .fill_null(False)
            .alias("popularity_spike"),
            ((pl.col("bot_share") >= BOT_SHARE_LIMIT) & (pl.col("events") >= BOT_MIN_EVENTS))
            .fill_null(False)
            .alias("bot_driven"),
            (pl.col("drop_buyers") >= DROP_MIN_BUYERS).alias("sniped_drop"),
        )
        .to_pandas()
    )
    frame = frame.merge(_group_targets(groups), on="item_id", how="left")
    frame["target_of_group"] = frame["target_of_group"].fillna("")
    frame["group_target"] = frame["target_of_group"] != ""
    tests = ["price_outlier", "popularity_spike", "bot_driven", "group_target", "sniped_drop"]
    frame["is_outlier"] = frame[tests].any(axis=1)
    frame["reasons"] = [_outlier_reason(r) for r in frame.itertuples()]
    frame = frame.drop(columns="why")
    for col in ["price_z", "usual_share", "spike_ratio", "bot_share", "peak_share"]:
        frame[col] = frame[col].astype(float).round(4)
    return frame
