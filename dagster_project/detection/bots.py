"""Bot and abnormal-traffic detection per user and per session, from what a real export holds.

Input: behaviour events (user_id, item_id, event_type, event_time, optional query) and,
when known, each item's category. Nothing else: no session ids, labels or generator hints.

1. `traffic_features`: per session (derived from 30-minute inactivity gaps, the same rule
   for every source) and per user: event rate, inter-event timing regularity (coefficient of
   variation, share of gaps near the modal gap), night-hour share, hour-of-day
   entropy, session length and spacing, daily volume steadiness, distinct items and
   categories with their ratio and entropy, repeated-item ratio, the view : cart : purchase
   funnel, and search share.
2. `score_users`: each feature becomes a robust z-score (median / MAD over users with enough
   events). Patterns of abuse are conjunctions of those z-scores (a pattern scores the
   weakest of its signs), and an Isolation Forest over the z-scores measures how unusual the
   whole profile is. They combine into a bot score in [0, 1]; users at or above
   `BOT_THRESHOLD` are flagged with their top reasons in words and the pattern they match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import polars as pl

from dagster_project.contracts import SESSION_GAP
from dagster_project.detection.funnel import funnel_speed, listing_order
from dagster_project.detection.signals import column_or, describe_signal, signal_scores

DETECTOR_VERSION = "patterns+iforest+signals-2.0"
BOT_THRESHOLD = 0.5
MIN_EVENTS_FOR_EVIDENCE = 20  # fewer events: evidence is damped in proportion
MIN_EVENTS_FOR_BASELINE = 5
SUSPECT_Z = 4.0  # first pass: one evidence this extreme keeps a user out of the baseline  # users whose features set the medians and MADs
NIGHT_HOURS = (0, 6)  # [start, end) in UTC; exports rarely say the shopper's time zone
# A gap is "at" the modal gap when within MODAL_GAP_RELATIVE of it, or MODAL_GAP_FLOOR_MS for
# short gaps: half a second, so that whole-second timestamps and millisecond ones give the
# same share (a recorded 3 s gap is a true 2.5-3.5 s one).
MODAL_GAP_RELATIVE = 0.15
MODAL_GAP_FLOOR_MS = 500
RULE_WEIGHT = 0.75  # bot score = RULE_WEIGHT * pattern score + (1 - RULE_WEIGHT) * isolation
PATTERN_Z_START, PATTERN_Z_FULL = 2.0, 5.0  # pattern z -> pattern score ramps over this range
ISOLATION_START, ISOLATION_FULL = 0.55, 0.75  # isolation-forest anomaly -> score ramp
_SESSION_GAP_MS = int(SESSION_GAP.total_seconds() * 1000)


def _events_frame(events: pl.DataFrame | pl.LazyFrame | pd.DataFrame) -> pl.LazyFrame:
    if isinstance(events, pd.DataFrame):
        events = pl.from_pandas(events)
    lf = events.lazy()
    names = lf.collect_schema().names()
    query = (
        pl.col("query").is_not_null() & (pl.col("query").cast(pl.String).str.strip_chars() != "")
        if "query" in names
        else pl.lit(False)
    )
    category = pl.col("category").cast(pl.String) if "category" in names else pl.lit(None)
    # Categorical ids: every sort and group-by below works on integer codes, not strings.
    return lf.select(
        pl.col("user_id").cast(pl.String).cast(pl.Categorical),
        pl.col("item_id").cast(pl.String).cast(pl.Categorical),
        pl.col("event_type").cast(pl.String).cast(pl.Categorical),
        pl.col("event_time").dt.epoch("ms").alias("t"),
        query.alias("searched"),
        category.cast(pl.String).cast(pl.Categorical).alias("category"),
    )


def _with_catalog(ev: pl.LazyFrame, catalog: pl.DataFrame | pd.DataFrame | None) -> pl.LazyFrame:
    """The events with each item's category (and price where the catalog has one)."""
    if catalog is None:
        return ev.with_columns(pl.lit(None, pl.Float64).alias("price"))
    cats = pl.from_pandas(catalog) if isinstance(catalog, pd.DataFrame) else catalog
    price = (
        pl.col("price").cast(pl.Float64) if "price" in cats.columns else pl.lit(None, pl.Float64)
    )
    return ev.drop("category").join(
        cats.lazy().select(
            pl.col("item_id").cast(pl.String).cast(pl.Categorical),
            pl.col("category").cast(pl.String).cast(pl.Categorical),
            price.alias("price"),
        ),
        on="item_id",
        how="left",
    )


