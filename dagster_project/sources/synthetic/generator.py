"""Seeded, vectorised synthetic e-commerce shop: the platform's embedded default data set.

The generator writes what a shop's export would hold (events by day, an item catalog, a
source manifest) plus ground truth beside it (planted data problems and bot users), so that
every later stage can be checked against what was really planted.

Structure a recommender can learn: users have latent tastes over leaf categories and brands,
item popularity is Zipf-like inside each category, sessions follow a view -> favorite /
add-to-cart -> purchase funnel with daily and weekly cycles, prices depend on the category,
and new items and new users appear over the window. `GeneratorConfig.sequential` adds order
a set-of-items model cannot use (accessories after a device, repeat purchases of consumables,
sessions that continue and drift; see `sources.synthetic.sequential`). `clean_interactions`
gives the same simulation's human events without planted problems or files, for benchmarks.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from dagster_project.contracts import (
    EVENT_COLUMNS,
    EVENT_TYPES,
    ITEM_COLUMNS,
    NEAR_DUPLICATE_WINDOW,
)
from dagster_project.features.build import price_bucket
from dagster_project.settings import DataLayout
from dagster_project.sources.raw_table import landing_paths
from dagster_project.sources.synthetic.sequential import (
    SEQUEL_EVENT_SHARE,
    Events,
    SequentialShop,
    add_sequels,
    build_sequential_shop,
    drift_view_leaves,
)
from dagster_project.sources.synthetic.traffic import (
    BOT_GENERATORS,
    BOT_TYPES,
    MS_PER_DAY,
    Shop,
    TrafficMix,
    bulk_buyer_events,
    flash_sale_events,
)
from dagster_project.storage import write_parquet_atomic, write_text_atomic
from models.checks import Problems

SOURCE_NAME = "shop_export"
EVENT_FORMATS = ("csv", "parquet", "mixed")  # mixed: some days' files CSV, others Parquet


def _is_date(text: object) -> bool:
    """Whether `text` is a calendar date written YYYY-MM-DD."""
    if not (isinstance(text, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text)):
        return False
    try:
        datetime.date.fromisoformat(text)
    except ValueError:  # e.g. 2026-02-30
        return False
    return True


# Planted problem -> the quarantine reason the quality stage must give it.
PROBLEM_REASONS = {
    "missing_user_id": "null_user_id",
    "missing_item_id": "null_item_id",
    "bad_timestamp": "bad_timestamp",
    "future_timestamp": "future_timestamp",
    "non_positive_price": "non_positive_price",
    "unknown_item": "unknown_item",
    "exact_duplicate": "duplicate_event",
    "near_duplicate": "near_duplicate_event",
    "unparseable_row": "unparseable_row",
    "catalog_duplicate": "duplicate_item",
    "catalog_missing_item_id": "null_item_id",
    "catalog_non_positive_price": "non_positive_price",
}

_DEPARTMENTS = {
    "Home": (
        ["Kitchen", "Bedding", "Decor", "Storage"],
        ["mug", "pan", "pillow", "lamp", "vase", "box"],
    ),
    "Electronics": (
        ["Audio", "Phones", "Computers", "Cameras"],
        ["headphones", "charger", "cable", "speaker", "case", "mouse"],
    ),
    "Fashion": (
        ["Women", "Men", "Kids", "Shoes"],
        ["shirt", "dress", "jacket", "sneaker", "scarf", "belt"],
    ),
    "Beauty": (
        ["Skincare", "Makeup", "Hair", "Fragrance"],
        ["serum", "lipstick", "shampoo", "perfume", "cream", "brush"],
    ),
    "Sports": (
        ["Fitness", "Outdoor", "Cycling", "Running"],
        ["mat", "tent", "helmet", "bottle", "band", "glove"],
    ),
    "Toys": (
        ["Games", "Puzzles", "Plush", "Building"],
        ["puzzle", "bear", "blocks", "card game", "robot", "kite"],
    ),
    "Grocery": (
        ["Coffee", "Snacks", "Tea", "Pantry"],
        ["beans", "cookies", "green tea", "olive oil", "pasta", "honey"],
    ),
    "Books": (
        ["Fiction", "Cooking", "Travel", "Science"],
        ["novel", "cookbook", "guide", "atlas", "essay", "handbook"],
    ),
}
_DEPARTMENT_PRICE = {
    "Home": 25.0,
    "Electronics": 60.0,
    "Fashion": 35.0,
    "Beauty": 18.0,
    "Sports": 30.0,
    "Toys": 20.0,
    "Grocery": 8.0,
    "Books": 15.0,
}
_ADJECTIVES = [
    "classic",
    "compact",
    "premium",
    "eco",
    "soft",
    "bold",
    "mini",
    "pro",
    "vintage",
    "smart",
    "light",
    "deluxe",
]
_COLOURS = ["black", "white", "red", "blue", "green", "grey", "beige", "navy", "pink", "olive"]
_BRAND_SYLLABLES = [
    "nor",
    "vel",
    "ka",
    "lum",
    "tri",
    "zen",
    "ora",
    "fel",
    "mar",
    "qui",
    "dex",
    "sol",
]


@dataclass(frozen=True)
class ProblemRates:
    """Share of exported event rows (or catalog rows) that carry each planted problem."""

    missing_user_id: float = 0.001
    missing_item_id: float = 0.001
    bad_timestamp: float = 0.0007
    future_timestamp: float = 0.0005
    non_positive_price: float = 0.0005
    unknown_item: float = 0.001
    exact_duplicate: float = 0.002
    near_duplicate: float = 0.001
    unparseable_row: float = 0.0007
    catalog_duplicate: float = 0.005
    catalog_missing_item_id: float = 0.002
    catalog_non_positive_price: float = 0.003

    def __post_init__(self) -> None:
        """Every rate in [0, 1); one ValueError lists every problem."""
        check = Problems("ProblemRates")
        check.shares(self)
        check.raise_any()


@dataclass(frozen=True)
class GeneratorConfig:
    """Size, time window, seed, bot shares and planted problem rates of one data set."""

    preset: str
    n_users: int
    n_items: int
    n_events: int
    n_days: int
    start: str = "2026-09-01"
    seed: int = 7
    leaves_per_subcategory: int = 3
    new_user_share: float = 0.15
    new_item_share: float = 0.10
    traffic: TrafficMix = field(default_factory=TrafficMix)
    event_format: str = "csv"
    users_per_chunk: int = 100_000
    problems: ProblemRates = field(default_factory=ProblemRates)
    # Accessories after a device, repeat purchases of consumables, sessions that continue and
    # drift (sources.synthetic.sequential). Off, the data are exactly what they were before the
    # knob.
    sequential: bool = False

    def __post_init__(self) -> None:
        """Check every value now (a wrong one would fail deep inside generation); one
        ValueError lists every problem."""
        check = Problems("GeneratorConfig")
        users = check.at_least("n_users", self.n_users, 1, integer=True)
        items = check.at_least("n_items", self.n_items, 1, integer=True)
        check.at_least("n_events", self.n_events, 1, integer=True)
        # new users and items arrive on a day drawn from 1 .. n_days - 1
        check.at_least("n_days", self.n_days, 2, integer=True)
        if not _is_date(self.start):
            check.add(f"start must be a date written YYYY-MM-DD, not {self.start!r}")
        check.at_least("seed", self.seed, 0, integer=True)  # numpy's generators want >= 0
        leaves = check.at_least("leaves_per_subcategory", self.leaves_per_subcategory, 1, True)
        if leaves and items:  # every leaf category (`_leaf_paths`) holds at least one item
            subcategories = sum(len(names) for names, _ in _DEPARTMENTS.values())
            n_leaves = subcategories * self.leaves_per_subcategory
            if self.n_items < n_leaves:
                check.add(
                    f"n_items must be at least the {n_leaves} leaf categories, not {self.n_items}"
                )
        check.within("new_user_share", self.new_user_share, 0, 1)
        check.within("new_item_share", self.new_item_share, 0, 1)
        if not isinstance(self.traffic, TrafficMix):
            check.add(f"traffic must be a TrafficMix, not {self.traffic!r}")
        elif users:
            planted = sum(self.traffic.counts(self.n_users).values())
            if self.n_users < planted:
                check.add(
                    f"n_users must be at least the {planted} users the traffic mix plants "
                    f"(2 or more of each kind), not {self.n_users}"
                )
        check.one_of("event_format", self.event_format, EVENT_FORMATS)
        check.at_least("users_per_chunk", self.users_per_chunk, 1, integer=True)
        if not isinstance(self.problems, ProblemRates):
            check.add(f"problems must be a ProblemRates, not {self.problems!r}")
        check.raise_any()

    @property
    def start_ms(self) -> int:
        return int(pd.Timestamp(self.start, tz="UTC").value // 1_000_000)

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.n_days * MS_PER_DAY


PRESETS: dict[str, GeneratorConfig] = {
    "tiny": GeneratorConfig(
        "tiny",
        n_users=2_000,
        n_items=600,
        n_events=60_000,
        n_days=21,
        event_format="mixed",
    ),
    "default": GeneratorConfig(
        "default", n_users=50_000, n_items=10_000, n_events=1_000_000, n_days=30
    ),
    "large": GeneratorConfig(
        "large",
        n_users=1_000_000,
        n_items=100_000,
        n_events=10_000_000,
        n_days=30,
        event_format="parquet",
    ),
}


def preset(name: str, **overrides: object) -> GeneratorConfig:
    """A named preset (`tiny`, `default`, `large`), with optional field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


