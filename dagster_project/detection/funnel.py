"""Speed along the purchase funnel and the order of browsing, per user: signals of scripts
that look human in rate and rhythm but not in what they do.

Input: the detector's event frame (`bots.prepare_events`: user_id, item_id, event_type, t in
epoch ms, category, price). Every figure is a count or a duration of seconds, so none
depends on how the export rounds its timestamps (tested on whole-second and jittered data).

- `funnel_speed`: for each purchase, the seconds from the last view of the item (within
  `VISIT_LOOKBACK_MS` before) to the purchase, and whether an add-to-cart came between. A
  person opens a product, reads, maybe adds it to the cart, then pays, which takes half a
  minute or more (on the Taobao sample 1% of purchases with a view before them took under
  30 s and 0.1% under 10 s); a buy-now script pays seconds after the page loads. Also the
  purchases made without any add-to-cart, and the seconds from the account's first event to
  its first purchase.
- `listing_order`: the longest run of consecutive views, inside one category, that follow a
  catalog listing order (item id, or price) up or down. A shopper opens items in the order
  search and taste put them; a crawler walks the listing. In random order a run of k
  consecutive rising steps has probability 1/(k+1)!, so long runs do not happen by chance
  (`signals` flags from 13 views). Also the largest share of one category's items viewed.
"""

from __future__ import annotations

import numpy as np
import polars as pl

INSTANT_PURCHASE_S = 10.0  # a purchase this soon after first opening the item: a script
VISIT_LOOKBACK_MS = 30 * 60_000  # first touch of the item within this before the purchase
MIN_CATEGORY_ITEMS = 10  # coverage only of categories with at least this many catalog items


def funnel_speed(ev: pl.DataFrame) -> pl.DataFrame:
    """Per user with purchases: instant purchases (paid within `INSTANT_PURCHASE_S` of the
    last view of the item, with no add-to-cart between: "buy now" at script speed), the
    purchases with a view of the item in the `VISIT_LOOKBACK_MS` before them and their median
    decision time, purchases with no add-to-cart of the item before them, and the seconds
    from the account's first event to its first purchase."""
    kind = pl.col("event_type")
    touches = (
        ev.filter(kind.is_in(["view", "add_to_cart", "purchase"]))
        .select(
            "user_id",
            "item_id",
            "t",
            (kind == "purchase").alias("buy"),
            pl.when(kind == "view").then(pl.col("t")).alias("view_t"),
            pl.when(kind == "add_to_cart").then(pl.col("t")).alias("cart_t"),
        )
        .sort([pl.col("user_id").to_physical(), pl.col("item_id").to_physical(), "t", "buy"])
    )
    item = [pl.col("user_id").to_physical(), pl.col("item_id").to_physical()]
    touches = touches.with_columns(
        pl.col("view_t").forward_fill().over(item).alias("last_view"),
        pl.col("cart_t").forward_fill().over(item).alias("last_cart"),
    )
    seen = (pl.col("t") - pl.col("last_view")).is_between(1, VISIT_LOOKBACK_MS)
    buys = touches.filter(pl.col("buy")).with_columns(
        pl.when(seen).then((pl.col("t") - pl.col("last_view")) / 1000).alias("decision_s"),
        pl.col("last_cart").is_null().alias("no_cart"),
        (pl.col("last_cart").is_null() | (pl.col("last_cart") < pl.col("last_view"))).alias(
            "buy_now"
        ),
    )
    instant = (pl.col("decision_s") <= INSTANT_PURCHASE_S) & pl.col("buy_now")
    per_user = buys.group_by("user_id").agg(
        pl.col("decision_s").count().alias("decided_purchases"),
        instant.sum().alias("instant_purchases"),
        pl.col("decision_s").median().alias("median_decision_s"),
        pl.col("no_cart").sum().alias("purchases_without_cart"),
        pl.col("t").min().alias("first_purchase_ms"),
    )
    first_event = ev.group_by("user_id").agg(pl.col("t").min().alias("first_ms"))
    return (
        per_user.join(first_event, on="user_id")
        .with_columns(
            ((pl.col("first_purchase_ms") - pl.col("first_ms")) / 1000).alias(
                "first_purchase_after_s"
            )
        )
        .drop("first_purchase_ms", "first_ms")
    )


