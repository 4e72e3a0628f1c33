"""Sequential structure of the synthetic shop: what a shopper does next depends on what they
just did, not only on their overall taste (`GeneratorConfig.sequential`, off by default).

Three behaviours, each imitating what real shops see:

- **Accessories after a purchase.** Items in "device" subcategories (phones, computers,
  cameras, bikes, kitchen machines) have 2-4 accessories, fixed per item when the catalog is
  built, from a related subcategory (`DEVICE_ACCESSORIES`). Hours to a few days after buying
  a device, most buyers come back, view some of its accessories and often buy one or more:
  a phone, then its case; a coffee machine, then beans.
- **Repeat purchases of consumables.** Items in consumable subcategories (groceries, skin and
  hair care) have a repurchase interval of 5-15 days, fixed per item. Most buyers of one buy
  it again at about that interval (with jitter) in a short "buy again" visit, until they
  stop (churn) or the data window ends: coffee beans every ten days.
- **Sessions that drift within a category.** A session mostly picks up where the user's
  previous one (within three days) ended: shoppers come back to what they were looking at.
  Inside a session each next view mostly stays in the previous view's leaf category,
  sometimes moves to a sibling leaf of the same subcategory and rarely to another
  subcategory of the department, so the session's category drifts slowly.

Without the knob every session already keeps one leaf category (or one brand) and draws its
items independently; with it, the category of the next view depends on the previous view and
the previous session, and the next purchase on the most recent ones: information a model that
sees a user's history as a set cannot use.

Everything here draws from its own random generator, so the rest of the simulation keeps its
random stream when the knob is on, and a data set without the knob never touches this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MS_PER_MINUTE = 60_000
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000

# Device subcategory -> the subcategory its accessories come from.
DEVICE_ACCESSORIES = {
    "Electronics/Phones": "Electronics/Audio",  # a phone, then headphones, a cable, a case
    "Electronics/Computers": "Electronics/Audio",
    "Electronics/Cameras": "Electronics/Audio",
    "Sports/Cycling": "Sports/Outdoor",  # a bike, then a bottle and gloves
    "Home/Kitchen": "Grocery/Coffee",  # a coffee machine, then beans (which run out)
}
ACCESSORIES_PER_DEVICE = (2, 4)  # fewest and most, per device
P_FOLLOW_UP = 0.8  # a device buyer comes back for its accessories
FOLLOW_UP_DELAY_MEDIAN_MS = 6 * MS_PER_HOUR  # lognormal, clipped to 20 min .. 4 days
FOLLOW_UP_DELAY_RANGE_MS = (20 * MS_PER_MINUTE, 4 * MS_PER_DAY)
P_VIEW_ACCESSORY = 0.6  # each accessory is viewed (at least one always is)
P_CART_ACCESSORY = 0.6  # a viewed accessory is put in the cart ...
P_BUY_CARTED = 0.8  # ... and bought

CONSUMABLE_SUBCATEGORIES = (
    "Grocery/Coffee",
    "Grocery/Snacks",
    "Grocery/Tea",
    "Grocery/Pantry",
    "Beauty/Skincare",
    "Beauty/Hair",
)
REPURCHASE_DAYS = (5.0, 15.0)  # interval range, drawn once per consumable item
REPURCHASE_JITTER = 0.15  # lognormal sigma of each interval
P_REPEAT_BUYER = 0.75  # a first-time buyer of a consumable becomes a repeat buyer
P_KEEP_BUYING = 0.85  # after each repeat, the buyer buys again (else stops: churn)

P_CONTINUE_SESSION = 0.6  # a session starts in the category the previous one ended in ...
CONTINUE_WITHIN_MS = 3 * MS_PER_DAY  # ... if it ended at most this long before
P_SIBLING_STEP = 0.11  # the next view moves to a sibling leaf of the same subcategory
P_SUBCATEGORY_STEP = 0.04  # the next view moves to another subcategory of the department

# Extra events the sequels add, as a share of a chunk's session events (measured on the
# `default` preset); the sessions' budget shrinks by it so data sets keep their size.
SEQUEL_EVENT_SHARE = 0.06

Events = dict[str, np.ndarray]  # session, item, etype (0-3), time (epoch ms), one row each


@dataclass
class SequentialShop:
    """Per-item accessories and repurchase intervals, the category tree, and a random stream."""

    accessories: np.ndarray  # (n_items, 4) item indices, -1 where none
    repurchase_days: np.ndarray  # per item; 0 for items that are not consumables
    subcategories_per_department: int
    leaves_per_subcategory: int
    rng: np.random.Generator

    @property
    def is_device(self) -> np.ndarray:
        return (self.accessories >= 0).any(axis=1)


def _subcategory(category: pd.Series) -> np.ndarray:
    return category.str.rsplit("/", n=1).str[0].to_numpy()


def build_sequential_shop(
    category: pd.Series,
    listed_day: np.ndarray,
    subcategories_per_department: int,
    leaves_per_subcategory: int,
    rng: np.random.Generator,
) -> SequentialShop:
    """Accessories of every device and the repurchase interval of every consumable.

    `category` is each item's leaf path (department/subcategory/leaf); leaf indices are laid
    out department by department, subcategory by subcategory, as `build_catalog` does.
    """
    sub = _subcategory(category)
    n = len(sub)
    lo, hi = ACCESSORIES_PER_DEVICE
    accessories = np.full((n, hi), -1, dtype=np.int64)
    for device_sub, accessory_sub in DEVICE_ACCESSORIES.items():
        devices = np.flatnonzero(sub == device_sub)
        pool = np.flatnonzero((sub == accessory_sub) & (listed_day == 0))
        if not len(devices) or not len(pool):
            continue
        picks = pool[rng.integers(0, len(pool), (len(devices), hi))]
        picks[np.arange(hi) >= rng.integers(lo, hi + 1, len(devices))[:, None]] = -1
        picks.sort(axis=1)
        picks[:, 1:][picks[:, 1:] == picks[:, :-1]] = -1  # the same accessory drawn twice
        accessories[devices] = picks
    consumable = np.isin(sub, CONSUMABLE_SUBCATEGORIES)
    repurchase_days = np.where(consumable, rng.uniform(*REPURCHASE_DAYS, n), 0.0)
    return SequentialShop(
        accessories, repurchase_days, subcategories_per_department, leaves_per_subcategory, rng
    )


def _within_groups(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Exclusive cumulative sum of `values` inside runs that start where `first` is true."""
    before = np.cumsum(values) - values
    starts = np.flatnonzero(first)
    return before - before[starts][np.cumsum(first) - 1]


