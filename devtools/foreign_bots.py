"""Foreign bot designs: automated shop traffic written without reference to the bot detector.

Each design imitates a kind of automation that real e-commerce sites see and is emitted the way
it would show up in a behaviour-log export (views, favourites, cart adds, purchases). Every
design is parameterised by the number of accounts and a seed; all randomness comes from
``numpy.random.default_rng`` streams spawned from the seed, one per design.

Designs
-------
``scalper``  Limited-drop sniper (sneaker / GPU / console bots). A fleet of aged accounts sits
    mostly idle, with a little cover browsing. Before each drop a "monitor" polls the drop
    item's page with a configurable, jittered retry delay. At the release instant (on the hour)
    each bot adds to cart within about a second and checks out a couple of seconds later with the
    quantity at the per-customer limit. Stock is finite: only the fastest bots buy. The rest
    keep refreshing the sold-out page for a short while, then give up.
``scraper``  Price / catalogue scraper with randomised, heavy-tailed delays (Pareto sleeps
    with back-off stalls). It runs as a cron job at a fixed hour per account with queue jitter and
    alternates between two modes: walking category listings in shop order (price ascending,
    continuing into the next category) and paging through keyword-search results. It rotates
    its session/cookie every few dozen pages and occasionally adds an item to the cart, only
    to read cart-level price and stock.
``warmer``  Account-warming / fake-engagement farm (click farm or emulator farm). Accounts
    come online in batches and first "warm up" for several days with human-paced browsing
    (log-normal dwell times, sessions that stay within one category, occasional search or
    favourite) inside one working shift (01:00-13:00 UTC, i.e. a UTC+7/8 day). Once warm, each
    session follows the task script: browse, search the campaign keyword, open one of the
    seller's target items, favourite it, and sometimes add it to the cart and buy one unit
    ("brushing"). Each account favourites each target at most once.
``hoarder``  Inventory-denial (denial-of-inventory) bot. It holds a competitor's or hyped
    limited-stock items hostage by adding them to the cart and re-adding them every time the
    cart reservation (15 min) is about to expire. It works in shifts of several hours, uses
    request-mode adds (the page is viewed only sometimes), often takes a fresh session per
    loop to get a new cart, and never buys.

Entry point: :func:`foreign_bot_events`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dagster_project.contracts import EVENT_COLUMNS, EVENT_TYPES

DAY = 86_400.0
HOUR = 3_600.0
VIEW, FAV, CART, BUY = 0, 1, 2, 3
EVENT_TYPE_NAMES = np.array(EVENT_TYPES, dtype=object)
# Search-text modifiers combined with a category leaf ("cases", "cheap cases", ...).
MODIFIERS = ("{}", "cheap {}", "best {}", "{} sale", "new {}", "{} deals")
N_MOD = len(MODIFIERS)
DESIGNS = ("scalper", "scraper", "warmer", "hoarder")


@dataclass(frozen=True)
class _Catalog:
    """Array view of the catalogue; ``listing`` is the shop's category-then-price order."""

    item_id: np.ndarray
    price: np.ndarray
    cat_of: np.ndarray
    listing: np.ndarray
    cat_start: np.ndarray
    cat_size: np.ndarray
    cat_weight: np.ndarray
    queries: np.ndarray  # index c * N_MOD + m; the extra last entry is None

    @property
    def n_cat(self) -> int:
        return int(self.cat_size.size)


def _prepare(catalog: pd.DataFrame) -> _Catalog:
    """Validate the catalogue and build listing order, category blocks and query texts."""
    if catalog.empty:
        raise ValueError("catalog is empty")
    item_id = catalog["item_id"].astype(str).to_numpy(dtype=object)
    price = catalog["price"].astype(float).to_numpy()
    cats, cat_of = np.unique(catalog["category"].astype(str).to_numpy(), return_inverse=True)
    listing = np.lexsort((item_id.astype(str), price, cat_of))
    cat_size = np.bincount(cat_of, minlength=cats.size)
    cat_start = np.cumsum(cat_size) - cat_size
    leaves = [c.rsplit("/", 1)[-1].strip().lower() for c in cats]
    queries = np.array(
        [m.format(leaf) for leaf in leaves for m in MODIFIERS] + [None], dtype=object
    )
    return _Catalog(
        item_id=item_id,
        price=price,
        cat_of=cat_of,
        listing=listing,
        cat_start=cat_start,
        cat_size=cat_size,
        cat_weight=cat_size / cat_size.sum(),
        queries=queries,
    )