@dataclass
class Catalog:
    """The true item catalog (before export problems are planted)."""

    items: (
        pd.DataFrame
    )  # item_id, title, description, category, brand, price, available, listed_day
    leaf: np.ndarray  # leaf category index per item
    brand: np.ndarray  # brand index per item
    popularity: np.ndarray  # sampling weight per item
    n_leaves: int
    n_brands: int
    leaf_department: np.ndarray


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    ranks = rng.permutation(n) + 1
    return ranks.astype(float) ** -exponent


def _leaf_paths(cfg: GeneratorConfig) -> list[tuple[str, str, str]]:
    """(department, subcategory, noun) of every leaf category."""
    leaves: list[tuple[str, str, str]] = []
    for dept, (subcats, nouns) in _DEPARTMENTS.items():
        for sub in subcats:
            for k in range(cfg.leaves_per_subcategory):
                leaves.append((dept, sub, nouns[(len(leaves) + k) % len(nouns)]))
    return leaves


def _brand_names(n_brands: int) -> np.ndarray:
    return np.array(
        [
            (
                _BRAND_SYLLABLES[b % 12]
                + _BRAND_SYLLABLES[(b // 12) % 12]
                + (str(b // 144) if b >= 144 else "")
            ).title()
            for b in range(n_brands)
        ]
    )


def _place_items(
    cfg: GeneratorConfig,
    rng: np.random.Generator,
    leaf_department: np.ndarray,
    brand_department: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Each item's leaf (leaves differ in size; every leaf holds at least one item) and brand
    (a brand sells in its own department most of the time)."""
    n_leaves = len(leaf_department)
    leaf_share = rng.dirichlet(np.full(n_leaves, 2.0))
    leaf = np.concatenate(
        [np.arange(n_leaves), rng.choice(n_leaves, cfg.n_items - n_leaves, p=leaf_share)]
    )
    rng.shuffle(leaf)
    dept = leaf_department[leaf]
    brand = rng.integers(0, len(brand_department), cfg.n_items)
    same_dept = rng.random(cfg.n_items) < 0.85
    for d in range(len(_DEPARTMENTS)):
        pool = np.flatnonzero(brand_department == d)
        pick = same_dept & (dept == d)
        if len(pool) and pick.any():
            brand[pick] = rng.choice(pool, pick.sum())
    return leaf, brand


def _item_texts(
    brand: np.ndarray, adjective: np.ndarray, colour: np.ndarray, noun: np.ndarray, path: np.ndarray
) -> tuple[pd.Series, pd.Series]:
    """Title and description of each item from its brand name, words and category path."""
    title = pd.Series(brand) + " " + adjective + " " + noun + " (" + colour + ")"
    description = (
        "A "
        + pd.Series(adjective)
        + " "
        + noun
        + " by "
        + brand
        + " in "
        + colour
        + ", from our "
        + pd.Series(path).str.replace("/", " > ")
        + " range."
    )
    return title, description


def build_catalog(cfg: GeneratorConfig, rng: np.random.Generator) -> Catalog:
    """Items with a category path, brand, category-dependent price and Zipf-like popularity."""
    leaves = _leaf_paths(cfg)
    n_leaves = len(leaves)
    leaf_department = np.array([list(_DEPARTMENTS).index(d) for d, _, _ in leaves])
    n_brands = max(8, cfg.n_items // 40)
    brand_department = rng.integers(0, len(_DEPARTMENTS), n_brands)
    brand_names = _brand_names(n_brands)
    leaf, brand = _place_items(cfg, rng, leaf_department, brand_department)

    base_price = np.array([_DEPARTMENT_PRICE[d] for d, _, _ in leaves])[leaf]
    price = np.round(base_price * rng.lognormal(0.0, 0.5, cfg.n_items), 2).clip(0.5)
    popularity = _zipf_weights(cfg.n_items, 1.0, rng)
    # New items appear over the window; the most popular item of each leaf is there from day 0.
    listed_day = np.where(
        rng.random(cfg.n_items) < cfg.new_item_share, rng.integers(1, cfg.n_days, cfg.n_items), 0
    )
    order = np.lexsort((-popularity, leaf))
    first_of_leaf = order[np.r_[True, leaf[order][1:] != leaf[order][:-1]]]
    listed_day[first_of_leaf] = 0

    adjective = np.array(_ADJECTIVES)[rng.integers(0, len(_ADJECTIVES), cfg.n_items)]
    colour = np.array(_COLOURS)[rng.integers(0, len(_COLOURS), cfg.n_items)]
    leaf_noun = np.array([n for _, _, n in leaves])[leaf]
    leaf_path = np.array([f"{d}/{s}/{n.title()}" for d, s, n in leaves])[leaf]
    item_id = np.char.add("i", np.char.zfill(np.arange(1, cfg.n_items + 1).astype(str), 7))
    title, description = _item_texts(brand_names[brand], adjective, colour, leaf_noun, leaf_path)
    items = pd.DataFrame(
        {
            "item_id": item_id,
            "title": title,
            "description": description,
            "category": leaf_path,
            "brand": brand_names[brand],
            "price": price,
            "available": rng.random(cfg.n_items) > 0.03,
            "listed_day": listed_day,
        }
    )
    return Catalog(items, leaf, brand, popularity, n_leaves, n_brands, leaf_department)


class _GroupedSampler:
    """Draws items by popularity inside a group (leaf or brand), vectorised over many draws."""

    def __init__(self, group: np.ndarray, weight: np.ndarray, n_groups: int) -> None:
        self.order = np.lexsort((np.arange(len(group)), group))
        g = group[self.order]
        w = weight[self.order]
        totals = np.bincount(g, weights=w, minlength=n_groups)
        cum = np.cumsum(w) - np.repeat(
            np.r_[0, np.cumsum(totals)[:-1]], np.bincount(g, minlength=n_groups)
        )
        # Key = group index + cumulative share inside the group: one sorted array for every group.
        self.key = g + cum / np.where(totals[g] > 0, totals[g], 1)
        self.key[np.r_[g[1:] != g[:-1], True]] = g[np.r_[g[1:] != g[:-1], True]] + 1.0

    def draw(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pos = np.searchsorted(
            self.key, groups + rng.random(len(groups)) * (1 - 1e-12), side="right"
        )
        return self.order[np.minimum(pos, len(self.order) - 1)]


def _hour_weights() -> np.ndarray:
    hours = np.arange(24)
    w = 0.15 + np.exp(-((hours - 20.5) ** 2) / 8.0) + 0.6 * np.exp(-((hours - 12.5) ** 2) / 6.0)
    return w / w.sum()


@dataclass
class _Sessions:
    """One chunk's human sessions: who, when, and what each is about."""

    user: np.ndarray  # index into the chunk's users, per session
    day: np.ndarray
    start: np.ndarray  # epoch ms
    leaf: np.ndarray  # the leaf category the session browses
    explore: np.ndarray  # a leaf outside the user's taste, by popularity
    brand: np.ndarray  # the session browses the user's favourite brand instead
    search: np.ndarray  # the session starts with a search
    fav_brand: np.ndarray  # per user


def _plan_sessions(
    cfg: GeneratorConfig,
    cat: Catalog,
    signup_day: np.ndarray,
    n_human_events: float,
    rng: np.random.Generator,
) -> _Sessions:
    """How many sessions each user has, when, and which leaf (or brand) each browses."""
    n = len(signup_day)
    events_per_session = 6.2
    activity = rng.lognormal(0.0, 1.0, n)
    activity *= (n_human_events / events_per_session) / activity.sum()
    n_sessions = 1 + rng.poisson(np.maximum(activity - 1, 0.05))
    s_user = np.repeat(np.arange(n), n_sessions)
    n_s = len(s_user)

    # Day of the session: weekly cycle (weekends busier), never before the user signed up.
    start_dow = pd.Timestamp(cfg.start).dayofweek
    day_weight = np.where(((np.arange(cfg.n_days) + start_dow) % 7) >= 5, 1.3, 1.0)
    cum_day = np.cumsum(day_weight)
    lo = np.where(signup_day[s_user] > 0, cum_day[np.maximum(signup_day[s_user] - 1, 0)], 0.0)
    s_day = np.searchsorted(cum_day, lo + rng.random(n_s) * (cum_day[-1] - lo), side="right")
    s_day = np.minimum(s_day, cfg.n_days - 1)
    s_hour = rng.choice(24, n_s, p=_hour_weights())
    s_start = (
        cfg.start_ms + s_day * MS_PER_DAY + s_hour * 3_600_000 + rng.integers(0, 3_600_000, n_s)
    )

    # Latent taste: four favourite leaves per user (weighted), one favourite brand.
    dept_taste = rng.dirichlet(np.full(len(_DEPARTMENTS), 0.3), n)
    fav_dept = (dept_taste.cumsum(1)[:, None, :] < rng.random((n, 4, 1))).sum(2)
    fav_dept = np.minimum(fav_dept, len(_DEPARTMENTS) - 1)
    leaves_by_dept = [np.flatnonzero(cat.leaf_department == d) for d in range(len(_DEPARTMENTS))]
    per_dept = np.array([len(x) for x in leaves_by_dept])
    leaf_table = np.stack([np.resize(x, per_dept.max()) for x in leaves_by_dept])
    fav_leaf = leaf_table[fav_dept, rng.integers(0, per_dept.max(), (n, 4))]
    fav_weight = rng.dirichlet(np.ones(4), n)
    fav_brand = rng.integers(0, cat.n_brands, n)

    pick = (fav_weight.cumsum(1)[s_user] < rng.random(n_s)[:, None]).sum(1).clip(0, 3)
    s_leaf = fav_leaf[s_user, pick]
    explore = rng.random(n_s) < 0.12
    leaf_pop = np.bincount(cat.leaf, weights=cat.popularity, minlength=cat.n_leaves)
    s_leaf[explore] = rng.choice(cat.n_leaves, explore.sum(), p=leaf_pop / leaf_pop.sum())
    brand_session = (rng.random(n_s) < 0.2) & ~explore
    search_session = rng.random(n_s) < 0.2
    return _Sessions(
        s_user, s_day, s_start, s_leaf, explore, brand_session, search_session, fav_brand
    )


def _session_views(
    cat: Catalog, sessions: _Sessions, rng: np.random.Generator, seq: SequentialShop | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The items each session views, in order, with their times (session, item, epoch ms)."""
    n_s = len(sessions.user)
    n_views = rng.geometric(0.2, n_s) + rng.integers(0, 2, n_s)
    v_session = np.repeat(np.arange(n_s), n_views)
    v_leaf = (
        sessions.leaf[v_session]
        if seq is None
        else drift_view_leaves(
            seq, sessions.user, sessions.start, sessions.leaf, sessions.explore, v_session
        )
    )
    by_leaf = _GroupedSampler(cat.leaf, cat.popularity, cat.n_leaves)
    by_brand = _GroupedSampler(cat.brand, cat.popularity, cat.n_brands)
    v_item = by_leaf.draw(v_leaf, rng)
    brand_size = np.bincount(cat.brand, minlength=cat.n_brands)
    fav_brand = sessions.fav_brand[sessions.user[v_session]]
    use_brand = sessions.brand[v_session] & (brand_size[fav_brand] >= 8)
    v_item[use_brand] = by_brand.draw(fav_brand[use_brand], rng)
    listed = cat.items["listed_day"].to_numpy()

    def unfit(item: np.ndarray) -> np.ndarray:
        # Not listed yet on the session's day, or already viewed in this session.
        seen = pd.DataFrame({"s": v_session, "i": item}).duplicated().to_numpy()
        return (listed[item] > sessions.day[v_session]) | seen

    for _ in range(4):
        redo = unfit(v_item)
        if not redo.any():
            break
        v_item[redo] = by_leaf.draw(v_leaf[redo], rng)
    keep = ~unfit(v_item)
    v_item, v_session = v_item[keep], v_session[keep]

    gaps = rng.lognormal(np.log(35_000), 0.8, len(v_session)).astype(np.int64)
    first = np.r_[True, v_session[1:] != v_session[:-1]]
    gaps[first] = 0
    cum = np.cumsum(gaps)
    v_time = sessions.start[v_session] + cum - np.maximum.accumulate(np.where(first, cum, 0))
    return v_session, v_item, v_time


def _funnel(
    v_session: np.ndarray, v_item: np.ndarray, v_time: np.ndarray, rng: np.random.Generator
) -> Events:
    """Funnel after each view: view -> favorite / add-to-cart -> purchase."""
    fav = rng.random(len(v_item)) < 0.05
    cart = rng.random(len(v_item)) < 0.10
    buy = cart & (rng.random(len(v_item)) < 0.40)

    def part(mask: np.ndarray, etype: int, delay_lo: int, delay_hi: int) -> Events:
        idx = np.flatnonzero(mask)
        return {
            "session": v_session[idx],
            "item": v_item[idx],
            "etype": np.full(len(idx), etype),
            "time": v_time[idx] + rng.integers(delay_lo, delay_hi, len(idx)),
        }

    parts = [
        {"session": v_session, "item": v_item, "etype": np.zeros(len(v_item), int), "time": v_time},
        part(fav, 1, 3_000, 20_000),
        part(cart, 2, 8_000, 60_000),
        part(buy, 3, 90_000, 600_000),
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _typed_events(
    ev: Events, user: np.ndarray, search: np.ndarray, cat: Catalog, rng: np.random.Generator
) -> pd.DataFrame:
    """Events -> typed rows with price, quantity and search query (`user`, `search` per session)."""
    etype = ev["etype"]
    is_money = etype >= 2
    item_price = cat.items["price"].to_numpy()
    price = np.where(
        is_money,
        np.round(item_price[ev["item"]] * rng.choice([1.0, 1.0, 0.9, 0.8], len(etype)), 2),
        np.nan,
    )
    quantity = np.where(etype == 3, rng.geometric(0.7, len(etype)), 0)
    query = np.full(len(etype), None, dtype=object)
    first_view = (etype == 0) & np.r_[True, ev["session"][1:] != ev["session"][:-1]][: len(etype)]
    first_view &= search[ev["session"]]
    leaf_name = cat.items["category"].str.rsplit("/", n=1).str[-1].str.lower().to_numpy()
    query[first_view] = leaf_name[ev["item"][first_view]]
    events = pd.DataFrame(
        {
            "user_idx": user[ev["session"]],
            "session_key": ev["session"],
            "item_idx": ev["item"],
            "etype": etype,
            "time_ms": ev["time"],
            "quantity": quantity,
            "price": price,
            "query": query,
        }
    )
    # The shop records one event for a double click: no two events of one kind on one item
    # in one session within the near-duplicate window (so planted near duplicates are the only ones).
    events = events.sort_values(["session_key", "item_idx", "etype", "time_ms"], kind="stable")
    same = (events[["session_key", "item_idx", "etype"]].diff() == 0).all(axis=1)
    return events[
        ~(same & (events["time_ms"].diff() <= NEAR_DUPLICATE_WINDOW.total_seconds() * 1000))
    ].reset_index(drop=True)


def _human_events(
    cfg: GeneratorConfig,
    cat: Catalog,
    users: np.ndarray,
    signup_day: np.ndarray,
    n_human_events: int,
    rng: np.random.Generator,
    seq: SequentialShop | None = None,
) -> pd.DataFrame:
    """Sessions of human users in one chunk, as typed event rows (time in epoch ms).

    With `seq` (the `sequential` knob), sessions drift and continue the previous one, and
    device purchases and consumables bring later visits (`sources.synthetic.sequential`); the
    sessions' budget shrinks by what those visits add.
    """
    budget = n_human_events if seq is None else n_human_events * (1 - SEQUEL_EVENT_SHARE)
    sessions = _plan_sessions(cfg, cat, signup_day, budget, rng)
    ev = _funnel(*_session_views(cat, sessions, rng, seq), rng)
    session_user, search = sessions.user, sessions.search
    if seq is not None:
        ev, session_user = add_sequels(seq, ev, session_user, cfg.end_ms)
        search = np.r_[search, np.zeros(len(session_user) - len(search), bool)]
    return _typed_events(ev, users[session_user], search, cat, rng)


def _leaf_queries(cat: Catalog) -> np.ndarray:
    """The search text of each leaf: its noun, as shoppers type it."""
    names = cat.items["category"].str.rsplit("/", n=1).str[-1].str.lower().to_numpy()
    query = np.full(cat.n_leaves, "", dtype=object)
    query[cat.leaf] = names
    return query


def _user_ids(idx: np.ndarray) -> np.ndarray:
    return np.char.add("u", np.char.zfill((idx + 1).astype(str), 7))


def _format_events(
    events: pd.DataFrame, cat: Catalog, chunk: int, cfg: GeneratorConfig
) -> pd.DataFrame:
    """Typed events -> the export's text columns, sorted by time."""
    events = events.sort_values("time_ms", kind="stable").reset_index(drop=True)
    n = len(events)
    money = events["etype"].to_numpy() >= 2
    price = np.full(n, "", dtype=object)
    price[money] = np.char.mod("%.2f", events["price"].to_numpy()[money])
    qty = np.full(n, "", dtype=object)
    buy = events["etype"].to_numpy() == 3
    qty[buy] = events["quantity"].to_numpy()[buy].astype(str)
    session_hash = pd.util.hash_array(events["session_key"].to_numpy() * 1_000_003 + chunk) % (
        1 << 48
    )
    return pd.DataFrame(
        {
            "event_id": np.char.add(
                f"e{cfg.seed:02d}{chunk:03d}-", np.char.zfill(np.arange(n).astype(str), 9)
            ),
            "user_id": _user_ids(events["user_idx"].to_numpy()),
            "session_id": np.array([f"s{h:012x}" for h in session_hash.tolist()], dtype=object),
            "item_id": cat.items["item_id"].to_numpy()[events["item_idx"].to_numpy()],
            "event_type": np.array(EVENT_TYPES)[events["etype"].to_numpy()],
            # ISO 8601 to the millisecond (polars: numpy's datetime_as_string took 2.5 s of
            # the default shop's 10 s)
            "event_time": pl.Series(events["time_ms"].to_numpy().astype("datetime64[ms]"))
            .dt.to_string("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_numpy(),
            "quantity": qty,
            "price": price,
            "query": events["query"].fillna("").to_numpy(),
            "_day": (events["time_ms"].to_numpy() - cfg.start_ms) // MS_PER_DAY,
        }
    )


# Field problems in the order they are planted: (problem, column, the value it gets or None
# when `_planted_values` draws one).
_FIELD_PROBLEMS = [
    ("missing_user_id", "user_id", ""),
    ("missing_item_id", "item_id", ""),
    ("unknown_item", "item_id", None),
    ("bad_timestamp", "event_time", None),
    ("future_timestamp", "event_time", None),
    ("non_positive_price", "price", None),
    ("unparseable_row", "event_id", None),
]


def _plant_event_problems(
    rows: pd.DataFrame, rates: ProblemRates, rng: np.random.Generator
) -> pd.DataFrame:
    """Plant field problems and duplicates; `_problem` names what was planted on each row."""
    rows = rows.copy()
    rows["_problem"] = ""
    n = len(rows)
    free = np.ones(n, bool)

    def take(rate: float, mask: np.ndarray | None = None) -> np.ndarray:
        eligible = free & (True if mask is None else mask)
        k = min(int(rng.binomial(n, rate)), int(eligible.sum()))
        chosen = rng.choice(np.flatnonzero(eligible), k, replace=False) if k else np.array([], int)
        free[chosen] = False
        return chosen

    money = rows["price"].to_numpy() != ""
    for problem, column, value in _FIELD_PROBLEMS:
        idx = take(getattr(rates, problem), money if problem == "non_positive_price" else None)
        if not len(idx):
            continue
        planted = _planted_values(problem, rows, idx, rng) if value is None else value
        if planted is not None:
            rows.iloc[idx, rows.columns.get_loc(column)] = planted
        rows.iloc[idx, rows.columns.get_loc("_problem")] = problem

    # Duplicates follow their original directly, the way a re-sent batch arrives.
    copies = [
        _duplicates(rows, take(getattr(rates, problem)), problem, rng)
        for problem in ("exact_duplicate", "near_duplicate")
    ]
    rows["_order"] = np.arange(n, dtype=float)
    rows = pd.concat([rows, *copies]).sort_values("_order", kind="stable").drop(columns="_order")
    return rows.reset_index(drop=True)


def _planted_values(
    problem: str, rows: pd.DataFrame, idx: np.ndarray, rng: np.random.Generator
) -> object:
    """The values a drawn field problem puts on rows `idx` (None: the field stays; an
    unparseable row is broken when its line is written)."""
    if problem == "unknown_item":
        return [f"x{v:07d}" for v in rng.integers(0, 10_000_000, len(idx))]
    if problem == "bad_timestamp":
        return rng.choice(
            ["31/31/2026 25:61", "yesterday", "2026-13-45T99:00:00Z", "N/A"], len(idx)
        )
    if problem == "future_timestamp":
        t = pd.to_datetime(rows["event_time"].to_numpy()[idx]) + pd.to_timedelta(
            rng.integers(8_000, 15_000, len(idx)), "D"
        )  # broken clocks
        return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    if problem == "non_positive_price":
        return rng.choice(["0", "0.00", "-12.50", "-1"], len(idx))
    return None


def _duplicates(
    rows: pd.DataFrame, idx: np.ndarray, problem: str, rng: np.random.Generator
) -> pd.DataFrame:
    """Copies of rows `idx`, ordered right after their originals (`_order`); near duplicates
    a little later, with their own event id."""
    dup = rows.iloc[idx].copy()
    dup["_problem"] = problem
    if problem == "near_duplicate":
        shifted = pd.to_datetime(dup["event_time"]) + pd.to_timedelta(
            rng.integers(1, 1500, len(idx)), "ms"
        )
        dup["event_time"] = shifted.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
        dup["event_id"] = dup["event_id"] + "r"
    dup["_order"] = idx + 0.5
    return dup


def _csv_lines(frame: pd.DataFrame) -> list[str]:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    return buf.getvalue().split("\n")[:-1]


def _write_event_day(
    rows: pd.DataFrame, path: Path, fmt: str, rng: np.random.Generator
) -> list[dict]:
    """Write one day's part file; returns ground-truth rows (file, line, problem)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    problem = rows["_problem"].to_numpy()
    data = rows[EVENT_COLUMNS]
    truth = []
    if fmt == "csv":
        lines = _csv_lines(data)
        for i in np.flatnonzero(problem == "unparseable_row"):
            line = lines[i + 1]
            lines[i + 1] = rng.choice(
                [
                    line[: max(1, len(line) // 3)],
                    line.replace(",", ";"),
                    line + ",extra,fields",
                    "#### export interrupted ####",
                ]
            )
        write_text_atomic("\n".join(lines) + "\n", path)
        first_line = 2  # line 1 is the header
    else:
        bad = problem == "unparseable_row"
        if (
            bad.any()
        ):  # a typed file cannot hold a torn line: the export garbles the timestamp instead
            data = data.copy()
            data.loc[bad, "event_time"] = "garbled:0x1f"
            problem = np.where(bad, "bad_timestamp", problem)
        write_parquet_atomic(data, path)
        first_line = 1  # record number inside the file
    for i in np.flatnonzero(problem != ""):
        truth.append(
            {
                "file": path.name,
                "path": str(path),
                "line": int(i + first_line),
                "problem": str(problem[i]),
                "expected_reason": PROBLEM_REASONS[str(problem[i])],
            }
        )
    return truth


def _plant_catalog_problems(
    items: pd.DataFrame, rates: ProblemRates, rng: np.random.Generator
) -> tuple[pd.DataFrame, list[str]]:
    """Extra catalog rows with problems; the true catalog rows stay intact."""
    n = len(items)
    extra, problems = [], []
    k = int(rng.binomial(n, rates.catalog_duplicate))
    dup_idx = rng.choice(n, k, replace=False)
    for problem, rows in [
        ("catalog_duplicate", items.iloc[dup_idx]),
        (
            "catalog_missing_item_id",
            items.sample(
                int(rng.binomial(n, rates.catalog_missing_item_id)), random_state=1
            ).assign(item_id=""),
        ),
        (
            "catalog_non_positive_price",
            items.sample(
                int(rng.binomial(n, rates.catalog_non_positive_price)), random_state=2
            ).assign(price=lambda f: -f["price"].where(rng.random(len(f)) < 0.5, 0.0)),
        ),
    ]:
        if problem == "catalog_non_positive_price":
            rows = rows.assign(item_id=[f"i9{j:06d}" for j in range(len(rows))])
        extra.append(rows)
        problems += [problem] * len(rows)
    out = pd.concat([items, *extra], ignore_index=True)
    order = rng.permutation(len(out))
    out = out.iloc[order].reset_index(drop=True)
    labels = np.array([""] * n + problems, dtype=object)[order]
    # A duplicate must come after its original so that "first row wins" is well defined.
    is_dup = labels == "catalog_duplicate"
    out = pd.concat([out[~is_dup], out[is_dup]], ignore_index=True)
    labels = np.concatenate([labels[~is_dup], labels[is_dup]])
    return out, list(labels)


GENERATOR_VERSION = 2  # bump whenever the same config would write different files


def _config_record(cfg: GeneratorConfig) -> dict:
    """The config as the manifest and fingerprint hold it; `sequential` only when on, so data
    sets without it keep the fingerprints they had before the knob existed."""
    record = asdict(cfg)
    if not cfg.sequential:
        del record["sequential"]
    return record


def dataset_fingerprint(cfg: GeneratorConfig) -> str:
    """Identifies the files `generate(cfg)` writes: the config plus the generator version."""
    text = json.dumps(
        {"version": GENERATOR_VERSION, "config": _config_record(cfg)}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _chunks(n: int, size: int) -> Iterator[tuple[int, np.ndarray]]:
    for k, lo in enumerate(range(0, n, size)):
        yield k, np.arange(lo, min(n, lo + size))


@dataclass
class _Population:
    """The shop and its users, drawn once before the chunks: roles, sign-up days, budgets."""

    cat: Catalog
    shop: Shop
    role: np.ndarray  # "" for ordinary humans, else the planted bot type or hard negative
    signup_day: np.ndarray
    human_events_total: int
    per_human: float
    seq: SequentialShop | None


def _populate(cfg: GeneratorConfig, rng: np.random.Generator, say: Callable) -> _Population:
    """Catalog, users' roles and sign-up days, and the human events' budget."""
    cat = build_catalog(cfg, rng)
    say(
        f"[generate] preset={cfg.preset} users={cfg.n_users:,} items={cfg.n_items:,} target events={cfg.n_events:,}"
        + (" sequential" if cfg.sequential else "")
    )
    # Roles: each planted bot type and hard-negative kind gets its share of users.
    counts = cfg.traffic.counts(cfg.n_users)
    role = np.full(cfg.n_users, "", dtype=object)
    special = rng.choice(cfg.n_users, sum(counts.values()), replace=False)
    role[special] = np.repeat(list(counts), list(counts.values()))
    signup_day = np.where(
        rng.random(cfg.n_users) < cfg.new_user_share, rng.integers(1, cfg.n_days, cfg.n_users), 0
    )
    by_leaf = _GroupedSampler(cat.leaf, cat.popularity, cat.n_leaves)
    shop = Shop(
        cfg.start_ms,
        cfg.n_days,
        cat.leaf,
        cat.popularity,
        cat.items["price"].to_numpy(),
        _leaf_queries(cat),
        lambda leaves: by_leaf.draw(leaves, rng),
    )
    per_human = cfg.n_events / max(cfg.n_users, 1)
    expected_other = (
        counts["crawler"] * 950
        + counts["click_farm"] * 155
        + counts["cart_stuffer"] * 210
        + counts["price_scraper"] * 940
        + counts["humanlike"] * 530
        + counts["bulk_buyer"] * 90
        + counts["power_user"] * 300
        + counts["shared_household"] * 3 * per_human
    )
    human_events_total = max(cfg.n_events - expected_other, cfg.n_events // 2)
    seq = _sequential_shop(cfg, cat) if cfg.sequential else None
    return _Population(cat, shop, role, signup_day, human_events_total, per_human, seq)


def _sequential_shop(cfg: GeneratorConfig, cat: Catalog) -> SequentialShop:
    """The knob's structure, on its own random stream: every other draw stays as it was."""
    return build_sequential_shop(
        cat.items["category"],
        cat.items["listed_day"].to_numpy(),
        len(next(iter(_DEPARTMENTS.values()))[0]),
        cfg.leaves_per_subcategory,
        np.random.default_rng([cfg.seed, 1]),
    )


def _chunk_events(
    cfg: GeneratorConfig, pop: _Population, users: np.ndarray, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict]:
    """Every typed event of one chunk of users inside the window, and the flash sale."""
    role, signup_day = pop.role, pop.signup_day
    is_human = np.isin(role, ["", "flash_sale"])
    humans = users[is_human[users]]
    budget = int(pop.human_events_total * len(humans) / max(int(is_human.sum()), 1))
    parts = [_human_events(cfg, pop.cat, humans, signup_day[humans], budget, rng, pop.seq)]
    power = users[role[users] == "power_user"]
    households = users[role[users] == "shared_household"]
    members = np.repeat(households, rng.integers(2, 5, len(households)))
    for k, (people, budget) in enumerate(
        [(power, 300 * len(power)), (members, pop.per_human * len(members))], start=1
    ):
        if len(people):
            extra = _human_events(
                cfg, pop.cat, people, signup_day[people], int(budget), rng, pop.seq
            )
            parts.append(extra.assign(session_key=extra["session_key"] + k * 10**9))
    for kind, make in BOT_GENERATORS.items():
        parts.append(make(pop.shop, users[role[users] == kind], rng))
    parts.append(bulk_buyer_events(pop.shop, users[role[users] == "bulk_buyer"], rng))
    sale, sale_start, deals = flash_sale_events(pop.shop, users[role[users] == "flash_sale"], rng)
    parts.append(sale)
    flash_sale = {
        "start": pd.Timestamp(sale_start, unit="ms", tz="UTC").isoformat(),
        "items": list(pop.cat.items["item_id"].to_numpy()[deals]),
    }
    events = pd.concat([p for p in parts if len(p)], ignore_index=True)
    events = events[(events["time_ms"] >= cfg.start_ms) & (events["time_ms"] < cfg.end_ms)]
    return events, flash_sale


def generate(cfg: GeneratorConfig, out: DataLayout, progress: bool = True) -> dict:
    """Generate landing files and ground truth under `out`; returns the manifest."""
    rng = np.random.default_rng(cfg.seed)
    say = print if progress else (lambda *a, **k: None)
    pop = _populate(cfg, rng, say)
    for path in (out.landing_events, out.ground_truth):
        path.mkdir(parents=True, exist_ok=True)
    truth: list[dict] = []
    n_rows = 0
    flash_sale: dict = {}
    for chunk, users in _chunks(cfg.n_users, cfg.users_per_chunk):
        events, flash_sale = _chunk_events(cfg, pop, users, rng)
        rows = _plant_event_problems(_format_events(events, pop.cat, chunk, cfg), cfg.problems, rng)
        for day, day_rows in rows.groupby("_day", sort=True):
            date = (pd.Timestamp(cfg.start) + pd.Timedelta(days=int(day))).strftime("%Y-%m-%d")
            fmt = (
                cfg.event_format
                if cfg.event_format != "mixed"
                else ("csv" if day % 2 == 0 else "parquet")
            )
            path = out.landing_events / f"date={date}" / f"part-{chunk:05d}.{fmt}"
            truth += _write_event_day(day_rows.reset_index(drop=True), path, fmt, rng)
        n_rows += len(rows)
        say(f"[generate] chunk {chunk}: {len(rows):,} event rows written ({n_rows:,} so far)")

    catalog, labels = _plant_catalog_problems(_export_catalog(cfg, pop.cat), cfg.problems, rng)
    truth += _write_catalog(catalog, labels, out)
    _write_source(cfg, out)
    write_parquet_atomic(
        pd.DataFrame(truth, columns=["file", "path", "line", "problem", "expected_reason"]),
        out.ground_truth / "planted_problems.parquet",
    )
    traffic = _traffic_labels(pop.role)
    write_parquet_atomic(traffic, out.ground_truth / "traffic_labels.parquet")
    manifest = {
        "fingerprint": dataset_fingerprint(cfg),
        "config": _config_record(cfg),
        "event_rows": n_rows,
        "catalog_rows": len(catalog),
        "planted_problems": pd.Series([t["problem"] for t in truth]).value_counts().to_dict(),
        "traffic_labels": traffic["kind"].value_counts().to_dict(),
        "flash_sale": flash_sale,
    }
    if pop.seq is not None:
        manifest["sequential"] = _write_item_sequels(pop.cat, pop.seq, out)
    manifest["landing_files"] = landing_paths(out.landing)
    manifest["source"] = json.loads((out.landing / "source.json").read_text())
    write_text_atomic(
        json.dumps(manifest, indent=2, default=str), out.ground_truth / "manifest.json"
    )
    say(
        f"[generate] {n_rows:,} event rows, {len(catalog):,} catalog rows, {len(truth):,} planted problems, "
        f"{int((traffic['traffic_class'] == 'bot').sum())} bot users -> {out.landing}"
    )
    return manifest


def generated_landing(out: DataLayout) -> bool:
    """Whether the landing folder holds files `generate` wrote and no other (all of them, or
    the days landed so far), under the source declaration it wrote: what allows the
    development pseudonym key, see `pseudonyms.check_pseudonym_key`. Paths, not contents:
    `forget_user` rewrites files in place."""
    manifest_path, source_path = out.ground_truth / "manifest.json", out.landing / "source.json"
    if not manifest_path.is_file() or not source_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    landed = landing_paths(out.landing)
    return (
        bool(landed)
        and set(landed) <= set(manifest.get("landing_files", []))
        and manifest.get("source") == json.loads(source_path.read_text())
    )


def _export_catalog(cfg: GeneratorConfig, cat: Catalog) -> pd.DataFrame:
    return cat.items.assign(
        listed_at=(
            pd.Timestamp(cfg.start, tz="UTC") + pd.to_timedelta(cat.items["listed_day"], "D")
        ).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    )[ITEM_COLUMNS]


def _write_catalog(catalog: pd.DataFrame, labels: list[str], out: DataLayout) -> list[dict]:
    """Write the exported catalog; returns the ground-truth rows of its planted problems."""
    catalog_path = out.landing_items / "catalog.csv"
    catalog_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic("\n".join(_csv_lines(catalog)) + "\n", catalog_path)
    return [
        {
            "file": catalog_path.name,
            "path": str(catalog_path),
            "line": i + 2,
            "problem": p,
            "expected_reason": PROBLEM_REASONS[p],
        }
        for i, p in enumerate(labels)
        if p
    ]


def _write_source(cfg: GeneratorConfig, out: DataLayout) -> None:
    source = {
        "source": SOURCE_NAME,
        "window_start": pd.Timestamp(cfg.start_ms, unit="ms", tz="UTC").isoformat(),
        "window_end": pd.Timestamp(cfg.end_ms, unit="ms", tz="UTC").isoformat(),
        "timezone": "UTC",
        "events": "events/date=YYYY-MM-DD/part-*.csv|parquet",
        "catalog": "items/catalog.csv",
    }
    write_text_atomic(json.dumps(source, indent=2), out.landing / "source.json")


def _traffic_labels(role: np.ndarray) -> pd.DataFrame:
    labelled = np.flatnonzero(role != "")
    return pd.DataFrame(
        {
            "user_id": _user_ids(labelled),
            "traffic_class": np.where(np.isin(role[labelled], BOT_TYPES), "bot", "hard_negative"),
            "kind": role[labelled].astype(str),
        }
    )


def _sequels_frame(cat: Catalog, seq: SequentialShop) -> pd.DataFrame:
    item_id = cat.items["item_id"].to_numpy()
    sequels = pd.DataFrame(
        {
            "item_id": item_id,
            "accessories": [list(item_id[row[row >= 0]]) for row in seq.accessories],
            "repurchase_days": np.where(seq.repurchase_days > 0, seq.repurchase_days, np.nan),
        }
    )
    return sequels[seq.is_device | (seq.repurchase_days > 0)].reset_index(drop=True)


def _write_item_sequels(cat: Catalog, seq: SequentialShop, out: DataLayout) -> dict:
    """Ground truth of the sequential structure, `item_sequels.parquet` (see `item_sequels`);
    returns counts for the manifest."""
    write_parquet_atomic(_sequels_frame(cat, seq), out.ground_truth / "item_sequels.parquet")
    return {
        "devices": int(seq.is_device.sum()),
        "consumables": int((seq.repurchase_days > 0).sum()),
    }


def item_sequels(cfg: GeneratorConfig) -> pd.DataFrame:
    """Each device's accessories (item ids) and each consumable's repurchase interval in days
    (NaN for devices), as `cfg` with the `sequential` knob on has them; the knob off keeps
    the same catalog, so this also says what the knob would add to a data set without it."""
    cat = build_catalog(cfg, np.random.default_rng(cfg.seed))
    return _sequels_frame(cat, _sequential_shop(cfg, cat))


def clean_interactions(cfg: GeneratorConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shop's behaviour as clean interactions, and its catalog, without landing files.

    The same simulation as `generate(cfg)` (the same human events, hard negatives included),
    minus the planted problems and the bot users: interactions (user_id, item_id, event_type,
    event_time as UTC datetimes, in time order) and the true catalog (item_id, category as a
    small int, category_name, price, price_bucket, listed_at). For a config of one chunk of
    users (every preset but `large`) the events are exactly those `generate` writes; after the
    first chunk, `generate` plants problems between chunks, so later chunks differ in their draws.
    """
    rng = np.random.default_rng(cfg.seed)
    pop = _populate(cfg, rng, lambda *a, **k: None)
    frames = []
    for _, users in _chunks(cfg.n_users, cfg.users_per_chunk):
        events, _ = _chunk_events(cfg, pop, users, rng)
        frames.append(events[~np.isin(pop.role[events["user_idx"].to_numpy()], BOT_TYPES)])
    events = pd.concat(frames).sort_values("time_ms", kind="stable")
    items = pop.cat.items
    interactions = pd.DataFrame(
        {
            "user_id": _user_ids(events["user_idx"].to_numpy()),
            "item_id": items["item_id"].to_numpy()[events["item_idx"].to_numpy()],
            "event_type": np.array(EVENT_TYPES)[events["etype"].to_numpy()],
            "event_time": pd.to_datetime(events["time_ms"].to_numpy(), unit="ms", utc=True),
        }
    )
    catalog = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "category": pop.cat.leaf.astype(np.int64),
            "category_name": items["category"],
            "price": items["price"],
            "price_bucket": price_bucket(items["price"]),
            "listed_at": pd.Timestamp(cfg.start, tz="UTC")
            + pd.to_timedelta(items["listed_day"], "D"),
        }
    )
    return interactions, catalog