def drift_view_leaves(
    seq: SequentialShop,
    session_user: np.ndarray,
    session_start: np.ndarray,
    session_leaf: np.ndarray,
    fresh: np.ndarray,
    view_session: np.ndarray,
) -> np.ndarray:
    """The leaf each view is drawn from: sessions continue where the user's previous one
    ended, and drift step by step inside (`view_session` is sorted, every session has a view).

    A leaf is (department, subcategory, position); steps add to the subcategory or the
    position (modulo their counts), so a chain of sessions is one running sum of steps from
    the leaf its first session drew from the user's taste. `fresh` sessions (exploring) always
    start a new chain.
    """
    rng, n_sub, n_pos = seq.rng, seq.subcategories_per_department, seq.leaves_per_subcategory
    n_s, n_v = len(session_user), len(view_session)
    first_view = view_session != np.r_[-1, view_session[:-1]]
    step = rng.random(n_v)
    d_pos = np.where(step < P_SIBLING_STEP, rng.integers(1, max(n_pos, 2), n_v), 0)
    d_sub = np.where(
        (step >= P_SIBLING_STEP) & (step < P_SIBLING_STEP + P_SUBCATEGORY_STEP),
        rng.integers(1, max(n_sub, 2), n_v),
        0,
    )
    d_pos[first_view], d_sub[first_view] = 0, 0

    # Chains of sessions, in time order per user.
    order = np.lexsort((session_start, session_user))
    user, start = session_user[order], session_start[order]
    new_chain = (
        np.r_[True, user[1:] != user[:-1]]
        | fresh[order]
        | (np.r_[0, np.diff(start)] > CONTINUE_WITHIN_MS)
        | (rng.random(n_s) >= P_CONTINUE_SESSION)
    )
    base = np.empty(n_s, dtype=np.int64)
    base[order] = session_leaf[order][np.flatnonzero(new_chain)][np.cumsum(new_chain) - 1]
    offsets = []
    for d in (d_pos, d_sub):
        total = np.bincount(view_session, weights=d, minlength=n_s).astype(np.int64)
        chain_offset = np.empty(n_s, dtype=np.int64)
        chain_offset[order] = _within_groups(total[order], new_chain)
        offsets.append(chain_offset[view_session] + _within_groups(d, first_view) + d)
    leaf = base[view_session]
    department, sub, pos = leaf // (n_sub * n_pos), (leaf // n_pos) % n_sub, leaf % n_pos
    sub, pos = (sub + offsets[1]) % n_sub, (pos + offsets[0]) % n_pos
    return (department * n_sub + sub) * n_pos + pos