def _seg(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expand per-segment counts into (segment index, position within segment) per row."""
    counts = np.asarray(counts, dtype=np.int64)
    owner = np.repeat(np.arange(counts.size), counts)
    starts = np.cumsum(counts) - counts
    return owner, np.arange(owner.size) - starts[owner]


def _seg_cumsum(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum of ``x`` restarted at every segment boundary."""
    counts = np.asarray(counts, dtype=np.int64)
    cs = np.cumsum(x, dtype=float)
    before = np.concatenate([[0.0], cs])[np.cumsum(counts) - counts]
    return cs - np.repeat(before, counts)


def _at_least_one(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Switch on one random column in every all-False row so each account does something."""
    mask = mask.copy()
    idle = np.flatnonzero(~mask.any(axis=1))
    mask[idle, rng.integers(0, mask.shape[1], idle.size)] = True
    return mask


def _pick_in_cat(cat: _Catalog, rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
    """Uniform random item from each category in ``c``."""
    offset = (rng.random(c.size) * cat.cat_size[c]).astype(np.int64)
    return cat.listing[cat.cat_start[c] + offset]


def _events(
    acct: np.ndarray,
    sess: np.ndarray,
    item: np.ndarray,
    etype: np.ndarray | int,
    t: np.ndarray,
    qty: np.ndarray | float = np.nan,
    query: np.ndarray | int = -1,
) -> dict[str, np.ndarray]:
    """Bundle one block of events as broadcast arrays (times in seconds from ``start``)."""
    n = np.asarray(t).size
    return {
        "acct": np.broadcast_to(acct, n).astype(np.int64),
        "sess": np.broadcast_to(sess, n).astype(np.int64),
        "item": np.broadcast_to(item, n).astype(np.int64),
        "etype": np.broadcast_to(etype, n).astype(np.int8),
        "t": np.broadcast_to(t, n).astype(float),
        "qty": np.broadcast_to(qty, n).astype(float),
        "query": np.broadcast_to(query, n).astype(np.int64),
    }


def _concat(blocks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def _browse_sessions(
    cat: _Catalog,
    rng: np.random.Generator,
    acct: np.ndarray,
    sess: np.ndarray,
    t0: np.ndarray,
    n_views: np.ndarray,
    median_gap: float,
    p_search: float,
) -> dict[str, np.ndarray]:
    """Human-looking browse sessions: category-focused views, log-normal dwell, some search."""
    own, pos = _seg(n_views)
    focus = rng.choice(cat.n_cat, size=t0.size, p=cat.cat_weight)
    stray = rng.choice(cat.n_cat, size=own.size, p=cat.cat_weight)
    c = np.where(rng.random(own.size) < 0.8, focus[own], stray)
    gaps = np.minimum(rng.lognormal(np.log(median_gap), 0.9, own.size), 900.0)
    t = t0[own] + _seg_cumsum(gaps, n_views) - gaps
    searched = (pos == 0) & (rng.random(own.size) < p_search)
    query = np.where(searched, c * N_MOD + rng.integers(0, N_MOD, own.size), -1)
    return _events(acct[own], sess[own], _pick_in_cat(cat, rng, c), VIEW, t, query=query)


def _scalper(cat: _Catalog, n_acc: int, n_days: int, rng: np.random.Generator) -> dict:
    """Limited-drop sniper fleet: cover browsing, pre-drop page monitoring, instant max-qty buy.

    Imitates sneaker/GPU "AIO" bots. Drops are weekly, released exactly on the hour in the US
    morning (13:00-16:00 UTC) on high-priced items with a per-customer limit of 1-4. Monitors
    poll the product page with a per-bot retry delay (5-45 s, gamma jitter) for 5-45 minutes
    before release. Add-to-cart latency at release is log-normal with a median of about 0.7 s,
    and checkout follows after about 1.8 s with autofilled payment. Only the fastest ``stock``
    bots get a purchase; the losers refresh the sold-out page for a few seconds.
    """
    n_drops = max(1, n_days // 7)
    drop_day = np.sort(rng.choice(n_days, size=n_drops, replace=False))
    drop_t = drop_day * DAY + rng.choice([13, 14, 15, 16], n_drops) * HOUR
    hot = np.flatnonzero(cat.price >= np.quantile(cat.price, 0.9))
    drop_item = rng.choice(hot, n_drops, replace=hot.size < n_drops)
    limit = rng.choice([1.0, 2.0, 2.0, 3.0, 4.0], n_drops)
    stock = np.maximum(1, (n_acc * rng.uniform(0.15, 0.5, n_drops)).astype(np.int64))

    poll_mean = rng.uniform(5.0, 45.0, n_acc)
    speed = rng.lognormal(np.log(0.7), 0.5, n_acc)
    loads_page = rng.random(n_acc) < 0.4  # browser-automation mode vs raw-request mode

    pa, pdrop = np.nonzero(_at_least_one(rng.random((n_acc, n_drops)) < 0.85, rng))
    n_pairs = pa.size
    blocks = []

    # Monitor polling, counted backwards from the release instant.
    window = rng.uniform(300.0, 2700.0, n_pairs)
    n_poll = np.maximum(1, (window / poll_mean[pa]).astype(np.int64))
    own, _ = _seg(n_poll)
    gaps = poll_mean[pa][own] * rng.gamma(4.0, 0.25, own.size)
    t = drop_t[pdrop][own] - _seg_cumsum(gaps, n_poll)
    blocks.append(_events(pa[own], own, drop_item[pdrop][own], VIEW, t))

    # Release: rank bots of each drop by latency; the first ``stock`` of them win.
    latency = speed[pa] * rng.lognormal(0.0, 0.3, n_pairs)
    order = np.lexsort((latency, pdrop))
    _, rank_sorted = _seg(np.bincount(pdrop, minlength=n_drops))
    rank = np.empty(n_pairs, dtype=np.int64)
    rank[order] = rank_sorted
    win = rank < stock[pdrop]
    t_cart = drop_t[pdrop] + latency
    pairs = np.arange(n_pairs)
    lp = loads_page[pa]
    blocks.append(
        _events(
            pa[lp], pairs[lp], drop_item[pdrop][lp], VIEW, drop_t[pdrop][lp] + 0.35 * latency[lp]
        )
    )
    w = win
    blocks.append(_events(pa[w], pairs[w], drop_item[pdrop][w], CART, t_cart[w]))
    t_buy = t_cart[w] + rng.lognormal(np.log(1.8), 0.4, int(w.sum()))
    blocks.append(_events(pa[w], pairs[w], drop_item[pdrop][w], BUY, t_buy, qty=limit[pdrop][w]))
    lose = np.flatnonzero(~win)
    n_ref = rng.integers(3, 15, lose.size)
    own, _ = _seg(n_ref)
    t = t_cart[lose][own] + _seg_cumsum(rng.gamma(2.0, 1.0, own.size), n_ref)
    blocks.append(_events(pa[lose][own], lose[own], drop_item[pdrop][lose][own], VIEW, t))

    # Cover traffic on the aged accounts.
    n_cov = rng.poisson(3.0, n_acc)
    c_acc = np.repeat(np.arange(n_acc), n_cov)
    t0 = rng.uniform(0.0, n_days * DAY, c_acc.size)
    sess = n_pairs + np.arange(c_acc.size)
    n_views = rng.integers(1, 7, c_acc.size)
    blocks.append(_browse_sessions(cat, rng, c_acc, sess, t0, n_views, 20.0, 0.3))
    return _concat(blocks)


def _scraper(cat: _Catalog, n_acc: int, n_days: int, rng: np.random.Generator) -> dict:
    """Cron-scheduled catalogue scraper with Pareto delays, mode switching and session rotation.

    Imitates commercial price-intelligence crawlers that deliberately randomise their sleeps.
    Each account runs on 25-70 % of days at its own cron hour (+-10 min of queue jitter). A run
    fetches about 120 product pages (log-normal). The delay between pages is
    ``xm * (Pareto(alpha) + 1)`` with xm 1-5 s and alpha 1.3-2.5, capped at 30 min, so it has a
    heavy tail rather than a fixed interval. A run either walks listings in shop order or pages
    through search results for a keyword list (a new keyword every 8-40 results). The cookie
    jar is reset every 15-80 pages. About 1.5 % of pages trigger a cart add, because some shops
    only show the final price and stock in the cart.
    """
    n_items = cat.item_id.size
    p_active = rng.uniform(0.25, 0.7, n_acc)
    cron_h = rng.integers(0, 24, n_acc)
    xm = rng.uniform(1.0, 5.0, n_acc)
    alpha = rng.uniform(1.3, 2.5, n_acc)
    rotate = rng.integers(15, 80, n_acc)
    med_pages = rng.lognormal(np.log(120.0), 0.5, n_acc)
    search_share = rng.uniform(0.0, 0.6, n_acc)
    probe_rate = rng.uniform(0.0, 0.03, n_acc)

    r_acc, r_day = np.nonzero(_at_least_one(rng.random((n_acc, n_days)) < p_active[:, None], rng))
    n_runs = r_acc.size
    r_start = r_day * DAY + cron_h[r_acc] * HOUR + rng.normal(0.0, 600.0, n_runs)
    pages = rng.lognormal(np.log(med_pages[r_acc]), 0.4)
    n_pages = np.clip(pages, 10, 1500).astype(np.int64)
    search = rng.random(n_runs) < search_share[r_acc]

    own, pos = _seg(n_pages)
    a = r_acc[own]
    gaps = np.minimum(xm[a] * (rng.pareto(alpha[a]) + 1.0), 1800.0)
    t = r_start[own] + _seg_cumsum(gaps, n_pages) - gaps

    # Listing walk: start at page 1 or resume mid-category, continue into the next category.
    start_cat = rng.integers(0, cat.n_cat, n_runs)
    resume = (rng.random(n_runs) * cat.cat_size[start_cat]).astype(np.int64)
    offset = np.where(rng.random(n_runs) < 0.5, 0, resume)
    walk = cat.listing[((cat.cat_start[start_cat] + offset)[own] + pos) % n_items]

    # Keyword search: results in relevance (here: price-descending) order within one category.
    blk_len = rng.integers(8, 40, n_runs)[own]
    blk = pos // blk_len
    _, blk_id = np.unique(own * 2048 + blk, return_inverse=True)
    n_blk = int(blk_id.max()) + 1
    c = rng.choice(cat.n_cat, n_blk, p=cat.cat_weight)[blk_id]
    k = pos - blk * blk_len
    hit = cat.listing[cat.cat_start[c] + cat.cat_size[c] - 1 - k % cat.cat_size[c]]
    is_s = search[own]
    item = np.where(is_s, hit, walk)
    query = np.where(is_s, c * N_MOD + rng.integers(0, N_MOD, n_blk)[blk_id], -1)
    sess = own * 4096 + pos // rotate[a]
    views = _events(a, sess, item, VIEW, t, query=query)

    probe = rng.random(own.size) < probe_rate[a]
    t_probe = t[probe] + rng.uniform(0.2, 1.5, int(probe.sum()))
    probes = _events(a[probe], sess[probe], item[probe], CART, t_probe)
    return _concat([views, probes])


def _warmer(cat: _Catalog, n_acc: int, n_days: int, rng: np.random.Generator) -> dict:
    """Account-warming farm that turns into a fake-favourite / brushing campaign.

    Imitates click farms that age accounts before they do paid engagement. Accounts go live in
    batches over the first third of the window and only browse for 4-10 days. Each day has
    Poisson(0.8-2.0) sessions in a 01:00-13:00 UTC shift, each with 2-8 category-focused views,
    a median dwell of about 18 s and an occasional search or favourite. After warming, sessions
    also run the campaign script: search one of two assigned keywords, open a target item
    (sometimes twice) and favourite it. About 12 % of campaign sessions also add it to the cart,
    and half of those buy one unit. Targets are 3-8 low-to-mid-priced items of one category.
    """
    big = np.flatnonzero(cat.cat_size >= 3)
    tc = int(rng.choice(big if big.size else np.arange(cat.n_cat)))
    members = cat.listing[cat.cat_start[tc] : cat.cat_start[tc] + cat.cat_size[tc]]
    cheap = members[: max(1, int(np.ceil(members.size * 0.7)))]
    n_t = int(min(rng.integers(3, 9), cheap.size))
    targets = rng.choice(cheap, n_t, replace=False)
    keywords = tc * N_MOD + rng.choice(N_MOD, 2, replace=False)

    onboard = rng.integers(0, max(1, n_days // 3), n_acc)
    warm_len = rng.integers(4, 11, n_acc)
    rate = rng.uniform(0.8, 2.0, n_acc)
    live = np.arange(n_days)[None, :] >= onboard[:, None]
    per_day = rng.poisson(rate[:, None], (n_acc, n_days)) * live
    per_day[np.arange(n_acc), onboard] = np.maximum(per_day[np.arange(n_acc), onboard], 1)
    cell = np.repeat(np.arange(n_acc * n_days), per_day.ravel())
    s_acc, s_day = cell // n_days, cell % n_days
    n_s = cell.size
    t0 = s_day * DAY + rng.uniform(1.0, 13.0, n_s) * HOUR

    # The k-th post-warm-up session of an account works on its k-th target (once each).
    elig = s_day >= (onboard + warm_len)[s_acc]
    rank = _seg_cumsum(elig.astype(float), np.bincount(s_acc, minlength=n_acc)).astype(int) - 1
    n_fav = rng.integers(max(1, n_t // 2), n_t + 1, n_acc)
    camp = elig & (rank < n_fav[s_acc])
    perm = np.argsort(rng.random((n_acc, n_t)), axis=1)
    target = targets[perm[s_acc, np.clip(rank, 0, n_t - 1)]]

    # Campaign block slots: search view, second look, favourite, cart, purchase.
    cart = camp & (rng.random(n_s) < 0.12)
    slots = np.column_stack(
        [camp, camp & (rng.random(n_s) < 0.3), camp, cart, cart & (rng.random(n_s) < 0.5)]
    )
    slot_type = np.array([VIEW, VIEW, FAV, CART, BUY])
    slot_order = np.argsort(~slots, axis=1, kind="stable")
    n_block = slots.sum(axis=1)
    n_browse = rng.integers(2, 9, n_s)
    insert_at = (rng.random(n_s) * (n_browse + 1)).astype(np.int64)
    n_ev = n_browse + n_block

    own, pos = _seg(n_ev)
    k = pos - insert_at[own]
    in_block = (k >= 0) & (k < n_block[own])
    slot = slot_order[own, np.clip(k, 0, 4)]
    etype = np.where(in_block, slot_type[slot], VIEW)

    focus = rng.choice(cat.n_cat, size=n_s, p=cat.cat_weight)
    stray = rng.choice(cat.n_cat, size=own.size, p=cat.cat_weight)
    c = np.where(rng.random(own.size) < 0.8, focus[own], stray)
    item = np.where(in_block, target[own], _pick_in_cat(cat, rng, c))
    gaps = np.minimum(rng.lognormal(np.log(18.0), 0.9, own.size), 600.0)
    t = t0[own] + _seg_cumsum(gaps, n_ev) - gaps

    kw = keywords[rng.integers(0, 2, own.size)]
    browse_q = c * N_MOD + rng.integers(0, N_MOD, own.size)
    query = np.where(
        in_block & (slot == 0),
        kw,
        np.where(~in_block & (pos == 0) & (rng.random(own.size) < 0.3), browse_q, -1),
    )
    qty = np.where(etype == BUY, 1.0, np.nan)
    main = _events(s_acc[own], own, item, etype, t, qty=qty, query=query)

    # Organic-looking favourites on a few browsed items, placed before the next event.
    fav = ~in_block & (rng.random(own.size) < 0.04)
    t_fav = t[fav] + gaps[fav] * rng.uniform(0.3, 0.8, int(fav.sum()))
    extra = _events(s_acc[own][fav], own[fav], item[fav], FAV, t_fav)
    return _concat([main, extra])


def _hoarder(cat: _Catalog, n_acc: int, n_days: int, rng: np.random.Generator) -> dict:
    """Denial-of-inventory bot that re-adds limited items just as the cart hold expires.

    Imitates bots that lock a competitor's or a hyped item's stock. Targets are 4-12 items in the
    top 40 % by price. Each account holds 1-3 of them. The loop period is the 15-minute cart TTL
    plus a per-bot margin (5-120 s) plus exponential jitter (mean 20 s). Shifts last 2-10 h on
    40-90 % of days, and cart adds within a loop are 1-4 s apart. The product page is fetched
    before an add with a per-bot probability (0-80 %). Half of the bots start a new session for
    every loop, the rest keep one session per shift. The bot never buys.
    """
    pricey = np.flatnonzero(cat.price >= np.quantile(cat.price, 0.6))
    n_t = int(min(rng.integers(4, 13), pricey.size))
    targets = rng.choice(pricey, n_t, replace=False)
    ttl = 900.0
    n_hold = np.minimum(rng.integers(1, 4, n_acc), n_t)
    perm = np.argsort(rng.random((n_acc, n_t)), axis=1)
    margin = rng.uniform(5.0, 120.0, n_acc)
    p_view = rng.uniform(0.0, 0.8, n_acc)
    per_loop_session = rng.random(n_acc) < 0.5
    p_day = rng.uniform(0.4, 0.9, n_acc)

    sh_acc, sh_day = np.nonzero(_at_least_one(rng.random((n_acc, n_days)) < p_day[:, None], rng))
    n_sh = sh_acc.size
    sh_start = sh_day * DAY + rng.uniform(0.0, 24.0, n_sh) * HOUR
    dur = rng.uniform(2.0, 10.0, n_sh) * HOUR
    n_loop = np.maximum(1, (dur / (ttl + margin[sh_acc])).astype(np.int64))
    lo_own, _ = _seg(n_loop)
    la = sh_acc[lo_own]
    lgap = ttl + margin[la] + rng.exponential(20.0, lo_own.size)
    lt = sh_start[lo_own] + _seg_cumsum(lgap, n_loop) - lgap
    l_sess = np.where(per_loop_session[la], n_sh + np.arange(lo_own.size), lo_own)

    r_own, r_pos = _seg(n_hold[la])
    ra = la[r_own]
    item = targets[perm[ra, r_pos]]
    step = rng.uniform(1.0, 4.0, r_own.size)
    t_cart = lt[r_own] + _seg_cumsum(step, n_hold[la])
    sess = l_sess[r_own]
    adds = _events(ra, sess, item, CART, t_cart)
    v = rng.random(r_own.size) < p_view[ra]
    t_view = t_cart[v] - step[v] * rng.uniform(0.3, 0.8, int(v.sum()))
    views = _events(ra[v], sess[v], item[v], VIEW, t_view)
    return _concat([adds, views])


_DESIGN_FUNCS = {"scalper": _scalper, "scraper": _scraper, "warmer": _warmer, "hoarder": _hoarder}


def foreign_bot_events(
    catalog: pd.DataFrame, start: str, n_days: int, accounts_per_design: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate bot traffic for all four designs.

    Returns ``(events, labels)``: events in the behaviour-log schema (see ``EVENT_COLUMNS``),
    sorted by time, with every time in ``[start, start + n_days)``. Labels have one row per bot
    account (``user_id``, ``design``), including accounts whose events all fell outside the
    window.
    """
    if n_days < 1:
        raise ValueError("n_days must be >= 1")
    cat = _prepare(catalog)
    horizon = n_days * DAY
    streams = np.random.SeedSequence(seed).spawn(len(DESIGNS))
    parts: list[pd.DataFrame] = []
    labels: list[pd.DataFrame] = []
    for d_idx, (name, stream) in enumerate(zip(DESIGNS, streams, strict=True)):
        users = np.array([f"fb_{name}_{i:04d}" for i in range(accounts_per_design)], dtype=object)
        labels.append(pd.DataFrame({"user_id": users, "design": name}))
        if accounts_per_design <= 0:
            continue
        ev = _DESIGN_FUNCS[name](cat, accounts_per_design, n_days, np.random.default_rng(stream))
        keep = (ev["t"] >= 0.0) & (ev["t"] < horizon)
        ev = {k: v[keep] for k, v in ev.items()}
        sess_keys, sess_idx = np.unique(ev["acct"] * (1 << 40) + ev["sess"], return_inverse=True)
        sess_names = np.array([f"fb-{name}-s{i}" for i in range(sess_keys.size)], dtype=object)
        etype = ev["etype"]
        priced = (etype == CART) | (etype == BUY)
        parts.append(
            pd.DataFrame(
                {
                    "design_idx": d_idx,
                    "user_id": users[ev["acct"]],
                    "session_id": sess_names[sess_idx],
                    "item_id": cat.item_id[ev["item"]],
                    "event_type": EVENT_TYPE_NAMES[etype],
                    "t_us": np.floor(ev["t"] * 1e6).astype(np.int64),
                    "quantity": np.where(etype == BUY, ev["qty"], np.nan),
                    "price": np.where(priced, cat.price[ev["item"]], np.nan),
                    "query": cat.queries[ev["query"]],
                }
            )
        )
    label_df = pd.concat(labels, ignore_index=True)
    if not parts:
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in EVENT_COLUMNS})
        empty["event_time"] = pd.Series(dtype="datetime64[ns, UTC]")
        empty[["quantity", "price"]] = empty[["quantity", "price"]].astype(float)
        return empty, label_df
    ev_df = pd.concat(parts, ignore_index=True)
    ev_df = ev_df.iloc[np.lexsort((ev_df["design_idx"].to_numpy(), ev_df["t_us"].to_numpy()))]
    start_us = pd.Timestamp(start, tz="UTC").value // 1000
    ev_df = ev_df.reset_index(drop=True)
    ev_df["event_time"] = pd.to_datetime(ev_df["t_us"].to_numpy() + start_us, unit="us", utc=True)
    ev_df["event_id"] = [f"fb-{i:09d}" for i in range(len(ev_df))]
    return ev_df[EVENT_COLUMNS], label_df
