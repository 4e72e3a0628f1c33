"""Independent bot designs: automated shop traffic to inject into a real or generated behaviour log.

Written as an adversary of the platform's bot detector, without reference to the detector, to the
synthetic-shop generator or to the other bot designs in this package. Each design imitates a kind of
automation real shops see, and tries to evade the obvious tells (speed, regularity, night activity,
cold items, odd event mix) while staying true to its class. Whatever a design needs to look human it
learns from the real events it is given: the hour-of-day profile of activity, the distribution of
gaps between a person's consecutive events, item and category popularity, and the event-type mix.

Classes and designs
-------------------
``lockstep`` (coordinated accounts acting together on a few target items in the same windows)

``favour_ring``  Paid favourite/brushing ring (whole-second timestamps). A seller buys a campaign
    for 2-4 little-known items of one category. Over 3-6 consecutive days, the ring's coordinator
    posts a daily task window (1-2 hours, at a busy hour of the shop's day), each day focusing on
    one or two of the targets. Most accounts take part in most windows: they open the shop at a
    random moment in the window, browse popular items for a while (human gaps, category-coherent
    browsing, the shop's own favourite/cart rates), then view the day's target(s), favourite each
    target once, sometimes add it to the cart and rarely buy it (a brushed order), then browse a
    little more. Between campaign days the accounts are "aged" with ordinary browsing sessions.
``search_boost``  Search-rank boosting squad (millisecond timestamps). To push 1-3 items up the
    results of a keyword, accounts search the keyword, open one to three competitors from the same
    category from the results, then the target, and add it to the cart (sometimes favourite it,
    rarely buy it). Each day has one or two short campaign windows (30-60 min), each pushing one of
    the targets; a random ~75% of the squad turns up in each window, staggered over it. Camouflage browsing before and after, and
    plain browsing sessions on other days.

``scalper`` (view, then buy within seconds, no cart; many small accounts)

``drop_sniper``  Limited-release sniper (whole seconds). A few popular items "drop" on the hour at
    busy hours; each account is pointed at one drop (some at two). Half of them poll the page some
    minutes before; at the drop they view it within a few seconds (sometimes refresh once) and buy
    2-9 seconds later. Two to eight events per account, nothing else.
``trickle_buyer``  Stealth reseller buyer (milliseconds). Rather than one burst, the accounts buy a
    handful of hot items (items real users buy) at times drawn from the shop's daily activity
    profile, one or two visits on different days per account. A visit may start with one cover view
    of a popular item of the same category, then the target is viewed and bought after a
    log-normal 1-15 s delay.

``crawler`` (slow catalog walks at tens of seconds per view; few or no purchases)

``id_crawler``  Catalogue crawler by item id (whole seconds). Each account walks a large category's
    items in item-id order (then the next category), resuming where it stopped, in 2-5 sessions
    of 40-140 views on different days started at ordinary busy hours. Per-account gamma-distributed
    dwell of 22-48 s mean (CV ~0.4), occasional longer stalls and skipped items. Views only.
``price_crawler``  Distributed price monitor (milliseconds). One category's search listing sorted by
    price (ascending; unpriced items last; item id breaks ties) is split in pages of 20 that the
    accounts take in turn. Each account runs once a day at about the same hour (+-40 min), covering
    its next 2-5 pages with log-normal dwell (median 18-35 s), every view carrying the search
    keyword. After the listing it goes on to the next categories' listings (then starts again). Very rarely adds to the cart (to read a price).

``copy`` (real users' sessions replayed later by other accounts at 0.5-1x their pace)

``profile_clone``  Profile cloning (milliseconds). Each account copies one real user: a run of 1-3 of
    that user's consecutive sessions, shifted by whole days (+-1 h) later, every gap within a
    session scaled by one pace factor in [0.5, 1], with sub-second jitter and ~5% of events dropped.
``session_splice``  Spliced replay (whole seconds). Each account replays 2-4 sessions of different
    real users, each shifted to a later day at about the same hour of the day, each with its own
    pace factor in [0.5, 1] and 0-15% of its events dropped; the account's sessions never overlap.

Every design's randomness comes from its own ``numpy.random.default_rng`` stream seeded by the
seed and the design's name, so a design's traffic does not depend on which other designs are run.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

DESIGNS: dict[str, str] = {
    "favour_ring": "lockstep",
    "search_boost": "lockstep",
    "drop_sniper": "scalper",
    "trickle_buyer": "scalper",
    "id_crawler": "crawler",
    "price_crawler": "crawler",
    "profile_clone": "copy",
    "session_splice": "copy",
}

# Designs whose timestamps carry milliseconds; the others are whole seconds.
_MILLISECOND_DESIGNS = {"search_boost", "trickle_buyer", "price_crawler", "profile_clone"}

# Relative number of accounts per design, by class (scalpers are many small accounts, crawlers few).
_CLASS_WEIGHT = {"lockstep": 1.25, "scalper": 1.5, "crawler": 0.5, "copy": 1.0}
_MIN_ACCOUNTS = 3

_DAY = 86_400.0
_HOUR = 3_600.0
_SESSION_BREAK = 1_800.0  # a gap longer than this starts a new session

EVENT_TYPES = ("view", "favorite", "add_to_cart", "purchase")

_ADJECTIVES = ("mini", "soft", "smart", "classic", "slim", "warm", "pro", "cute", "light", "retro")
_NOUNS = (
    "bag",
    "jacket",
    "charger",
    "mug",
    "lamp",
    "sneakers",
    "scarf",
    "earbuds",
    "case",
    "dress",
    "watch",
    "pillow",
    "bottle",
    "socks",
    "cream",
    "backpack",
)

# (item_id, event_type, time in seconds since the epoch, query)
_Event = tuple[str, str, float, str | None]


@dataclass
class _Shop:
    """What the designs learn from the real events and the catalog."""

    t_min: float  # hard bounds: the real events' first and last event
    t_max: float
    lo: float  # the busy part of the window, where bots are placed
    hi: float
    day0: int
    day1: int
    hour_w: np.ndarray  # share of real activity per UTC hour
    gaps: np.ndarray  # a person's within-session gaps (s), >= 1
    short_gaps: np.ndarray  # gaps of <= 30 s, for an action right after a view
    pop_items: np.ndarray  # items of real events (in the catalog), by popularity
    pop_p: np.ndarray
    cats: np.ndarray  # categories of real activity, by popularity
    cat_p: np.ndarray
    cat_pop: dict[str, tuple[np.ndarray, np.ndarray]]  # category -> its popular items, weights
    cat_of: dict[str, str]
    catalog_cats: list[str]  # catalog categories, in listing order
    cat_by_id: dict[str, np.ndarray]  # category -> items in item-id order
    cat_by_price: dict[str, np.ndarray]  # category -> items by price (unpriced last), then id
    item_count: dict[str, int]
    bought_items: np.ndarray  # items real users purchased
    p_fav: float
    p_cart: float
    p_buy_after_cart: float
    sess_user: np.ndarray  # real sessions: user, [start, end) into the sorted arrays below
    sess_start: np.ndarray
    sess_end: np.ndarray
    ev_item: np.ndarray
    ev_type: np.ndarray
    ev_t: np.ndarray
    ev_query: np.ndarray

    # ---- sampling helpers -------------------------------------------------------------------

    def gap(self, rng: np.random.Generator) -> float:
        """A human gap between two events of one session (seconds)."""
        return float(rng.choice(self.gaps)) + float(rng.random())

    def short_gap(self, rng: np.random.Generator) -> float:
        return float(rng.choice(self.short_gaps)) + float(rng.random())

    def popular_item(self, rng: np.random.Generator) -> str:
        return str(rng.choice(self.pop_items, p=self.pop_p))

    def category(self, rng: np.random.Generator) -> str:
        return str(rng.choice(self.cats, p=self.cat_p))

    def item_in(self, rng: np.random.Generator, cat: str) -> str:
        items, p = self.cat_pop.get(cat, (None, None))
        if items is None:
            return self.popular_item(rng)
        return str(rng.choice(items, p=p))

    def start(self, rng: np.random.Generator, duration: float, day: int | None = None) -> float:
        """A session start at an hour drawn from the shop's daily profile, so that the session of
        about `duration` seconds fits in the busy window (on `day`, when given)."""
        end = max(self.lo, self.hi - duration)
        for _ in range(60):
            d = int(rng.integers(self.day0, self.day1 + 1)) if day is None else day
            h = int(rng.choice(24, p=self.hour_w))
            t = d * _DAY + (h + float(rng.random())) * _HOUR
            if self.lo <= t <= end:
                return t
        if day is not None:
            a, b = max(self.lo, day * _DAY), min(end, (day + 1) * _DAY)
            if a <= b:
                return float(rng.uniform(a, b))
        return float(rng.uniform(self.lo, end)) if end > self.lo else self.lo

    def days(self, rng: np.random.Generator, k: int, exclude: set[int] | None = None) -> list[int]:
        """Up to k distinct days of the busy window, in order (avoiding `exclude` if possible)."""
        all_days = list(range(self.day0, self.day1 + 1))
        free = [d for d in all_days if not exclude or d not in exclude] or all_days
        k = min(k, len(free))
        return sorted(int(d) for d in rng.choice(free, size=k, replace=False))

    def keyword(self, cat: str) -> str:
        h = zlib.crc32(cat.encode())
        return f"{_ADJECTIVES[h % len(_ADJECTIVES)]} {_NOUNS[(h >> 8) % len(_NOUNS)]}"

    # ---- human-looking browsing -------------------------------------------------------------

    def browse(
        self, rng: np.random.Generator, t: float, n: int, cat: str | None = None
    ) -> tuple[list[_Event], float]:
        """n page views of popular items, category-coherent, with human gaps and the shop's own
        favourite / cart / purchase rates. Returns the events and the time after the last one."""
        out: list[_Event] = []
        cat = cat or self.category(rng)
        prev: str | None = None
        for _ in range(n):
            if rng.random() < 0.12:
                cat = self.category(rng)
            item = prev if prev is not None and rng.random() < 0.08 else self.item_in(rng, cat)
            out.append((item, "view", t, None))
            if rng.random() < self.p_fav:
                t += self.short_gap(rng)
                out.append((item, "favorite", t, None))
            if rng.random() < self.p_cart:
                t += self.short_gap(rng)
                out.append((item, "add_to_cart", t, None))
                if rng.random() < self.p_buy_after_cart:
                    t += self.gap(rng)
                    out.append((item, "purchase", t, None))
            prev = item
            t += self.gap(rng)
        return out, t


def event_seconds(times: pd.Series) -> np.ndarray:
    """Epoch seconds (float) of event times at any resolution, naive ones taken as UTC."""
    times = pd.to_datetime(times)
    if times.dt.tz is None:
        times = times.dt.tz_localize("UTC")
    delta = times - pd.Timestamp(0, tz="UTC")
    return (delta / pd.Timedelta(seconds=1)).to_numpy(dtype=float)


def _id_order(ids: pd.Series) -> pd.Series:
    """Sort keys for item ids: numeric when all ids are numbers, else the string itself."""
    num = pd.to_numeric(ids, errors="coerce")
    return num if num.notna().all() else ids


def _weights(counts: np.ndarray, power: float = 0.8) -> np.ndarray:
    w = np.asarray(counts, dtype=float) ** power
    return w / w.sum()


def _catalog_frame(catalog: pd.DataFrame) -> pd.DataFrame:
    cat_df = catalog[["item_id", "category", "price"]].copy()
    cat_df["item_id"] = cat_df["item_id"].astype(str)
    cat_df["category"] = cat_df["category"].astype(str)
    cat_df = cat_df.drop_duplicates("item_id")
    if cat_df.empty:
        raise ValueError("catalog is empty")
    return cat_df


def _real_frame(real_events: pd.DataFrame) -> pd.DataFrame:
    """The real log as (user_id, item_id, event_type, t in epoch seconds, query), sorted by
    user and time."""
    ev = pd.DataFrame(
        {
            "user_id": real_events["user_id"].astype(str).to_numpy(),
            "item_id": real_events["item_id"].astype(str).to_numpy(),
            "event_type": real_events["event_type"].astype(str).to_numpy(),
            "t": event_seconds(real_events["event_time"]),
            "query": real_events["query"].to_numpy()
            if "query" in real_events
            else np.full(len(real_events), None, dtype=object),
        }
    )
    return ev.sort_values(["user_id", "t"], kind="stable").reset_index(drop=True)


def _human_gaps(ev: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gaps, short gaps, within-session mask) from the real users' clicks."""
    dt = ev["t"].diff().to_numpy()
    same_user = (ev["user_id"] == ev["user_id"].shift()).to_numpy()
    within = same_user & (dt <= _SESSION_BREAK)
    gaps = dt[within & (dt >= 1.0)]
    if len(gaps) < 50:
        gaps = np.concatenate(
            [gaps, np.random.default_rng(0).lognormal(np.log(45.0), 1.1, 500).clip(1, 1800)]
        )
    short = gaps[gaps <= 30.0]
    if len(short) < 10:
        short = np.arange(1.0, 31.0)
    return gaps, short, within