def _visits(
    visit: np.ndarray,
    item: np.ndarray,
    view_time: np.ndarray,
    p_cart: float,
    p_buy: float,
    rng: np.random.Generator,
) -> Events:
    """View, then maybe add-to-cart and purchase (the session funnel's delays) of each row."""
    cart = rng.random(len(item)) < p_cart
    buy = cart & (rng.random(len(item)) < p_buy)
    parts = [(np.ones(len(item), bool), 0, 0, 1), (cart, 2, 8_000, 60_000)]
    parts.append((buy, 3, 90_000, 600_000))
    return {
        "session": np.concatenate([visit[m] for m, *_ in parts]),
        "item": np.concatenate([item[m] for m, *_ in parts]),
        "etype": np.concatenate([np.full(m.sum(), e) for m, e, *_ in parts]),
        "time": np.concatenate(
            [view_time[m] + rng.integers(lo, hi, m.sum()) for m, _, lo, hi in parts]
        ),
    }


def accessory_follow_ups(
    seq: SequentialShop, item: np.ndarray, time: np.ndarray
) -> tuple[np.ndarray, Events]:
    """Visits to the accessories of purchased devices, hours to days after each purchase.

    Returns the purchase each visit follows (index into `item`) and the visits' events, whose
    `session` numbers the visits from 0.
    """
    rng = seq.rng
    source = np.flatnonzero(seq.is_device[item] & (rng.random(len(item)) < P_FOLLOW_UP))
    accessories = seq.accessories[item[source]]
    delay = rng.lognormal(np.log(FOLLOW_UP_DELAY_MEDIAN_MS), 1.0, len(source))
    start = time[source] + np.clip(delay, *FOLLOW_UP_DELAY_RANGE_MS).astype(np.int64)
    viewed = (accessories >= 0) & (rng.random(accessories.shape) < P_VIEW_ACCESSORY)
    viewed[np.arange(len(source)), (accessories >= 0).argmax(axis=1)] = True
    visit, column = np.nonzero(viewed)  # visit by visit, accessories in column order
    gaps = rng.lognormal(np.log(35_000), 0.8, len(visit)).astype(np.int64)
    first = visit != np.r_[-1, visit[:-1]]
    gaps[first] = 0
    view_time = start[visit] + _within_groups(gaps, first) + gaps
    events = _visits(
        visit, accessories[visit, column], view_time, P_CART_ACCESSORY, P_BUY_CARTED, rng
    )
    return source, events


def repeat_purchases(
    seq: SequentialShop, user: np.ndarray, item: np.ndarray, time: np.ndarray, end_ms: int
) -> tuple[np.ndarray, Events]:
    """Buy-again visits of consumables at about their interval, until churn or `end_ms`.

    Starts from each user's first purchase of each consumable; returns the user of each visit
    and the visits' events (view, add-to-cart, purchase), whose `session` numbers the visits.
    """
    rng = seq.rng
    bought = pd.DataFrame({"u": user, "i": item, "t": time})[seq.repurchase_days[item] > 0]
    first = bought.sort_values("t", kind="stable").drop_duplicates(["u", "i"])
    first = first[rng.random(len(first)) < P_REPEAT_BUYER]
    u, i, t = (first[c].to_numpy() for c in ("u", "i", "t"))
    visits: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    while len(t):
        jitter = rng.lognormal(0.0, REPURCHASE_JITTER, len(t))
        t = t + (seq.repurchase_days[i] * jitter * MS_PER_DAY).astype(np.int64)
        due = t < end_ms
        u, i, t = u[due], i[due], t[due]
        visits.append((u, i, t))
        going_on = rng.random(len(t)) < P_KEEP_BUYING
        u, i, t = u[going_on], i[going_on], t[going_on]
    visit_user, visit_item, visit_time = (
        np.concatenate([v[k] for v in visits] or [np.array([], np.int64)]) for k in range(3)
    )
    events = _visits(np.arange(len(visit_item)), visit_item, visit_time, 1.0, 1.0, rng)
    return visit_user, events


def add_sequels(
    seq: SequentialShop, ev: Events, session_user: np.ndarray, end_ms: int
) -> tuple[Events, np.ndarray]:
    """`ev` with accessory follow-ups and consumable repeats appended as new sessions
    (numbered after the existing ones); returns it and the user of every session."""
    buy = np.flatnonzero(ev["etype"] == 3)
    buyer = session_user[ev["session"][buy]]
    source, follow = accessory_follow_ups(seq, ev["item"][buy], ev["time"][buy])
    follow_user = buyer[source]
    follow_buy = follow["etype"] == 3
    repeat_user, repeat = repeat_purchases(
        seq,
        np.r_[buyer, follow_user[follow["session"][follow_buy]]],
        np.r_[ev["item"][buy], follow["item"][follow_buy]],
        np.r_[ev["time"][buy], follow["time"][follow_buy]],
        end_ms,
    )
    follow["session"] = follow["session"] + len(session_user)
    repeat["session"] = repeat["session"] + len(session_user) + len(source)
    merged = {k: np.concatenate([ev[k], follow[k], repeat[k]]) for k in ev}
    return merged, np.r_[session_user, follow_user, repeat_user]