def _listing_ranks(ev: pl.DataFrame) -> pl.DataFrame:
    """Each viewed item's rank in its category by item id (numeric where ids are numbers)
    and by price (ties by id), over the items the events and catalog columns know."""
    items = ev.select("item_id", "category", "price").unique("item_id")
    name = pl.col("item_id").cast(pl.String)
    items = items.with_columns(
        name.str.extract(r"(\d+)$").cast(pl.Int64, strict=False).alias("number"),
        name.alias("name"),
    )
    by_id = items.sort("category", "number", "name", nulls_last=True)
    by_price = items.sort("category", "price", "number", "name", nulls_last=True)
    position = pl.int_range(pl.len()).over("category")
    return by_id.select("item_id", position.alias("id_rank")).join(
        by_price.select("item_id", position.alias("price_rank")), on="item_id"
    )


def _longest_run(user: np.ndarray, category: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Per step (views in user and time order), the length in views of the longest run it
    belongs to whose `key` keeps rising, or keeps falling, inside one user and category."""
    same = (user[1:] == user[:-1]) & (category[1:] == category[:-1])
    step = np.diff(key.astype(np.int64))
    best = np.ones(len(key), np.int64)
    for direction in (1, -1):
        walking = np.r_[False, same & (direction * step > 0)]
        run = np.cumsum(~walking)  # a new run wherever the walk breaks
        best = np.maximum(best, np.bincount(run)[run])
    return best


def listing_order(ev: pl.DataFrame) -> pl.DataFrame:
    """Per user with views: the longest run of views walking a category's listing by id or
    by price (`ordered_views`, with the order it followed, `listing_order`) and the largest
    share of a category's items viewed (`category_coverage`, categories with at least
    `MIN_CATEGORY_ITEMS` items). The listing is the items the events show, with the
    category and price `ev` carries (`bots.prepare_events`)."""
    views = ev.filter(pl.col("event_type") == "view").select("user_id", "item_id", "t", "category")
    listing = (
        ev.select("item_id", "category", "price")
        .unique("item_id")
        .filter(pl.col("category").is_not_null())
    )
    ranks = _listing_ranks(listing)
    steps = (
        views.join(ranks, on="item_id", how="inner")
        .sort([pl.col("user_id").to_physical(), "t"])
        # consecutive views of one item are one step (a reload), not a walk
        .filter(
            (pl.col("user_id") != pl.col("user_id").shift(1))
            | (pl.col("item_id") != pl.col("item_id").shift(1))
            | pl.col("user_id").shift(1).is_null()
        )
    )
    user = steps["user_id"].to_physical().to_numpy()
    category = steps["category"].to_physical().to_numpy()
    runs = steps.select("user_id").with_columns(
        pl.Series("id_rank", _longest_run(user, category, steps["id_rank"].to_numpy())),
        pl.Series("price_rank", _longest_run(user, category, steps["price_rank"].to_numpy())),
    )
    longest = runs.group_by("user_id").agg(pl.col("id_rank", "price_rank").max())
    sizes = listing.group_by("category").agg(pl.col("item_id").n_unique().alias("size"))
    coverage = (
        views.drop_nulls("category")
        .group_by("user_id", "category")
        .agg(pl.col("item_id").n_unique().alias("seen"))
        .join(sizes.filter(pl.col("size") >= MIN_CATEGORY_ITEMS), on="category")
        .group_by("user_id")
        .agg((pl.col("seen") / pl.col("size")).max().alias("category_coverage"))
    )
    has_price = listing["price"].is_not_null().any()
    price_run = pl.col("price_rank") if has_price else pl.lit(0, pl.UInt32)
    return longest.select(
        "user_id",
        pl.max_horizontal("id_rank", price_run).alias("ordered_views"),
        pl.when(price_run > pl.col("id_rank"))
        .then(pl.lit("price"))
        .otherwise(pl.lit("item id"))
        .alias("listing_order"),
    ).join(coverage, on="user_id", how="left")