def _popularity(ev: pd.DataFrame, cat_df: pd.DataFrame, cat_of: dict[str, str]) -> dict:
    """Item and category popularity among the real users, and the items they bought."""
    in_cat = ev[ev["item_id"].isin(cat_of)]
    if in_cat.empty:  # real items unknown to the catalog: fall back to uniform popularity
        counts = pd.Series(1, index=cat_df["item_id"].to_numpy())
    else:
        counts = in_cat["item_id"].value_counts()
    pop_items = counts.index.to_numpy(dtype=object).astype(str)
    item_cat = np.array([cat_of[i] for i in pop_items], dtype=object)
    cat_counts = pd.Series(counts.to_numpy(), index=item_cat).groupby(level=0).sum()
    cat_pop: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for c, idx in pd.Series(np.arange(len(pop_items))).groupby(item_cat).groups.items():
        ix = np.asarray(idx)
        cat_pop[str(c)] = (pop_items[ix], _weights(counts.to_numpy()[ix]))
    return {
        "pop_items": pop_items,
        "pop_p": _weights(counts.to_numpy()),
        "cats": cat_counts.index.to_numpy().astype(str),
        "cat_p": _weights(cat_counts.to_numpy(), 0.9),
        "cat_pop": cat_pop,
        "item_count": {str(k): int(v) for k, v in counts.items()},
        "bought_items": in_cat.loc[in_cat["event_type"] == "purchase", "item_id"]
        .unique()
        .astype(str),
    }