def prepare_events(
    events: pl.DataFrame | pl.LazyFrame | pd.DataFrame,
    catalog: pl.DataFrame | pd.DataFrame | None = None,
) -> pl.DataFrame:
    """The events as the detector reads them: ids as categoricals, epoch ms `t`, each item's
    category and price from `catalog` (item_id, category, optional price) when given, sorted
    by user and time, with sessions (30-minute gaps), gaps, hours and days."""
    ev = _with_catalog(_events_frame(events), catalog)
    same_user = pl.col("user_id") == pl.col("user_id").shift(1)
    gap = pl.when(same_user).then(pl.col("t") - pl.col("t").shift(1))
    ev = (
        ev.sort([pl.col("user_id").to_physical(), "t"])
        .with_columns(gap.alias("gap"))
        .with_columns(
            (pl.col("gap").is_null() | (pl.col("gap") > _SESSION_GAP_MS)).alias("new_session")
        )
        .with_columns(
            pl.col("new_session").cum_sum().alias("session"),
            # Zero gaps are one action recorded as several rows (order lines): timing ignores them.
            pl.when(~pl.col("new_session") & (pl.col("gap") > 0))
            .then(pl.col("gap"))
            .alias("session_gap"),
            ((pl.col("t") // 3_600_000) % 24).alias("hour"),
            (pl.col("t") // 86_400_000).alias("day"),
        )
        .collect()
    )
    return ev


def _modal_gaps(ev: pl.DataFrame) -> pl.DataFrame:
    """Per user: the modal gap inside sessions (`modal_gap_s`: the median gap of the busiest
    run of three bins, bins MODAL_GAP_RELATIVE wide on a log scale) and how many gaps lie
    within its tolerance, max(MODAL_GAP_RELATIVE of it, MODAL_GAP_FLOOR_MS) (`near_modal_gaps`).
    Both hold whether timestamps are whole seconds or jittered milliseconds."""
    floor, step = MODAL_GAP_FLOOR_MS, np.log1p(MODAL_GAP_RELATIVE)
    gaps = ev.filter(pl.col("session_gap").is_not_null()).select(
        "user_id",
        "session_gap",
        ((pl.col("session_gap").clip(lower_bound=floor) / floor).log() / step)
        .floor()
        .cast(pl.Int64)
        .alias("bin"),
    )
    bins = (
        gaps.group_by("user_id", "bin")
        .agg(pl.len().alias("n"))
        .sort([pl.col("user_id").to_physical(), "bin"])
    )
    neighbour = [
        pl.when(
            (pl.col("user_id").shift(s) == pl.col("user_id"))
            & (pl.col("bin").shift(s) == pl.col("bin") - s)
        )
        .then(pl.col("n").shift(s))
        .otherwise(0)
        for s in (1, -1)
    ]
    busiest = (
        bins.with_columns((pl.col("n") + neighbour[0] + neighbour[1]).alias("near"))
        .sort([pl.col("user_id").to_physical(), "near", "n", "bin"])
        .group_by("user_id")
        .agg(pl.col("bin").last().alias("modal_bin"))
    )
    modal = (
        gaps.join(busiest, on="user_id")
        .filter((pl.col("bin") - pl.col("modal_bin")).abs() <= 1)
        .group_by("user_id")
        .agg(pl.col("session_gap").median().alias("modal_ms"))
    )
    tolerance = pl.max_horizontal(MODAL_GAP_RELATIVE * pl.col("modal_ms"), pl.lit(floor))
    return (
        gaps.join(modal, on="user_id")
        .group_by("user_id")
        .agg(
            ((pl.col("session_gap") - pl.col("modal_ms")).abs() <= tolerance)
            .sum()
            .alias("near_modal_gaps"),
            (pl.col("modal_ms").first() / 1000).alias("modal_gap_s"),
        )
    )


def traffic_features(
    events: pl.DataFrame | pl.LazyFrame | pd.DataFrame,
    categories: pl.DataFrame | pd.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per-user features, per-session features) of the events.

    `categories` (item_id, category, optional price) adds category breadth and the listing
    order when the events lack a category.
    """
    return features_of(prepare_events(events, categories))


_IS_BUY = pl.col("event_type") == "purchase"
_IS_CART = pl.col("event_type") == "add_to_cart"


def features_of(ev: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per-user features, per-session features) of events from `prepare_events`."""
    sessions = _session_table(ev)
    out = (
        _user_totals(ev)
        .join(_modal_gaps(ev), on="user_id", how="left")
        .join(_entropy(ev, "hour", "hour_entropy"), on="user_id", how="left")
        .join(_entropy(ev, "category", "category_entropy"), on="user_id", how="left")
        .join(_item_repetition(ev), on="user_id", how="left")
        .join(_session_spacing(sessions), on="user_id", how="left")
        .join(_daily_volume(ev), on="user_id", how="left")
        .join(_checkout_speed(ev), on="user_id", how="left")
        .with_columns(pl.col("checkouts").fill_null(0))
        .with_columns(*_ratios())
        .drop(
            "active_ms", "gap_std_ms", "near_modal_gaps", "top_item_events", "first_ms", "last_ms"
        )
        .join(funnel_speed(ev), on="user_id", how="left")
        .join(listing_order(ev), on="user_id", how="left")
        .with_columns(
            pl.col("user_id").cast(pl.String),
            pl.col("instant_purchases", "decided_purchases", "purchases_without_cart").fill_null(0),
            pl.col("ordered_views").fill_null(0),
        )
        .sort("user_id")
    )
    return out, sessions.with_columns(pl.col("user_id").cast(pl.String))


def _user_totals(ev: pl.DataFrame) -> pl.DataFrame:
    """Per user: counts by event type, sessions, days, breadth, gaps, night share, span."""
    kind = pl.col("event_type")
    return ev.group_by("user_id").agg(
        pl.len().alias("events"),
        pl.col("session").n_unique().alias("sessions"),
        pl.col("day").n_unique().alias("active_days"),
        pl.col("item_id").n_unique().alias("distinct_items"),
        pl.col("category").drop_nulls().n_unique().alias("distinct_categories"),
        (kind == "view").sum().alias("views"),
        (kind == "favorite").sum().alias("favorites"),
        _IS_CART.sum().alias("carts"),
        _IS_BUY.sum().alias("purchases"),
        pl.col("searched").sum().alias("searches"),
        pl.col("session_gap").sum().alias("active_ms"),
        pl.col("session_gap").mean().alias("gap_mean_ms"),
        pl.col("session_gap").std().alias("gap_std_ms"),
        pl.col("session_gap").count().alias("gaps"),
        pl.col("hour").is_between(NIGHT_HOURS[0], NIGHT_HOURS[1] - 1).mean().alias("night_share"),
        pl.col("t").min().alias("first_ms"),
        pl.col("t").max().alias("last_ms"),
    )


def _entropy(ev: pl.DataFrame, key: str, name: str) -> pl.DataFrame:
    """Per user, the entropy (nats) of their events over the values of `key`."""
    counts = ev.drop_nulls(key).group_by("user_id", key).agg(pl.len().alias("n"))
    share = pl.col("n") / pl.col("n").sum()
    return counts.group_by("user_id").agg((-(share * share.log())).sum().alias(name))


def _item_repetition(ev: pl.DataFrame) -> pl.DataFrame:
    """Per user: the busiest item's events, items acted on (not bought), carted, and carted
    but never bought."""
    per_item = ev.group_by("user_id", "item_id").agg(
        pl.len().alias("n"),
        (~_IS_BUY).sum().alias("actions"),
        _IS_CART.sum().alias("carts"),
        _IS_BUY.sum().alias("buys"),
    )
    return per_item.group_by("user_id").agg(
        pl.col("n").max().alias("top_item_events"),
        (pl.col("actions") > 0).sum().alias("acted_items"),
        (pl.col("carts") > 0).sum().alias("carted_items"),
        ((pl.col("carts") > 0) & (pl.col("buys") == 0)).sum().alias("carted_not_bought"),
    )


def _checkout_speed(ev: pl.DataFrame) -> pl.DataFrame:
    """Per user: seconds from the last add-to-cart of an item to its purchase (order lines
    count once), how many and their median."""
    same_item = (pl.col("user_id") == pl.col("user_id").shift(1)) & (
        pl.col("item_id") == pl.col("item_id").shift(1)
    )
    paid_after_cart = pl.col("buy") & ~pl.col("buy").shift(1) & same_item
    return (
        ev.filter(_IS_CART | _IS_BUY)
        .select("user_id", "item_id", "t", _IS_BUY.alias("buy"))
        .unique()
        .sort([pl.col("user_id").to_physical(), pl.col("item_id").to_physical(), "t"])
        .with_columns(
            pl.when(paid_after_cart)
            .then((pl.col("t") - pl.col("t").shift(1)) / 1000)
            .alias("checkout_s")
        )
        .group_by("user_id")
        .agg(
            pl.col("checkout_s").count().alias("checkouts"),
            pl.col("checkout_s").median().alias("median_checkout_s"),
        )
    )


def _session_table(ev: pl.DataFrame) -> pl.DataFrame:
    """Per session: events, start, duration, breadth, searches, gap spread, rate, and the
    time since the user's previous session started."""
    return (
        ev.group_by("user_id", "session")
        .agg(
            pl.len().alias("events"),
            pl.col("t").min().alias("start_ms"),
            (pl.col("t").max() - pl.col("t").min()).alias("duration_ms"),
            pl.col("item_id").n_unique().alias("distinct_items"),
            pl.col("searched").sum().alias("searches"),
            pl.col("session_gap").std().alias("gap_std_ms"),
            pl.col("session_gap").mean().alias("gap_mean_ms"),
        )
        .sort([pl.col("user_id").to_physical(), "start_ms"])
        .with_columns(
            (pl.col("events") / (pl.col("duration_ms") / 60_000).clip(lower_bound=1.0)).alias(
                "events_per_minute"
            ),
            (pl.col("gap_std_ms") / pl.col("gap_mean_ms")).alias("gap_cv"),
            pl.when(pl.col("user_id") == pl.col("user_id").shift(1))
            .then(pl.col("start_ms") - pl.col("start_ms").shift(1))
            .alias("since_previous_ms"),
        )
    )


def _session_spacing(sessions: pl.DataFrame) -> pl.DataFrame:
    """Per user: median session length, fastest session, and how evenly sessions start."""
    since = pl.col("since_previous_ms")
    return sessions.group_by("user_id").agg(
        (pl.col("duration_ms").median() / 60_000).alias("median_session_minutes"),
        pl.col("events_per_minute").max().alias("fastest_session_events_per_minute"),
        ((since - since.median()).abs().median() / since.median()).alias(
            "session_spacing_dispersion"
        ),
    )


def _daily_volume(ev: pl.DataFrame) -> pl.DataFrame:
    """Per user: the coefficient of variation of events per active day."""
    return (
        ev.group_by("user_id", "day")
        .agg(pl.len().alias("n"))
        .group_by("user_id")
        .agg((pl.col("n").std() / pl.col("n").mean()).alias("daily_volume_cv"))
    )


def _ratios() -> list[pl.Expr]:
    """The per-user ratios the evidence reads, from the totals joined in `features_of`."""

    def per(a: str, b: str) -> pl.Expr:
        return pl.col(a) / pl.col(b)

    def at_least_one(column: str) -> pl.Expr:
        return pl.col(column).clip(lower_bound=1)

    active_minutes = (pl.col("active_ms") / 60_000).clip(lower_bound=1.0)
    return [
        ((pl.col("gaps") + pl.col("sessions")) / active_minutes).alias("events_per_minute"),
        per("gap_std_ms", "gap_mean_ms").alias("gap_cv"),
        per("near_modal_gaps", "gaps").fill_nan(None).alias("modal_gap_share"),
        per("distinct_items", "events").alias("item_ratio"),
        (1 - per("distinct_items", "events")).alias("repeated_item_ratio"),
        per("top_item_events", "events").alias("top_item_share"),
        ((pl.col("events") - pl.col("purchases")) / at_least_one("acted_items")).alias(
            "actions_per_item"
        ),
        (pl.col("events") - pl.col("purchases") - pl.col("acted_items")).alias("repeated_actions"),
        (pl.col("carts") / at_least_one("carted_items")).alias("carts_per_item"),
        (pl.col("carted_not_bought") / at_least_one("carted_items")).alias("cart_abandon_share"),
        per("views", "events").alias("view_share"),
        per("carts", "events").alias("cart_share"),
        per("purchases", "events").alias("purchase_share"),
        per("searches", "events").alias("search_share"),
        per("searches", "sessions").alias("searches_per_session"),
        per("sessions", "active_days").alias("sessions_per_active_day"),
        (pl.col("hour_entropy") / np.log(24)).alias("hour_entropy"),
        ((pl.col("last_ms") - pl.col("first_ms")) / 86_400_000).alias("span_days"),
    ]


# Evidence: a transform of one feature, its direction (z > 0 = more bot-like) and a floor for
# its scale (the MAD is 0 when most users share one value). Users below `needs` get no z.
@dataclass(frozen=True)
class Evidence:
    feature: str
    transform: Callable[[np.ndarray], np.ndarray]
    min_scale: float
    needs: str = ""  # a boolean feature expression (pandas.eval) a scored user must satisfy
    # Users who set the baseline (default: `needs`). Wider than `needs` where only heavy users
    # qualify, so that heavy automation cannot become the majority of its own baseline.
    baseline: str = ""


EVIDENCE: dict[str, Evidence] = {
    "fast": Evidence("events_per_minute", np.log, 0.3),
    "regular_gaps": Evidence("modal_gap_share", lambda x: x, 0.05, "gaps >= 10", "gaps >= 3"),
    "repeats_items": Evidence("actions_per_item", np.log, 0.2),
    "instant_checkout": Evidence(
        "median_checkout_s",
        lambda x: -np.log(np.maximum(x, 0.1)),
        1.0,
        "checkouts >= 2",  # one quick checkout is a decided shopper, not a pattern
        "checkouts >= 1",
    ),
    "cart_repeats": Evidence("carts_per_item", np.log, 0.4, "carts >= 5", "carts >= 1"),
    "search_driven": Evidence("searches_per_session", np.log1p, 0.3),
    "regular_schedule": Evidence(
        "session_spacing_dispersion",
        lambda x: -np.log(np.maximum(x, 1e-3)),
        0.3,
        "sessions >= 10",
        "sessions >= 4",
    ),
    "busy_days": Evidence("sessions_per_active_day", np.log, 0.3),
    "steady_days": Evidence(
        "daily_volume_cv",
        lambda x: -np.log(np.maximum(x, 1e-3)),
        0.3,
        "active_days >= 5",
        "active_days >= 3",
    ),
    "night_activity": Evidence("night_share", lambda x: x, 0.08, "events >= 50"),
    "around_the_clock": Evidence("hour_entropy", lambda x: x, 0.05, "events >= 50"),
    "many_items": Evidence("distinct_items", np.log, 0.5),
    "broad_categories": Evidence("category_entropy", lambda x: x, 0.3),
}


@dataclass(frozen=True)
class Pattern:
    """A pattern of abuse: it holds when all its signs do (its z is the weakest sign's) and
    the user passes its gate (a pandas.eval expression on the features, e.g. no purchases).
    A sign "a|b" holds when either evidence does."""

    signs: list[str]
    gate: str = ""


PATTERNS: dict[str, Pattern] = {
    "scripted_crawl": Pattern(["fast", "regular_gaps"]),
    # Fake engagement does not convert.
    # Fake engagement does not convert; a shopper refreshing a deal a few times is no farm.
    "click_farm": Pattern(
        ["fast", "repeats_items"],
        "purchase_share < 0.01 and repeated_actions >= 30 and favorites + carts >= 3",
    ),
    # The same repeats with views alone: a script reloading pages (a stock or price monitor,
    # a scraper re-walking its list) engages with nothing, unlike a farm.
    "page_monitoring": Pattern(
        ["fast", "repeats_items"],
        "purchase_share < 0.01 and repeated_actions >= 30 and favorites + carts < 3",
    ),
    # Hoarders mostly re-add carts and hold them; one who re-carts and then buys is a customer.
    "cart_hoarding": Pattern(
        ["cart_repeats"], "cart_abandon_share >= 0.5 and carts >= 20 and cart_share >= 0.5"
    ),
    # Sniping: watching one page again and again, then paying faster than a person can.
    "checkout_sniping": Pattern(["instant_checkout", "repeats_items"]),
    "search_scraping": Pattern(["fast", "search_driven"]),
    # Fast page after page over many items, even at irregular delays, with nothing bought.
    "catalog_sweep": Pattern(["fast", "many_items"], "purchase_share < 0.01"),
    # Many sessions every day, on an even clock or at the same volume each day: a schedule.
    "scheduled_automation": Pattern(
        ["busy_days", "regular_schedule|steady_days"], "sessions >= 10"
    ),
}


def _weakest_sign(z: pd.DataFrame, signs: list[str]) -> pd.Series:
    held = [z[sign.split("|")].max(axis=1) for sign in signs]
    return pd.concat(held, axis=1).min(axis=1)


def _describe(pattern: str, r: tuple) -> str:
    """The evidence for one pattern, in the figures an analyst can check."""
    if pattern == "scripted_crawl":
        return (
            f"{r.events_per_minute:.0f} events per active minute, {r.modal_gap_share:.0%} of gaps "
            f"within {max(MODAL_GAP_RELATIVE * r.modal_gap_s, MODAL_GAP_FLOOR_MS / 1000):.1f} s "
            f"of {r.modal_gap_s:.2f} s"
        )
    if pattern == "click_farm":
        return (
            f"{r.actions_per_item:.0f} views/favorites/carts per item over {r.distinct_items} "
            f"items (top item {r.top_item_share:.0%} of events), {r.purchases} purchases, "
            f"{r.events_per_minute:.1f} events per active minute"
        )
    if pattern == "page_monitoring":
        return (
            f"{r.actions_per_item:.0f} views per item over {r.distinct_items} items (top item "
            f"{r.top_item_share:.0%} of events), {r.favorites} favourites and {r.carts} carts, "
            f"{r.events_per_minute:.1f} events per active minute"
        )
    if pattern == "cart_hoarding":
        return (
            f"{r.carts} add-to-carts of {r.carted_items} items ({r.carts_per_item:.1f} per item), "
            f"{r.cart_abandon_share:.0%} of carted items never bought"
        )
    if pattern == "search_scraping":
        return (
            f"{r.searches} searches in {r.sessions} sessions ({r.searches_per_session:.0f} per "
            f"session) across {r.distinct_categories} categories, "
            f"{r.events_per_minute:.0f} events per active minute"
        )
    if pattern == "catalog_sweep":
        return (
            f"{r.distinct_items} distinct items at {r.events_per_minute:.0f} events per active "
            f"minute over {r.sessions} sessions, {r.purchases} purchases"
        )
    if pattern == "checkout_sniping":
        return (
            f"paid {r.median_checkout_s:.1f} s after adding to cart (median of {r.checkouts}), "
            f"{r.actions_per_item:.0f} views/carts per item before buying"
        )
    if pattern == "scheduled_automation":
        return (
            f"{r.sessions} sessions on {r.active_days} days ({r.sessions_per_active_day:.1f} a "
            f"day), daily volume CV {r.daily_volume_cv:.2f}, session starts spaced with "
            f"dispersion {r.session_spacing_dispersion:.2f}, {r.night_share:.0%} of events "
            "00-06 UTC"
        )
    return ""


def robust_z(values: np.ndarray, reference: np.ndarray, min_scale: float) -> np.ndarray:
    """(x - median) / max(1.4826 * MAD, min_scale), median and MAD over `reference` rows."""
    ref = values[reference & np.isfinite(values)]
    if not len(ref):
        return np.zeros_like(values)
    median = np.median(ref)
    scale = max(1.4826 * float(np.median(np.abs(ref - median))), min_scale)
    return (values - median) / scale


def evidence_z(features: pd.DataFrame, exclude: np.ndarray | None = None) -> pd.DataFrame:
    """Robust z per evidence (0 where the user lacks the data).

    Medians and MADs come from users with at least `MIN_EVENTS_FOR_BASELINE` events, less
    `exclude` (the suspects of a first pass, so heavy bot traffic cannot move the baseline).
    """
    reference = (features["events"] >= MIN_EVENTS_FOR_BASELINE).to_numpy()
    if exclude is not None:
        reference &= ~exclude
    out = {}
    for name, ev in EVIDENCE.items():
        raw = features[ev.feature].to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = ev.transform(raw)
        base = reference & (features.eval(ev.baseline or ev.needs).to_numpy() if ev.needs else True)
        z = robust_z(x, base, ev.min_scale)
        if ev.needs:
            z = np.where(features.eval(ev.needs).to_numpy(), z, np.nan)
        out[name] = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
    return pd.DataFrame(out, index=features.index)


def _ramp(x: np.ndarray, start: float, full: float) -> np.ndarray:
    return np.clip((x - start) / (full - start), 0.0, 1.0)


def isolation_anomaly(
    z: pd.DataFrame, fit_rows: np.ndarray, score_rows: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Isolation Forest anomaly (0..1, about 0.5 for ordinary users) of each user's z profile.

    Fitted on `fit_rows`, scored on `score_rows`; other users get 0.5 (no opinion).
    """
    x = np.clip(z.to_numpy(), -10, 10)
    anomaly = np.full(len(z), 0.5)
    if fit_rows.sum() < 50:
        return anomaly
    from sklearn.ensemble import IsolationForest  # scikit-learn loads in a second

    forest = IsolationForest(
        n_estimators=100, max_samples=min(512, int(fit_rows.sum())), random_state=seed, n_jobs=2
    )
    forest.fit(x[fit_rows])
    anomaly[score_rows] = -forest.score_samples(x[score_rows])
    return anomaly


@dataclass(frozen=True)
class _Profile:
    """The patterns-and-forest view of the users (detector 1.0): evidence z-scores, each
    pattern's z, the isolation anomaly, and the score they make."""

    z: pd.DataFrame
    pattern_z: pd.DataFrame
    anomaly: np.ndarray
    score: np.ndarray


def _profile(f: pd.DataFrame) -> _Profile:
    volume = np.minimum(f["events"].to_numpy() / MIN_EVENTS_FOR_EVIDENCE, 1.0)
    gates = {name: f.eval(p.gate).to_numpy() if p.gate else 1.0 for name, p in PATTERNS.items()}

    def patterns(z: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {n: _weakest_sign(z, p.signs) * volume * gates[n] for n, p in PATTERNS.items()},
            index=f.index,
        )

    # Two passes: the second baseline leaves out the users the first pass finds suspicious:
    # a pattern holds, or any one evidence is extreme on its own.
    first = evidence_z(f)
    suspects = (
        (patterns(first).max(axis=1) >= PATTERN_Z_START) | (first.max(axis=1) >= SUSPECT_Z)
    ).to_numpy()
    z = evidence_z(f, exclude=suspects)
    pattern_z = patterns(z)
    pattern_score = _ramp(pattern_z.max(axis=1).to_numpy(), PATTERN_Z_START, PATTERN_Z_FULL)
    enough = f["events"].to_numpy() >= MIN_EVENTS_FOR_EVIDENCE
    anomaly = isolation_anomaly(z, enough & ~suspects, enough)
    isolation_score = np.where(enough, _ramp(anomaly, ISOLATION_START, ISOLATION_FULL), 0.0)
    score = RULE_WEIGHT * pattern_score + (1 - RULE_WEIGHT) * isolation_score
    return _Profile(z, pattern_z, anomaly, score)


def _profile_reasons(
    f: pd.DataFrame, profile: _Profile, flagged: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(pattern, reasons) from the patterns: for the flagged, and for the watch list (a
    pattern holds but the score is short)."""
    reasons = np.full(len(f), "", dtype=object)
    pattern = np.full(len(f), "", dtype=object)
    pattern_z, z = profile.pattern_z, profile.z
    rows = np.flatnonzero(flagged | (pattern_z.max(axis=1).to_numpy() >= PATTERN_Z_START))
    names, pz, zs = list(pattern_z.columns), pattern_z.to_numpy()[rows], z.to_numpy()[rows]
    for k, (i, row) in enumerate(zip(rows, f.iloc[rows].itertuples(index=False), strict=True)):
        order = np.argsort(-pz[k])
        held = [names[j] for j in order if pz[k, j] >= PATTERN_Z_START]
        parts = [f"{_describe(p, row)} (z={pz[k, names.index(p)]:.1f})" for p in held[:2]]
        if not held:  # flagged by the whole profile's rarity, not by one pattern
            top = np.argsort(-zs[k])[:3]
            parts = [
                f"unusual profile (isolation {profile.anomaly[i]:.2f}): "
                + ", ".join(f"{z.columns[j]} z={zs[k, j]:.1f}" for j in top)
            ]
        pattern[i] = (held[0] if held else "unusual_profile") if flagged[i] else ""
        reasons[i] = "; ".join(parts)
    return pattern, reasons


def _add_signal_reasons(
    f: pd.DataFrame,
    signals: pd.DataFrame,
    profile_flagged: np.ndarray,
    pattern: np.ndarray,
    reasons: np.ndarray,
) -> None:
    """Where a signal fires: it names the pattern and leads the reasons when it is what flags
    the user; where the patterns flag on their own, their name stays and its evidence
    follows theirs (`pattern` and `reasons` are updated in place)."""
    for i in np.flatnonzero((signals >= BOT_THRESHOLD).any(axis=1).to_numpy()):
        fired = signals.iloc[i][signals.iloc[i] >= BOT_THRESHOLD].sort_values(ascending=False)
        parts = [describe_signal(name, f.iloc[i]) for name in fired.index]
        if profile_flagged[i]:
            reasons[i] = "; ".join([reasons[i], *parts])
        else:
            pattern[i] = fired.index[0]
            reasons[i] = "; ".join(parts + ([reasons[i]] if reasons[i] else []))


def score_users(features: pl.DataFrame | pd.DataFrame, window: str = "all") -> pd.DataFrame:
    """Bot score in [0, 1], the flag at `BOT_THRESHOLD`, the pattern matched and reasons:
    the larger of the patterns-and-forest score (`profile_score`) and the signals'."""
    f = features.to_pandas() if isinstance(features, pl.DataFrame) else features.copy()
    f = f.reset_index(drop=True)
    profile = _profile(f)
    signals = pd.DataFrame(signal_scores(f), index=f.index)
    bot_score = np.maximum(profile.score, signals.max(axis=1).to_numpy())
    flagged = bot_score >= BOT_THRESHOLD
    pattern, reasons = _profile_reasons(f, profile, flagged)
    _add_signal_reasons(f, signals, profile.score >= BOT_THRESHOLD, pattern, reasons)
    pattern_z = profile.pattern_z
    return pd.DataFrame(
        {
            "user_id": f["user_id"],
            "window": window,
            "events": f["events"],
            "sessions": f["sessions"],
            "events_per_minute": f["events_per_minute"].round(3),
            "gap_cv": f["gap_cv"].round(3),
            "modal_gap_share": f["modal_gap_share"].round(3),
            "night_share": f["night_share"].round(3),
            "distinct_items": f["distinct_items"],
            "distinct_categories": f["distinct_categories"],
            "search_share": f["search_share"].round(4),
            "cart_share": f["cart_share"].round(4),
            "purchase_share": f["purchase_share"].round(4),
            "instant_purchases": f["instant_purchases"],
            "ordered_views": f["ordered_views"],
            "group_id": column_or(f, "group_id", ""),
            "copied_sessions": column_or(f, "copied_sessions", 0),
            "strongest_pattern": pattern_z.idxmax(axis=1).where(pattern_z.max(axis=1) > 0, ""),
            "pattern_z": pattern_z.max(axis=1).round(2),
            "isolation_anomaly": np.round(profile.anomaly, 4),
            "profile_score": np.round(profile.score, 4),
            "bot_score": np.round(bot_score, 4),
            "is_bot": flagged,
            "pattern": pattern,
            "reasons": reasons,
            "detector_version": DETECTOR_VERSION,
        }
    )


MIN_SESSION_EVENTS = 10


def score_sessions(sessions: pl.DataFrame, user_scores: pd.DataFrame) -> pd.DataFrame:
    """Per session: rate and timing, and whether it is bot traffic.

    A session is bot traffic when its user is flagged, or when the session alone is both fast
    and machine-regular (the weaker of the two robust z-scores at `PATTERN_Z_FULL` or more,
    among sessions with at least `MIN_SESSION_EVENTS` events): a script run inside a
    person's account.
    """
    s = sessions.to_pandas()
    enough = (s["events"] >= MIN_SESSION_EVENTS).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        fast = robust_z(np.log(s["events_per_minute"].to_numpy(float)), enough, 0.3)
        regular = robust_z(-np.log(s["gap_cv"].to_numpy(float).clip(1e-3)), enough, 0.3)
    session_z = np.where(enough, np.nan_to_num(np.minimum(fast, regular), nan=0.0), 0.0)
    flagged_user = s["user_id"].isin(user_scores.loc[user_scores["is_bot"], "user_id"]).to_numpy()
    scripted = session_z >= PATTERN_Z_FULL
    reason = np.where(flagged_user, "user flagged", "").astype(object)
    for i in np.flatnonzero(scripted & ~flagged_user):
        reason[i] = (
            f"{s['events'].iat[i]} events at {s['events_per_minute'].iat[i]:.0f} per minute, "
            f"gap CV {s['gap_cv'].iat[i]:.2f} (z={session_z[i]:.1f})"
        )
    return pd.DataFrame(
        {
            "user_id": s["user_id"],
            "session_start": pd.to_datetime(s["start_ms"], unit="ms", utc=True),
            "events": s["events"],
            "duration_s": (s["duration_ms"] / 1000).round(1),
            "events_per_minute": s["events_per_minute"].round(3),
            "gap_cv": s["gap_cv"].round(3),
            "distinct_items": s["distinct_items"],
            "searches": s["searches"],
            "session_z": np.round(session_z, 2),
            "is_bot_session": flagged_user | scripted,
            "reason": reason,
        }
    )
