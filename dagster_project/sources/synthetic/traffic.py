"""Planted non-human traffic and the hard negatives a bot detector must leave alone.

Five bot types (each imitates a pattern seen on real shops) and four kinds of legitimate but
unusual humans. Every function returns typed event rows in the generator's internal layout
(user_idx, session_key, item_idx, etype 0-3 = view/favorite/add_to_cart/purchase, time_ms,
quantity, price, query); the generator formats and exports them like any other event.

Rules every generator here keeps: no two events of one kind on one item in one session within
the near-duplicate window (the shop records a double click once), and session keys that cannot
collide with another part of the same chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd

from dagster_project.contracts import NEAR_DUPLICATE_WINDOW
from models.checks import Problems

MS_PER_DAY = 86_400_000
MS_PER_HOUR = 3_600_000
BOT_TYPES = ["crawler", "click_farm", "cart_stuffer", "price_scraper", "humanlike"]
HARD_NEGATIVES = ["bulk_buyer", "power_user", "shared_household", "flash_sale"]


@dataclass(frozen=True)
class TrafficMix:
    """Share of users of each planted bot type and hard-negative kind (each at least 2 users)."""

    crawler: float = 0.001
    click_farm: float = 0.003
    cart_stuffer: float = 0.001
    price_scraper: float = 0.001
    humanlike: float = 0.002
    bulk_buyer: float = 0.002
    power_user: float = 0.005
    shared_household: float = 0.005
    flash_sale: float = 0.01

    def __post_init__(self) -> None:
        """Every share in [0, 1), the bots' below 0.5 (as `with_bot_rate` keeps them) and all
        below 1 together (the rest of the users are plain humans); one ValueError lists all."""
        check = Problems("TrafficMix")
        check.shares(self)
        if not check.found:
            if not self.bot_rate < 0.5:
                check.add(
                    f"the bot shares ({', '.join(BOT_TYPES)}) must sum below 0.5, "
                    f"not {self.bot_rate:g}"
                )
            total = sum(getattr(self, f.name) for f in fields(self))
            if not total < 1:
                check.add(f"the shares must sum below 1, not {total:g}")
        check.raise_any()

    @property
    def bot_rate(self) -> float:
        return sum(getattr(self, k) for k in BOT_TYPES)

    def with_bot_rate(self, rate: float) -> TrafficMix:
        """The same mix of bot types, scaled so that bots are `rate` of all users."""
        if not 0 < rate < 0.5:
            raise ValueError(f"bot rate must be in (0, 0.5), not {rate}")
        scale = rate / self.bot_rate
        return replace(self, **{k: getattr(self, k) * scale for k in BOT_TYPES})

    def counts(self, n_users: int) -> dict[str, int]:
        return {f.name: max(2, round(n_users * getattr(self, f.name))) for f in fields(self)}


Draw = Callable[[np.ndarray], np.ndarray]  # leaf index per draw -> item index, by popularity


@dataclass
class Shop:
    """What the traffic generators need to know about the shop and its window."""

    start_ms: int
    n_days: int
    leaf: np.ndarray  # leaf category per item
    popularity: np.ndarray  # sampling weight per item
    price: np.ndarray  # list price per item
    leaf_query: np.ndarray  # search text per leaf (its noun)
    draw_in_leaf: Draw

    @property
    def n_items(self) -> int:
        return len(self.leaf)

    @property
    def n_leaves(self) -> int:
        return len(self.leaf_query)

    def popular_items(self, k: int) -> np.ndarray:
        return np.argsort(-self.popularity, kind="stable")[:k]


class _Rows:
    """Collects event arrays per account and builds one frame at the end."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(
        self,
        user: int,
        session: np.ndarray,
        item: np.ndarray,
        etype: np.ndarray,
        time_ms: np.ndarray,
        shop: Shop,
        quantity: np.ndarray | None = None,
        query: np.ndarray | None = None,
    ) -> None:
        n = len(item)
        etype = np.broadcast_to(np.asarray(etype), n).astype(np.int64)
        price = np.where(etype >= 2, shop.price[item], np.nan)
        self.parts.append(
            {
                "user_idx": np.full(n, user, np.int64),
                "session_key": np.broadcast_to(np.asarray(session), n).astype(np.int64),
                "item_idx": item.astype(np.int64),
                "etype": etype,
                "time_ms": time_ms.astype(np.int64),
                "quantity": (np.where(etype == 3, 1, 0) if quantity is None else quantity).astype(
                    np.int64
                ),
                "price": price,
                "query": np.full(n, None, dtype=object) if query is None else query,
            }
        )

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame()
        events = pd.DataFrame(
            {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        )
        return events[~_double_clicks(events)].reset_index(drop=True)


def _double_clicks(events: pd.DataFrame) -> np.ndarray:
    """Rows the shop records once: an event of the same kind on the same item in the same
    session within the near-duplicate window of the one before (e.g. a price scraper's two
    queries in one leaf listing the same item back to back); the other rows keep their order."""
    key = ["session_key", "item_idx", "etype"]
    ordered = events.sort_values([*key, "time_ms"], kind="stable")
    same = (ordered[key].diff() == 0).all(axis=1)
    close = ordered["time_ms"].diff() <= NEAR_DUPLICATE_WINDOW.total_seconds() * 1000
    return (same & close).reindex(events.index).to_numpy()


def _session_key(kind: str, user: int, session: int | np.ndarray) -> np.ndarray:
    """Negative keys, unique per (kind, user, session): never collide with human sessions."""
    code = (BOT_TYPES + HARD_NEGATIVES).index(kind) + 1
    return -(code * 10**11 + int(user) * 10_000 + np.asarray(session, dtype=np.int64)) - 1


def _day_start(shop: Shop, rng: np.random.Generator, last_margin: int = 1) -> int:
    return shop.start_ms + int(rng.integers(0, max(1, shop.n_days - last_margin))) * MS_PER_DAY


def crawler_events(shop: Shop, users: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Fast catalog crawlers: views only, a near-constant interval, walking the catalog.

    Each crawl runs 400-1,500 pages at one fixed interval (0.15-3 s, jitter of a few ms) over
    consecutive item ids, the way a sitemap walker pages through a catalog.
    """
    rows = _Rows()
    for u in users:
        n = int(rng.integers(400, 1_500))
        interval = int(rng.integers(150, 3_000))
        start = _day_start(shop, rng) + int(rng.integers(0, 20)) * MS_PER_HOUR
        t = start + np.arange(n) * interval + rng.integers(-5, 6, n)
        stride = int(rng.choice([1, 1, 7, 13]))
        item = (int(rng.integers(0, shop.n_items)) + stride * np.arange(n)) % shop.n_items
        session = _session_key("crawler", u, np.arange(n) // 500)
        rows.add(u, session, item, 0, t, shop)
    return rows.frame()


def click_farm_events(shop: Shop, users: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Click farms: groups of accounts pumping views, favorites and carts on a few items.

    Farms of 5-20 accounts share 2-5 target items. Each account works 60-250 actions at 3-12 s
    intervals in shifts of about 40 actions, and never buys.
    """
    rows = _Rows()
    users = rng.permutation(users)
    pos = 0
    while pos < len(users):
        farm = users[pos : pos + int(rng.integers(5, 21))]
        pos += len(farm)
        targets = rng.choice(shop.n_items, int(rng.integers(2, 6)), replace=False)
        day = _day_start(shop, rng, last_margin=2)
        for u in farm:
            n = int(rng.integers(60, 251))
            start = day + int(rng.integers(0, 20 * MS_PER_HOUR))
            shift = np.arange(n) // 40
            t = start + np.cumsum(rng.integers(3_000, 12_000, n)) + shift * 2 * MS_PER_HOUR
            item = rng.choice(targets, n)
            etype = rng.choice([0, 0, 0, 1, 2], n)
            rows.add(u, _session_key("click_farm", u, shift), item, etype, t, shop)
    return rows.frame()


def cart_stuffer_events(shop: Shop, users: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Inventory hoarders: add the same scarce items to cart again and again, never buy.

    Each account holds 3-10 popular items. Every 8-15 minutes (when a cart reservation would
    lapse) it views and re-adds each of them, for 1-3 days; a view precedes the add by 1-3 s.
    """
    rows = _Rows()
    hot = shop.popular_items(max(50, shop.n_items // 100))
    for u in users:
        items = rng.choice(hot, int(rng.integers(3, 11)), replace=False)
        cycles = int(rng.integers(8, 40))
        period = int(rng.integers(8, 16)) * 60_000
        start = _day_start(shop, rng, last_margin=3) + int(rng.integers(0, 24)) * MS_PER_HOUR
        cycle_start = start + np.arange(cycles) * period + rng.integers(0, 30_000, cycles)
        k = len(items)
        t_view = (
            np.repeat(cycle_start, k)
            + np.tile(np.arange(k), cycles) * 6_000
            + rng.integers(0, 1_500, cycles * k)
        )
        t_cart = t_view + rng.integers(1_000, 3_000, cycles * k)
        item = np.tile(items, cycles)
        session = _session_key("cart_stuffer", u, np.repeat(np.arange(cycles), k))
        view = rng.random(cycles * k) < 0.35  # often straight to the cart endpoint
        rows.add(u, session[view], item[view], 0, t_view[view], shop)
        rows.add(u, session, item, 2, t_cart, shop)
    return rows.frame()


def price_scraper_events(shop: Shop, users: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Price scrapers working through search: query after query, reading every result.

    Each account searches category after category (the query is the category noun) and opens
    10-30 results per query at 1-4 s, for 200-2,000 page views over a day or two. Views only.
    """
    rows = _Rows()
    for u in users:
        n_queries = int(rng.integers(15, 80))
        leaves = rng.choice(shop.n_leaves, n_queries, replace=True)
        per_query = rng.integers(10, 31, n_queries)
        q_of_view = np.repeat(np.arange(n_queries), per_query)
        item = shop.draw_in_leaf(leaves[q_of_view])
        # A result list shows each item once.
        unique = ~pd.DataFrame({"q": q_of_view, "i": item}).duplicated().to_numpy()
        q_of_view, item = q_of_view[unique], item[unique]
        start = _day_start(shop, rng, last_margin=2) + int(rng.integers(0, 24)) * MS_PER_HOUR
        t = start + np.cumsum(rng.integers(1_000, 4_000, len(item)))
        first = np.r_[True, q_of_view[1:] != q_of_view[:-1]]
        query = np.where(first, shop.leaf_query[leaves[q_of_view]], None).astype(object)
        session = _session_key("price_scraper", u, np.arange(len(item)) // 400)
        rows.add(u, session, item, 0, t, shop, query=query)
    return rows.frame()


def humanlike_bot_events(shop: Shop, users: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Humanlike bots: human gaps and a human funnel, run on a machine's schedule.

    Each account runs for 7-14 days, 4-10 sessions a day that start at even spacing
    (jittered by up to 12% of the spacing), around the clock or inside a 16-hour "day".
    A session views 3-9 items of 3-5 favourite categories at lognormal gaps (median 25 s);
    5% become favorites, 10% carts and a third of carts purchases; 20% of sessions begin
    with a search. Timing inside a session looks human; the day does not.
    """
    rows = _Rows()
    for u in users:
        n_days = int(rng.integers(7, max(8, min(15, shop.n_days + 1))))
        first_day = int(rng.integers(0, max(1, shop.n_days - n_days + 1)))
        per_day = int(rng.integers(4, 11))
        active_hours = 24 if rng.random() < 0.5 else 16
        offset_h = 0 if active_hours == 24 else int(rng.integers(6, 9))
        spacing = active_hours * MS_PER_HOUR // per_day
        n_s = n_days * per_day
        slot = np.arange(n_s)
        s_start = (
            shop.start_ms
            + (first_day + slot // per_day) * MS_PER_DAY
            + offset_h * MS_PER_HOUR
            + (slot % per_day) * spacing
            + (rng.uniform(-0.12, 0.12, n_s) * spacing).astype(np.int64)
            + spacing // 2
        )
        taste = rng.choice(shop.n_leaves, int(rng.integers(3, 6)), replace=False)
        n_views = rng.integers(3, 10, n_s)
        v_session = np.repeat(slot, n_views)
        v_item = shop.draw_in_leaf(rng.choice(taste, len(v_session)))
        gaps = rng.lognormal(np.log(25_000), 0.6, len(v_session)).astype(np.int64)
        first = np.r_[True, v_session[1:] != v_session[:-1]]
        gaps[first] = 0
        cum = np.cumsum(gaps)
        v_time = s_start[v_session] + cum - np.maximum.accumulate(np.where(first, cum, 0))
        # One view per item per session, as a person would not reopen it within seconds.
        keep = ~pd.DataFrame({"s": v_session, "i": v_item}).duplicated().to_numpy()
        v_session, v_item, v_time, first = v_session[keep], v_item[keep], v_time[keep], first[keep]
        search = rng.random(n_s) < 0.2
        query = np.where(first & search[v_session], shop.leaf_query[shop.leaf[v_item]], None)
        session = _session_key("humanlike", u, v_session)
        rows.add(u, session, v_item, 0, v_time, shop, query=query.astype(object))
        fav = rng.random(len(v_item)) < 0.05
        cart = rng.random(len(v_item)) < 0.10
        buy = cart & (rng.random(len(v_item)) < 0.33)
        for mask, etype, lo, hi in [
            (fav, 1, 3_000, 20_000),
            (cart, 2, 8_000, 60_000),
            (buy, 3, 90_000, 600_000),
        ]:
            t = v_time[mask] + rng.integers(lo, hi, int(mask.sum()))
            rows.add(u, session[mask], v_item[mask], etype, t, shop)
    return rows.frame()


def bulk_buyer_events(shop: Shop, users: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Hard negative: B2B buyers re-ordering the same SKUs in bulk, in office hours.

    Each account keeps an order list of 5-25 items from 1-3 categories and re-orders most of
    it every 3-8 days between 08:00 and 18:00: cart then purchase (a view first half the time)
    at quick 4-40 s steps, quantities 10-200.
    """
    rows = _Rows()
    for u in users:
        leaves = rng.choice(shop.n_leaves, int(rng.integers(1, 4)), replace=False)
        order_list = np.unique(shop.draw_in_leaf(rng.choice(leaves, int(rng.integers(5, 26)))))
        day = float(rng.integers(0, 4))
        s = 0
        while day < shop.n_days:
            items = order_list[rng.random(len(order_list)) < 0.8]
            if len(items):
                start = (
                    shop.start_ms
                    + int(day) * MS_PER_DAY
                    + int(rng.integers(8, 17)) * MS_PER_HOUR
                    + int(rng.integers(0, MS_PER_HOUR))
                )
                t_cart = start + np.cumsum(rng.integers(4_000, 40_000, len(items)))
                viewed = rng.random(len(items)) < 0.5
                session = _session_key("bulk_buyer", u, s)
                rows.add(u, session, items[viewed], 0, t_cart[viewed] - 3_000, shop)
                rows.add(u, session, items, 2, t_cart, shop)
                t_buy = t_cart[-1] + int(rng.integers(30_000, 300_000))
                qty = rng.integers(10, 201, len(items))
                rows.add(u, session, items, 3, np.full(len(items), t_buy), shop, quantity=qty)
            day += float(rng.integers(3, 9))
            s += 1
    return rows.frame()


def flash_sale_events(
    shop: Shop, users: np.ndarray, rng: np.random.Generator
) -> tuple[pd.DataFrame, int, np.ndarray]:
    """Hard negative: people rushing a flash sale, refreshing the deal page until it opens.

    One sale, at 19:00 on a day in the middle of the window, on 3 popular items. Each
    participant arrives within minutes, reloads one deal 2-10 times at 2.5-8 s, adds it to
    the cart and buys it 70% of the time. They are ordinary shoppers the rest of the month.
    Returns the events, the sale's start (epoch ms) and the deal items.
    """
    rows = _Rows()
    sale_start = shop.start_ms + (shop.n_days // 2) * MS_PER_DAY + 19 * MS_PER_HOUR
    deals = shop.popular_items(3)
    for u in users:
        item = int(rng.choice(deals))
        k = int(rng.integers(2, 11))
        t = (
            sale_start
            - int(rng.integers(0, 120_000))
            + int(rng.exponential(240_000))
            + np.cumsum(rng.integers(2_500, 8_000, k))
        )
        session = _session_key("flash_sale", u, 0)
        rows.add(u, session, np.full(k, item), 0, t, shop)
        t_cart = t[-1] + int(rng.integers(3_000, 15_000))
        rows.add(u, session, np.array([item]), 2, np.array([t_cart]), shop)
        if rng.random() < 0.7:
            t_buy = t_cart + int(rng.integers(20_000, 90_000))
            rows.add(u, session, np.array([item]), 3, np.array([t_buy]), shop)
    return rows.frame(), sale_start, deals


BOT_GENERATORS = {
    "crawler": crawler_events,
    "click_farm": click_farm_events,
    "cart_stuffer": cart_stuffer_events,
    "price_scraper": price_scraper_events,
    "humanlike": humanlike_bot_events,
}