def _listings(cat_df: pd.DataFrame) -> dict:
    """Each category's items in catalog order by id and by price, and the categories in
    catalog order."""
    cat_df = cat_df.assign(_id=_id_order(cat_df["item_id"]))
    by_id = cat_df.sort_values(["category", "_id"], kind="stable")
    cat_by_id = {str(c): g["item_id"].to_numpy() for c, g in by_id.groupby("category", sort=False)}
    by_price = cat_df.assign(_p=pd.to_numeric(cat_df["price"], errors="coerce")).sort_values(
        ["category", "_p", "_id"], na_position="last", kind="stable"
    )
    cat_by_price = {
        str(c): g["item_id"].to_numpy() for c, g in by_price.groupby("category", sort=False)
    }
    catalog_cats = sorted(cat_by_id, key=lambda c: (_id_order(pd.Series([c])).iloc[0], c))
    if pd.to_numeric(pd.Series(catalog_cats), errors="coerce").isna().any():
        catalog_cats = sorted(cat_by_id)
    return {"cat_by_id": cat_by_id, "cat_by_price": cat_by_price, "catalog_cats": catalog_cats}


def _funnel_rates(ev: pd.DataFrame) -> dict:
    """The real users' favourite and cart rates per view, and purchases per cart."""
    type_counts = ev["event_type"].value_counts()
    n_view = max(int(type_counts.get("view", 0)), 1)
    bought = type_counts.get("purchase", 0) / max(type_counts.get("add_to_cart", 0), 1)
    return {
        "p_fav": float(np.clip(type_counts.get("favorite", 0) / n_view, 0.005, 0.08)),
        "p_cart": float(np.clip(type_counts.get("add_to_cart", 0) / n_view, 0.01, 0.12)),
        "p_buy_after_cart": float(np.clip(bought, 0.1, 0.5)),
    }


def _shop(real_events: pd.DataFrame, catalog: pd.DataFrame) -> _Shop:
    """What the designs learn from the real log: its window, hours, gaps, popularity,
    listings and funnel rates, and its sessions (to copy)."""
    if real_events.empty:
        raise ValueError("real_events is empty")
    cat_df = _catalog_frame(catalog)
    cat_of = dict(zip(cat_df["item_id"], cat_df["category"], strict=True))
    ev = _real_frame(real_events)
    t_min, t_max = float(ev["t"].min()), float(ev["t"].max())
    lo = max(t_min, float(np.quantile(ev["t"], 0.01)))
    if t_max - lo < _HOUR:  # a tiny log: use all of it
        lo = t_min
    hours = ((ev["t"] // _HOUR) % 24).astype(int)
    hour_w = np.bincount(hours, minlength=24).astype(float) + 0.5
    gaps, short, within = _human_gaps(ev)
    starts = np.flatnonzero(~within)
    return _Shop(
        t_min=t_min,
        t_max=t_max,
        lo=lo,
        hi=t_max,
        day0=int(lo // _DAY),
        day1=int(t_max // _DAY),
        hour_w=hour_w / hour_w.sum(),
        gaps=gaps,
        short_gaps=short,
        cat_of=cat_of,
        **_popularity(ev, cat_df, cat_of),
        **_listings(cat_df),
        **_funnel_rates(ev),
        sess_user=ev["user_id"].to_numpy()[starts],
        sess_start=starts,
        sess_end=np.append(starts[1:], len(ev)),
        ev_item=ev["item_id"].to_numpy(),
        ev_type=ev["event_type"].to_numpy(),
        ev_t=ev["t"].to_numpy(),
        ev_query=ev["query"].to_numpy(),
    )


# ---- target choice ------------------------------------------------------------------------------


def _campaign_targets(rng: np.random.Generator, shop: _Shop, k: int) -> tuple[str, list[str]]:
    """A seller's k little-known items of one category that the shop's users do browse."""
    cats = [c for c in shop.cats if len(shop.cat_by_id.get(c, ())) >= k + 2]
    if not cats:
        cats = [c for c in shop.catalog_cats if len(shop.cat_by_id[c]) >= 1]
        cat = str(rng.choice(cats))
    else:
        w = np.array([shop.cat_p[list(shop.cats).index(c)] for c in cats])
        cat = str(rng.choice(cats, p=w / w.sum()))
    items = shop.cat_by_id[cat]
    cold = [i for i in items if shop.item_count.get(i, 0) <= 2] or list(items)
    k = min(k, len(cold))
    return cat, [str(i) for i in rng.choice(cold, size=k, replace=False)]


def _hot_items(rng: np.random.Generator, shop: _Shop, k: int) -> list[str]:
    """k popular items (preferably ones real users buy)."""
    pool = shop.bought_items if len(shop.bought_items) >= k else shop.pop_items[:200]
    counts = np.array([shop.item_count.get(i, 1) for i in pool], dtype=float)
    k = min(k, len(pool))
    return [str(i) for i in rng.choice(pool, size=k, replace=False, p=_weights(counts, 1.0))]


# ---- lockstep ------------------------------------------------------------------------------------


def _aging_sessions(
    rng: np.random.Generator, shop: _Shop, busy_days: set[int], k: int
) -> list[_Event]:
    out: list[_Event] = []
    for day in shop.days(rng, k, exclude=busy_days):
        n = int(rng.integers(5, 40))
        evs, _ = shop.browse(rng, shop.start(rng, n * 120.0, day), n)
        out += evs
    return out


def _campaign_days(rng: np.random.Generator, shop: _Shop, shortest: int, longest: int) -> list[int]:
    """Consecutive days of a campaign: shortest .. longest - 1 of them, inside the window."""
    n_days = shop.day1 - shop.day0 + 1
    camp_len = int(min(n_days, rng.integers(shortest, longest)))
    first = int(rng.integers(shop.day0, shop.day1 - camp_len + 2))
    return list(range(first, first + camp_len))


def _joins(rng: np.random.Generator, n_windows: int, share: float) -> np.ndarray:
    """Which of a campaign's windows one account takes part in: each with `share`, and at
    least two of them."""
    joined = rng.random(n_windows) < share
    if joined.sum() < min(2, n_windows):
        joined[rng.choice(n_windows, size=min(2, n_windows), replace=False)] = True
    return joined


def _favour_ring(rng: np.random.Generator, shop: _Shop, n_acc: int) -> list[list[_Event]]:
    camp_days = _campaign_days(rng, shop, 3, 7)
    _, targets = _campaign_targets(rng, shop, int(rng.integers(2, 5)))
    windows = []
    for d in camp_days:
        width = float(rng.uniform(_HOUR, 2 * _HOUR))
        focus = [
            str(x)
            for x in rng.choice(
                targets, size=min(len(targets), int(rng.integers(1, 3))), replace=False
            )
        ]
        windows.append((shop.start(rng, width + 1_800.0, d), width, focus))

    accounts: list[list[_Event]] = []
    for _ in range(n_acc):
        joined = _joins(rng, len(windows), 0.8)
        faved: set[str] = set()
        bought = False
        evs: list[_Event] = []
        for (w0, width, focus), on in zip(windows, joined, strict=True):
            if not on:
                continue
            t = w0 + float(rng.uniform(0, width))
            pre, t = shop.browse(rng, t, int(rng.integers(2, 10)))
            evs += pre
            for tgt in focus:
                for _ in range(int(rng.integers(1, 3))):
                    evs.append((tgt, "view", t, None))
                    t += shop.gap(rng)
                if tgt not in faved:
                    evs.append((tgt, "favorite", t, None))
                    faved.add(tgt)
                    t += shop.short_gap(rng)
                if rng.random() < 0.3:
                    evs.append((tgt, "add_to_cart", t, None))
                    t += shop.gap(rng)
                    if not bought and rng.random() < 0.25:
                        evs.append((tgt, "purchase", t, None))
                        bought = True
                        t += shop.gap(rng)
            post, _ = shop.browse(rng, t, int(rng.integers(2, 9)))
            evs += post
        evs += _aging_sessions(rng, shop, set(camp_days), int(rng.integers(1, 4)))
        accounts.append(evs)
    return accounts


def _search_boost(rng: np.random.Generator, shop: _Shop, n_acc: int) -> list[list[_Event]]:
    camp_days = _campaign_days(rng, shop, 4, 9)
    cat, targets = _campaign_targets(rng, shop, int(rng.integers(1, 4)))
    kw = shop.keyword(cat)
    windows = []
    for d in camp_days:
        for _ in range(int(rng.integers(1, 3))):
            width = float(rng.uniform(1_800.0, _HOUR))
            windows.append((shop.start(rng, width + 1_800.0, d), width, str(rng.choice(targets))))
    windows.sort()

    accounts: list[list[_Event]] = []
    for _ in range(n_acc):
        joined = _joins(rng, len(windows), 0.75)
        faved: set[str] = set()
        bought = False
        evs: list[_Event] = []
        last_end = -np.inf
        for (w0, width, tgt), on in zip(windows, joined, strict=True):
            t = max(w0 + float(rng.uniform(0, width)), last_end + _SESSION_BREAK)
            if not on or t > w0 + width + 900.0:
                continue
            pre, t = shop.browse(rng, t, int(rng.integers(1, 6)))
            evs += pre
            for _ in range(int(rng.integers(1, 4))):  # competitors from the results
                evs.append((shop.item_in(rng, cat), "view", t, kw))
                t += shop.gap(rng)
            evs.append((tgt, "view", t, kw))
            t += shop.gap(rng)
            if rng.random() < 0.65:
                evs.append((tgt, "add_to_cart", t, None))
                t += shop.short_gap(rng)
            if tgt not in faved and rng.random() < 0.5:
                evs.append((tgt, "favorite", t, None))
                faved.add(tgt)
                t += shop.short_gap(rng)
            if not bought and rng.random() < 0.12:
                evs.append((tgt, "purchase", t, None))
                bought = True
                t += shop.gap(rng)
            post, last_end = shop.browse(rng, t, int(rng.integers(0, 5)))
            evs += post
            last_end = max(last_end, t)
        evs += _aging_sessions(rng, shop, set(camp_days), int(rng.integers(1, 4)))
        accounts.append(evs)
    return accounts


# ---- scalpers ------------------------------------------------------------------------------------


def _drop_sniper(rng: np.random.Generator, shop: _Shop, n_acc: int) -> list[list[_Event]]:
    n_drops = int(np.clip(n_acc // 4, 2, 5))
    items = _hot_items(rng, shop, n_drops)
    peak = shop.hour_w**2 / (shop.hour_w**2).sum()
    drops: list[tuple[str, float]] = []
    for item in items:
        for _ in range(60):
            d = int(rng.integers(shop.day0, shop.day1 + 1))
            t = d * _DAY + int(rng.choice(24, p=peak)) * _HOUR
            if shop.lo + 900.0 <= t <= shop.hi - 120.0:
                break
        else:
            t = float(np.floor(rng.uniform(shop.lo, max(shop.lo, shop.hi - 120.0))))
        drops.append((item, t))

    accounts: list[list[_Event]] = []
    for a in range(n_acc):
        mine = [a % len(drops)]
        if len(drops) > 1 and rng.random() < 0.3:
            mine.append(int(rng.choice([i for i in range(len(drops)) if i != mine[0]])))
        evs: list[_Event] = []
        for i in mine:
            item, t_drop = drops[i]
            if rng.random() < 0.5:
                evs.append((item, "view", t_drop - float(rng.uniform(30, 600)), None))
            t = t_drop + float(np.clip(rng.lognormal(np.log(2.5), 0.6), 0.3, 30.0))
            evs.append((item, "view", t, None))
            if rng.random() < 0.25:
                t += float(rng.uniform(1.0, 4.0))
                evs.append((item, "view", t, None))
            evs.append((item, "purchase", t + float(rng.uniform(1.5, 9.0)), None))
        accounts.append(evs)
    return accounts


def _trickle_buyer(rng: np.random.Generator, shop: _Shop, n_acc: int) -> list[list[_Event]]:
    targets = _hot_items(rng, shop, int(rng.integers(3, 7)))
    accounts: list[list[_Event]] = []
    for _ in range(n_acc):
        evs: list[_Event] = []
        for day in shop.days(rng, int(rng.integers(1, 3))):
            tgt = str(rng.choice(targets))
            t = shop.start(rng, 300.0, day)
            if rng.random() < 0.6:
                cover = shop.item_in(rng, shop.cat_of[tgt])
                if cover == tgt:
                    cover = shop.popular_item(rng)
                evs.append((cover, "view", t, None))
                t += float(rng.uniform(20.0, 150.0))
            evs.append((tgt, "view", t, None))
            t += float(np.clip(rng.lognormal(np.log(4.5), 0.45), 1.2, 15.0))
            evs.append((tgt, "purchase", t, None))
        accounts.append(evs)
    return accounts


# ---- crawlers ------------------------------------------------------------------------------------


def _id_crawler(rng: np.random.Generator, shop: _Shop, n_acc: int) -> list[list[_Event]]:
    sizes = np.array([len(shop.cat_by_id[c]) for c in shop.catalog_cats], dtype=float)
    big = np.argsort(-sizes, kind="stable")[: max(n_acc * 3, 10)]
    p = sizes[big] / sizes[big].sum()
    start_cats = rng.choice(big, size=n_acc, replace=len(big) < n_acc, p=p)
    accounts: list[list[_Event]] = []
    for a in range(n_acc):
        ci = int(start_cats[a])
        pos = 0
        if list(start_cats[:a]).count(ci):  # a second account on this category starts further on
            pos = int(rng.integers(0, len(shop.cat_by_id[shop.catalog_cats[ci]])))
        mean = float(rng.uniform(22.0, 48.0))
        shape = float(rng.uniform(5.0, 9.0))
        evs: list[_Event] = []
        for day in shop.days(rng, int(rng.integers(2, 6))):
            n = int(rng.integers(40, 141))
            t = shop.start(rng, n * mean * 1.15, day)
            done = 0
            while done < n:
                items = shop.cat_by_id[shop.catalog_cats[ci]]
                if pos >= len(items):
                    ci, pos = (ci + 1) % len(shop.catalog_cats), 0
                    continue
                item = str(items[pos])
                pos += 1
                if rng.random() < 0.02:  # out of stock / failed fetch: skipped
                    continue
                evs.append((item, "view", t, None))
                done += 1
                t += float(rng.gamma(shape, mean / shape))
                if rng.random() < 0.03:
                    t += float(rng.uniform(60.0, 240.0))
        accounts.append(evs)
    return accounts


def _price_crawler(rng: np.random.Generator, shop: _Shop, n_acc: int) -> list[list[_Event]]:
    sizes = np.array([len(shop.cat_by_price[c]) for c in shop.catalog_cats], dtype=float)
    top = np.argsort(-sizes, kind="stable")[:10]
    ci = int(rng.choice(top, p=sizes[top] / sizes[top].sum()))
    # Result pages of the category's listing, then (once it is done) of the next categories'.
    page = 20
    pages: list[tuple[np.ndarray, str]] = []
    for c in shop.catalog_cats[ci:] + shop.catalog_cats[:ci]:
        listing = shop.cat_by_price[c]
        pages += [(listing[i : i + page], shop.keyword(c)) for i in range(0, len(listing), page)]
    next_page = 0  # the accounts share one queue of pages
    runs: list[tuple[float, int, int]] = []  # (start, account, pages)
    for a in range(n_acc):
        hour = float(rng.choice(24, p=shop.hour_w)) + float(rng.random())
        mine = []
        for day in shop.days(rng, int(rng.integers(3, 8))):
            t = day * _DAY + hour * _HOUR + float(rng.uniform(-2400.0, 2400.0))
            if shop.lo <= t <= shop.hi - 3 * _HOUR:
                mine.append((t, a, int(rng.integers(2, 6))))
        runs += mine or [(shop.start(rng, 3 * _HOUR), a, 3)]
    runs.sort()
    accounts: list[list[_Event]] = [[] for _ in range(n_acc)]
    median = rng.uniform(18.0, 35.0, size=n_acc)
    for t0, a, k in runs:
        t = t0
        for _ in range(k):
            items, kw = pages[next_page % len(pages)]
            next_page += 1
            for item in items:
                accounts[a].append((str(item), "view", t, kw))
                if rng.random() < 0.004:
                    t += shop.short_gap(rng)
                    accounts[a].append((str(item), "add_to_cart", t, None))
                t += max(6.0, float(rng.lognormal(np.log(median[a]), 0.3)))
            t += float(rng.uniform(3.0, 25.0))  # next results page
    return accounts


# ---- copies --------------------------------------------------------------------------------------


def _replay(
    rng: np.random.Generator,
    shop: _Shop,
    s: int,
    offset: float,
    pace: float,
    drop: float,
    jitter: float,
) -> list[_Event]:
    a, b = int(shop.sess_start[s]), int(shop.sess_end[s])
    t = shop.ev_t[a:b]
    new_t = t[0] + offset + pace * (t - t[0])
    if jitter:
        new_t = new_t + rng.normal(0.0, jitter, size=len(new_t)).clip(-3 * jitter, 3 * jitter)
        new_t = np.maximum.accumulate(new_t)
    keep = rng.random(b - a) >= drop
    if keep.sum() < 2:
        keep[:2] = True
    q = shop.ev_query[a:b]
    return [
        (
            str(shop.ev_item[a + i]),
            str(shop.ev_type[a + i]),
            float(new_t[i]),
            None if q[i] is None or (isinstance(q[i], float) and np.isnan(q[i])) else str(q[i]),
        )
        for i in range(b - a)
        if keep[i]
    ]


def _replayable(shop: _Shop, min_len: int = 3, max_len: int = 80) -> np.ndarray:
    """Real sessions worth copying whose items are all in the catalog and that leave room to be
    replayed at least an hour later."""
    n = shop.sess_end - shop.sess_start
    ok = (n >= min_len) & (n <= max_len)
    ok &= shop.ev_t[shop.sess_start] >= shop.lo
    ok &= shop.ev_t[shop.sess_end - 1] + _HOUR <= shop.hi
    in_cat = np.array([i in shop.cat_of for i in shop.ev_item])
    bad = np.add.reduceat(~in_cat, shop.sess_start) > 0
    return np.flatnonzero(ok & ~bad)


def _later_offset(rng: np.random.Generator, shop: _Shop, end: float, whole_days: bool) -> float:
    """A shift that moves a session ending at `end` later, by whole days (+-1 h) where there is
    room, else by at least an hour."""
    room = shop.hi - end
    max_days = int((room - _HOUR) // _DAY)
    if max_days >= 1:
        off = int(rng.integers(1, max_days + 1)) * _DAY
        return off + (
            float(rng.uniform(-_HOUR, _HOUR)) if not whole_days else float(rng.uniform(-900, 900))
        )
    return float(rng.uniform(_HOUR, max(_HOUR, room)))


def _profile_clone(rng: np.random.Generator, shop: _Shop, n_acc: int) -> list[list[_Event]]:
    cand = _replayable(shop)
    if len(cand) == 0:
        cand = np.arange(len(shop.sess_start))
    users = pd.unique(shop.sess_user[cand])
    chosen = rng.choice(users, size=n_acc, replace=len(users) < n_acc)
    accounts: list[list[_Event]] = []
    for u in chosen:
        mine = cand[shop.sess_user[cand] == u]
        k = int(rng.integers(1, 4))
        i0 = int(rng.integers(0, max(1, len(mine) - k + 1)))
        block = mine[i0 : i0 + k]
        end = float(shop.ev_t[shop.sess_end[block[-1]] - 1])
        offset = _later_offset(rng, shop, end, whole_days=False)
        pace = float(rng.uniform(0.5, 1.0))
        evs: list[_Event] = []
        for s in block:
            evs += _replay(rng, shop, int(s), offset, pace, drop=0.05, jitter=0.35)
        accounts.append(evs)
    return accounts


def _session_splice(rng: np.random.Generator, shop: _Shop, n_acc: int) -> list[list[_Event]]:
    cand = _replayable(shop)
    if len(cand) == 0:
        cand = np.arange(len(shop.sess_start))
    order = rng.permutation(cand)
    cursor = 0
    accounts: list[list[_Event]] = []
    for _ in range(n_acc):
        want = int(rng.integers(2, 5))
        used_users: set[str] = set()
        spans: list[tuple[float, float]] = []
        evs: list[_Event] = []
        tries = 0
        while len(spans) < want and tries < 40:
            tries += 1
            s = int(order[cursor % len(order)])
            cursor += 1
            if shop.sess_user[s] in used_users and tries < 30:
                continue
            end = float(shop.ev_t[shop.sess_end[s] - 1])
            offset = _later_offset(rng, shop, end, whole_days=True)
            pace = float(rng.uniform(0.5, 1.0))
            part = _replay(rng, shop, s, offset, pace, drop=float(rng.uniform(0, 0.15)), jitter=0)
            a, b = part[0][2], part[-1][2]
            if any(a < y + _SESSION_BREAK and x < b + _SESSION_BREAK for x, y in spans):
                continue
            spans.append((a, b))
            used_users.add(str(shop.sess_user[s]))
            evs += part
        accounts.append(evs)
    return accounts


_BUILDERS = {
    "favour_ring": _favour_ring,
    "search_boost": _search_boost,
    "drop_sniper": _drop_sniper,
    "trickle_buyer": _trickle_buyer,
    "id_crawler": _id_crawler,
    "price_crawler": _price_crawler,
    "profile_clone": _profile_clone,
    "session_splice": _session_splice,
}


def _account_counts(designs: list[str], n_total: int) -> dict[str, int]:
    w = np.array([_CLASS_WEIGHT[DESIGNS[d]] for d in designs])
    share = n_total * w / w.sum()
    return {d: max(_MIN_ACCOUNTS, round(float(x))) for d, x in zip(designs, share, strict=True)}


def independent_bot_events(
    real_events: pd.DataFrame,
    catalog: pd.DataFrame,
    bot_share: float,
    seed: int,
    designs: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events with the same columns as real_events, labels with user_id, design, bot_class)."""
    designs = list(DESIGNS) if designs is None else list(dict.fromkeys(designs))
    unknown = [d for d in designs if d not in DESIGNS]
    if unknown:
        raise ValueError(f"unknown designs: {unknown}; known: {sorted(DESIGNS)}")
    shop = _shop(real_events, catalog)
    n_real = int(real_events["user_id"].nunique())
    counts = _account_counts(designs, round(max(bot_share, 0.0) * n_real))

    per_design: list[tuple[str, list[list[_Event]]]] = []
    for d in designs:
        rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(d.encode())])
        per_design.append((d, _BUILDERS[d](rng, shop, counts[d])))

    return _event_table(real_events, per_design, seed)


def _account_ids(real_events: pd.DataFrame, n_acc: int, seed: int) -> list[str]:
    """Account ids: "ib-" and a number, numbered in a shuffled order so that an id says
    nothing of its design; a longer prefix if real ids already start so."""
    real_ids = set(real_events["user_id"].astype(str))
    prefix = "ib-"
    while any(i.startswith(prefix) for i in real_ids):
        prefix = "i" + prefix
    numbers = np.random.default_rng([seed & 0xFFFFFFFF, 0x1B]).permutation(n_acc) + 1
    width = max(5, len(str(n_acc)))
    return [f"{prefix}{n:0{width}d}" for n in numbers]


def _event_table(
    real_events: pd.DataFrame, per_design: list[tuple[str, list[list[_Event]]]], seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The designs' accounts as an event table shaped like `real_events` (times rounded to
    the design's resolution, kept inside the real window) and their labels."""
    ids = _account_ids(real_events, sum(len(a) for _, a in per_design), seed)
    users, items, types, ns, queries = [], [], [], [], []
    labels = []
    real_times = pd.to_datetime(real_events["event_time"], utc=True)
    lo_ns, hi_ns = real_times.min().value, real_times.max().value
    k = 0
    for d, accounts in per_design:
        ms = d in _MILLISECOND_DESIGNS
        for evs in accounts:
            uid = ids[k]
            k += 1
            kept = 0
            for item, etype, t, q in evs:
                t_ns = round(t * 1000) * 10**6 if ms else int(np.floor(t)) * 10**9
                if not lo_ns <= t_ns <= hi_ns:
                    continue
                users.append(uid)
                items.append(item)
                types.append(etype)
                ns.append(t_ns)
                queries.append(q)
                kept += 1
            if kept:
                labels.append((uid, d, DESIGNS[d]))

    time_dtype = real_events["event_time"].dtype
    times = pd.to_datetime(np.asarray(ns, dtype="int64"), unit="ns", utc=True)
    ev = pd.DataFrame(
        {
            "user_id": pd.Series(users, dtype=object),
            "item_id": pd.Series(items, dtype=object),
            "event_type": pd.Series(types, dtype=object),
            "event_time": pd.Series(times).astype(time_dtype)
            if isinstance(time_dtype, pd.DatetimeTZDtype)
            else pd.Series(times),
            "query": pd.Series(queries, dtype=object),
        }
    )
    ev = ev.sort_values(["event_time", "user_id"], kind="stable").reset_index(drop=True)
    for col in real_events.columns:
        if col not in ev:
            ev[col] = None
    ev = ev[list(real_events.columns)]
    lab = pd.DataFrame(labels, columns=["user_id", "design", "bot_class"])
    return ev, lab
