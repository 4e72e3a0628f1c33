"""Coordination across accounts: groups acting in lockstep, and sessions copied from others.

Input: the detector's event frame (`bots.prepare_events`: user_id, item_id, event_type, t in
epoch ms, sessions). Both signals look at what accounts do together, which no per-user
feature sees: each account of a ring can look like an ordinary shopper on its own.

**Lockstep groups** (after CopyCatch, Beutel et al., WWW 2013). Actions are counted in
item-windows of `LOCKSTEP_WINDOW_MS` (two grids, the second shifted by half a window, so that
no pair is split by a window's edge). An item-window is a burst when at least `MIN_GROUP`
accounts acted on the item in it and `BURST_RATIO` times the item's mean per window: the
crowd is unusual for that item. Two accounts are partners when they shared bursts on at
least `MIN_PAIR_ACTIONS` distinct (item, day), on `MIN_PAIR_DAYS` days or more (a crowd or
chance meets once; a ring comes back), and those are `MIN_PAIR_SHARE` of the bursts of the
less busy of the two (a very busy account meets everyone now and then). The partner graph's
(`MIN_GROUP` - 1)-core, split into connected components, gives the groups; a group is kept
when the items it came back to span `MIN_PAIR_DAYS` days. Camouflage, which FRAUDAR (Hooi et
al., KDD 2016) resists by down-weighting popular columns, is handled by the burst test:
acting together on popular items is no burst for them, so it ties no one to a ring. A
flash-sale crowd is one burst on one day and never forms a group.

**Copies** (near-duplicate detection by shingling, Broder 1997): a session's shingles are its
consecutive pairs of distinct items; shingles that more than `MAX_SHINGLE_SESSIONS` sessions
share are a shop's common paths and no evidence. A later session of another account is a
copy of an earlier one when they share `MIN_LONE_COPY_SHINGLES`+ shingles (`MIN_COPY_SHINGLES`+
where the account has another copied session and copies are `MIN_REPLAYED_SHARE` of its
sessions) whose rarity makes the match unlikely by
chance among all pairs of sessions (`COPY_SURPRISE_MARGIN`), the copy holds
`MIN_COPY_CONTAINMENT` of the original's shingles and the original `MIN_COPY_SHARE` of the
copy's, and one pace factor maps the shared items' times onto each other (`_paced_alike`).
Shingles hold no time, so a replay shifted in time and slowed or sped up keeps all of this;
two people on the same path at their own pace do not. The earlier session, first seen, is
the original and is never flagged for being copied.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

LOCKSTEP_WINDOW_MS = 2 * 3_600_000
MAX_CELL_USERS = 1000  # a burst with more accounts is a crowd: its pairs are not listed
BURST_RATIO = 5.0  # accounts in an item-window against the item's mean per window
MIN_PAIR_ACTIONS = 3  # distinct (item, day) two accounts shared in burst windows
MIN_PAIR_DAYS = 2  # one window shared once is a crowd or chance; a ring comes back
MIN_PAIR_SHARE = 0.3  # of the (item, day) bursts of the less busy account of a pair
MIN_GROUP = 4
MIN_COPY_SHINGLES = 3  # shared by a session pair, where the account has another copied session
MIN_LONE_COPY_SHINGLES = 4  # shared by an account's only copied session
MIN_REPLAYED_SHARE = 0.5  # of an account's sessions, for copies of MIN_COPY_SHINGLES
MIN_COPY_CONTAINMENT = 0.6  # of the original's shingles found in the copy
MIN_COPY_SHARE = 0.3  # of the copy's shingles from the original (several replays may merge)
MAX_SHINGLE_SESSIONS = 50
COPY_SURPRISE_MARGIN = 100.0  # a match this many times less likely than chance allows
PACE_MIN_ELAPSED_MS = 10_000  # whole-second rounding moves a 10 s span by 10% at most
PACE_SPREAD = 1.35  # the fastest over the slowest pace of a copy's shared items
PACE_MIN_POINTS = 3  # shared items timed against the first one
PACE_MIN_AGREEING = 0.75  # of the timed items within the spread around the median pace
PACE_OUTVOTING = 4  # agreeing items it takes to outvote a straying one

GROUP_COLUMNS = [
    "group_id",
    "members",
    "items",
    "days",
    "first_window",
    "last_window",
    "reason",
    "item_ids",
]
MEMBER_COLUMNS = ["user_id", "group_id", "partners", "group_reason"]
COPY_COLUMNS = [
    "user_id",
    "copied_sessions",
    "original_accounts",
    "original_start",
    "similarity",
    "copy_reason",
]


def _lockstep_cells(ev: pl.DataFrame) -> pl.DataFrame:
    """(user u, item i, grid, window) once each: two grids of `LOCKSTEP_WINDOW_MS` windows,
    the second shifted by half a window. Integer codes only (10M events: a few seconds)."""
    acts = ev.select(
        pl.col("user_id").to_physical().alias("u"),
        pl.col("item_id").to_physical().alias("i"),
        "t",
    )
    grids = [
        acts.select(
            "u", "i",
            ((pl.col("t") + g * LOCKSTEP_WINDOW_MS // 2) // LOCKSTEP_WINDOW_MS).alias("window"),
        )
        .unique()
        .with_columns(pl.lit(g, pl.Int8).alias("grid"))
        for g in (0, 1)
    ]  # fmt: skip
    return pl.concat(grids)


def _bursts(cells: pl.DataFrame) -> pl.DataFrame:
    """The cells of item-windows with a burst: at least `MIN_GROUP` accounts and
    `BURST_RATIO` times the item's mean accounts per window over the whole span."""
    first, last = cells["window"].min(), cells["window"].max()
    windows = max(int(last - first) + 1, 1) if first is not None else 1
    per_item = (
        cells.filter(pl.col("grid") == 0)
        .group_by("i")
        .agg((pl.len() / windows).alias("mean_users"))
    )
    size = pl.len().over("i", "grid", "window").alias("size")
    return (
        cells.with_columns(size)
        .join(per_item, on="i")
        .filter(
            (pl.col("size") >= MIN_GROUP)
            & (pl.col("size") >= BURST_RATIO * pl.col("mean_users"))
            & (pl.col("size") <= MAX_CELL_USERS)
        )
    )


def _lockstep_pairs(bursts: pl.DataFrame) -> pl.DataFrame:
    """Pairs of accounts acting on the same items in the same burst windows (`_bursts`), on
    at least `MIN_PAIR_DAYS` days and `MIN_PAIR_ACTIONS` distinct (item, day)."""
    bursts = bursts.select("u", "i", "grid", "window")
    day = (pl.col("window") * LOCKSTEP_WINDOW_MS // 86_400_000).alias("day")
    pairs = (
        bursts.join(bursts, on=["i", "grid", "window"], suffix="_b")
        .filter(pl.col("u") < pl.col("u_b"))
        .select("u", "u_b", "i", day)
        .unique()
    )
    # how many (item, day) bursts each account was in: a very busy account meets everyone
    busy = bursts.select("u", "i", day).unique().group_by("u").agg(pl.len().alias("bursts"))
    return (
        pairs.group_by("u", "u_b")
        .agg(
            pl.len().alias("actions"),
            pl.col("day").n_unique().alias("days"),
        )
        .join(busy, on="u")
        .join(busy.rename({"u": "u_b", "bursts": "bursts_b"}), on="u_b")
        .filter(
            (pl.col("actions") >= MIN_PAIR_ACTIONS)
            & (pl.col("days") >= MIN_PAIR_DAYS)
            & (pl.col("actions") >= MIN_PAIR_SHARE * pl.min_horizontal("bursts", "bursts_b"))
        )
    )


def _core(pairs: pl.DataFrame, k: int) -> pl.DataFrame:
    """The pairs of the graph's k-core: both ends with at least k partners inside it."""
    while True:
        degree = pl.concat([pairs.select(pl.col("u")), pairs.select(pl.col("u_b").alias("u"))])
        degree = degree.group_by("u").agg(pl.len().alias("d")).filter(pl.col("d") >= k)
        kept = pairs.join(degree.select("u"), on="u", how="semi").join(
            degree.select(pl.col("u").alias("u_b")), on="u_b", how="semi"
        )
        if kept.height == pairs.height:
            return kept
        pairs = kept


def lockstep_groups(ev: pl.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(groups, members): each group's members, core items, days and windows with a reason
    in words; each member's group, partner count and the group's reason."""
    bursts = _bursts(_lockstep_cells(ev))
    pairs = _core(_lockstep_pairs(bursts), MIN_GROUP - 1)
    if pairs.is_empty():
        return _no_groups()
    nodes = np.unique(np.concatenate([pairs["u"].to_numpy(), pairs["u_b"].to_numpy()]))
    a, b = (
        np.searchsorted(nodes, pairs["u"].to_numpy()),
        np.searchsorted(nodes, pairs["u_b"].to_numpy()),
    )
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(nodes), len(nodes)))
    _, component = connected_components(graph, directed=False)
    membership = pl.DataFrame({"u": nodes, "group": component.astype(np.int64)})
    groups = _describe_groups(bursts.join(membership, on="u"), membership, ev)
    # a group, not only its pairs, comes back: its core items span several days
    groups = groups.filter(pl.col("days") >= MIN_PAIR_DAYS)
    if groups.is_empty():
        return _no_groups()
    membership = membership.join(groups.select("group"), on="group", how="semi")
    partners = pl.concat([pairs.select("u"), pairs.select(pl.col("u_b").alias("u"))])
    partners = partners.group_by("u").agg(pl.len().alias("partners"))
    members = (
        membership.join(partners, on="u")
        .join(
            groups.select("group", "group_id", pl.col("reason").alias("group_reason")), on="group"
        )
        .join(_account_ids(ev), on="u")
        .select(pl.col("user_id").cast(pl.String), "group_id", "partners", "group_reason")
    )
    items = ev.select(pl.col("item_id").to_physical().alias("i"), "item_id").unique("i")
    item_ids = (
        groups.select("group_id", pl.col("item_codes").alias("i"))
        .explode("i")
        .join(items, on="i")
        .group_by("group_id")
        .agg(pl.col("item_id").cast(pl.String).sort().str.join(",").alias("item_ids"))
    )
    # Members are listed by their own rows (`members`, and `group_id` in the user scores),
    # never by id inside another table's text: forgetting a user removes their rows.
    groups = groups.join(item_ids, on="group_id", how="left").select(GROUP_COLUMNS)
    return groups.to_pandas(), members.sort("group_id", "user_id").to_pandas()


def _account_ids(ev: pl.DataFrame) -> pl.DataFrame:
    """Each account's code `u` (the categorical's physical value) and its user_id."""
    return ev.select(pl.col("user_id").to_physical().alias("u"), "user_id").unique("u")


def _no_groups() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Empty groups and members tables with their columns' types."""
    text, count = pd.Series(dtype=str), pd.Series(dtype="int64")
    stamp = pd.Series(dtype="datetime64[ms, UTC]")
    groups = pd.DataFrame(
        {
            "group_id": text, "members": count, "items": count, "days": count,
            "first_window": stamp, "last_window": stamp, "reason": text, "item_ids": text,
        }
    )  # fmt: skip
    members = pd.DataFrame(
        {"user_id": text, "group_id": text, "partners": count, "group_reason": text}
    )
    return groups, members


def _group_actions(core: pl.DataFrame, membership: pl.DataFrame, ev: pl.DataFrame) -> pl.DataFrame:
    """Per group, what its members did to its core items: the event types, in words."""
    return (
        ev.select(
            pl.col("user_id").to_physical().alias("u"),
            pl.col("item_id").to_physical().alias("i"),
            pl.col("event_type").cast(pl.String),
        )
        .join(membership, on="u")
        .join(core, on=["group", "i"])
        .group_by("group")
        .agg(pl.col("event_type").unique().sort().str.join(", ").alias("action"))
    )


def _describe_groups(
    cells: pl.DataFrame, membership: pl.DataFrame, ev: pl.DataFrame
) -> pl.DataFrame:
    """Per group: its core items (acted on by at least half the members in one burst window,
    from `cells` of bursts only: camouflage on popular items is not what the group is about)
    that it came back to on several days where it has such, the days and windows of those
    actions, and a reason in words."""
    size = membership.group_by("group").agg(pl.len().alias("members"))
    # both grids: a window's start is shifted back by half a window on the second
    start_ms = pl.col("window") * LOCKSTEP_WINDOW_MS - pl.col("grid") * (LOCKSTEP_WINDOW_MS // 2)
    per_item = (
        cells.group_by("group", "i", "grid", "window")
        .agg(pl.col("u").n_unique().alias("acting"))
        .join(size, on="group")
        .filter(pl.col("acting") * 2 >= pl.col("members"))
        .with_columns(start_ms.alias("start_ms"))
        .with_columns((pl.col("start_ms") // 86_400_000).alias("day"))
        .with_columns(pl.col("day").n_unique().over("group", "i").alias("item_days"))
        # the items the group came back to (a cover item shared once is chance)
        .filter(pl.col("item_days") >= pl.col("item_days").max().over("group").clip(upper_bound=2))
    )
    stamp = pl.col("start_ms").cast(pl.Datetime("ms", "UTC"))
    described = per_item.group_by("group").agg(
        pl.col("members").first(),
        pl.col("i").n_unique().alias("items"),
        pl.col("day").n_unique().alias("days"),
        stamp.min().alias("first_window"),
        stamp.max().alias("last_window"),
        pl.col("acting").median().alias("acting"),
        pl.col("i").unique().sort().alias("item_codes"),
    )
    actions = _group_actions(per_item.select("group", "i").unique(), membership, ev)
    described = described.join(actions, on="group", how="left")
    described = size.join(described.drop("members"), on="group", how="left").with_columns(
        pl.col("items").fill_null(0), pl.col("days").fill_null(0)
    )
    hours = LOCKSTEP_WINDOW_MS // 3_600_000
    return described.sort(["members", "first_window"], descending=[True, False]).with_columns(
        pl.format("G{}", pl.int_range(1, pl.len() + 1)).alias("group_id"),
        pl.format(
            "{} accounts acted together ({}; a median {} of them per item and window) on the "
            "same {} item(s) within {} h windows on {} day(s)",
            "members",
            pl.col("action").fill_null("mixed actions"),
            pl.col("acting").cast(pl.Int64),
            "items",
            pl.lit(hours),
            "days",
        ).alias("reason"),
    )


def _sessions(ev: pl.DataFrame) -> pl.DataFrame:
    """Events as (account u, item i, time t, session s), consecutive repeats of an item
    dropped; `ev` from `bots.prepare_events` is sorted by account and time and has its
    sessions (30-minute gaps)."""
    ordered = ev.select(
        pl.col("user_id").to_physical().alias("u"),
        pl.col("item_id").to_physical().cast(pl.UInt64).alias("i"),
        "t",
        pl.col("session").alias("s"),
    )
    return ordered.filter(
        (pl.col("s") != pl.col("s").shift(1)) | (pl.col("i") != pl.col("i").shift(1))
        | pl.col("s").shift(1).is_null()
    )  # fmt: skip


def _session_shingles(ordered: pl.DataFrame) -> pl.DataFrame:
    """Per session: its consecutive pairs of distinct items, once each."""
    same = pl.col("s") == pl.col("s").shift(1)
    shingle = pl.when(same).then(pl.col("i").shift(1) * (1 << 32) + pl.col("i"))
    return (
        ordered.with_columns(shingle.alias("shingle"), pl.col("t").min().over("s").alias("start"))
        .drop_nulls("shingle")
        .unique(["s", "shingle"])
        .select("u", "s", "start", "shingle")
    )


def _paced_alike(ordered: pl.DataFrame, pairs: pl.DataFrame) -> pl.DataFrame:
    """The session pairs (s: copy, s_b: original) whose shared items come at times that one
    pace factor maps onto each other: the copy's time since its first shared item over the
    original's, for shared items at least `PACE_MIN_ELAPSED_MS` into the original, stays
    within a factor `PACE_SPREAD` around its median (between 1/4 and 4) for
    `PACE_MIN_POINTS`+ items and `PACE_MIN_AGREEING` of them: an item whose first event the
    replay dropped is timed by a later one and may stray (outvoted by `PACE_OUTVOTING`+). A replay slowed or sped up keeps
    it; two people who happen to take the same path do not."""
    first = ordered.group_by("s", "i").agg(pl.col("t").min())
    matched = (
        pairs.select("s", "s_b")
        .join(first, on="s")
        .join(first.rename({"s": "s_b", "t": "t_b"}), on=["s_b", "i"])
        .sort("s", "s_b", "t_b")
        .with_columns(
            (pl.col("t") - pl.col("t").first().over("s", "s_b")).alias("e"),
            (pl.col("t_b") - pl.col("t_b").first().over("s", "s_b")).alias("e_b"),
        )
        .filter(pl.col("e_b") >= PACE_MIN_ELAPSED_MS)
        .with_columns((pl.col("e") / pl.col("e_b")).alias("pace"))
    )
    half_spread = float(np.sqrt(PACE_SPREAD))
    median = pl.col("pace").median()  # per pair, inside the aggregation
    paced = matched.group_by("s", "s_b").agg(
        pl.len().alias("timed"),
        pl.col("pace")
        .is_between(median / half_spread, median * half_spread)
        .sum()
        .alias("agreeing"),
        median.alias("pace"),
    )
    return paced.filter(
        (pl.col("agreeing") >= PACE_MIN_POINTS)
        & (pl.col("agreeing") >= PACE_MIN_AGREEING * pl.col("timed"))
        & ((pl.col("agreeing") == pl.col("timed")) | (pl.col("agreeing") >= PACE_OUTVOTING))
        & pl.col("pace").is_between(0.25, 4.0)
    ).select("s", "s_b", "pace")


def session_copies(ev: pl.DataFrame) -> pd.DataFrame:
    """Per account with sessions copied from another account's earlier session: how many,
    from how many accounts, the best similarity, and a reason in words."""
    ordered = _sessions(ev)
    shingles = _session_shingles(ordered)
    sessions = shingles.group_by("u").agg(pl.col("s").n_unique().alias("sessions"))
    pairs = _matching_sessions(shingles, sessions)
    pairs = pairs.join(_paced_alike(ordered, pairs), on=["s", "s_b"])
    pairs = (
        pairs.join(sessions, on="u")
        .filter(
            _replayed(pl.col("s").n_unique().over("u"))
            | (pl.col("shared") >= MIN_LONE_COPY_SHINGLES)
        )
        .drop("sessions")
    )
    if pairs.is_empty():
        return pd.DataFrame(columns=COPY_COLUMNS)
    return _copies_by_account(ev, pairs)


def _replayed(copies: pl.Expr) -> pl.Expr:
    """An account whose `copies` (sessions) are 2+ and `MIN_REPLAYED_SHARE` of its sessions
    (column `sessions`): three shared steps happen to two people now and then, and to a
    power user's hundreds of sessions a few times; to most of an account's sessions not."""
    return (copies >= 2) & (copies >= MIN_REPLAYED_SHARE * pl.col("sessions"))


def _matching_sessions(shingles: pl.DataFrame, sessions: pl.DataFrame) -> pl.DataFrame:
    """Session pairs (s: later, s_b: earlier, of another account) whose shared shingles are
    too rare to share by chance and cover most of the original and much of the copy."""
    sizes = shingles.group_by("s").agg(pl.len().alias("n"))
    n_sessions = max(sizes.height, 2)
    # A shingle in k of the N sessions tells log(N / k) nats about a match; a match is a copy
    # only when what it shares is unlikely for any of the N^2 / 2 pairs of sessions by chance
    # (and by COPY_SURPRISE_MARGIN more), so a small shop's well-trodden paths need more.
    common = shingles.group_by("shingle").agg(pl.len().alias("k"))
    rare = shingles.join(
        common.filter(pl.col("k").is_between(2, MAX_SHINGLE_SESSIONS)).with_columns(
            (np.log(n_sessions) - pl.col("k").log()).alias("nats")
        ),
        on="shingle",
    )
    needed = 2 * np.log(n_sessions) + np.log(COPY_SURPRISE_MARGIN)
    # a session whose rare shingles could not add up to a copy is never one side of a copy
    rare = rare.filter(
        (pl.len().over("s") >= MIN_COPY_SHINGLES) & (pl.col("nats").sum().over("s") >= needed)
    )
    return (
        _possible_copies(rare, sessions)
        .join(rare.drop("nats"), on="shingle", suffix="_b")
        .filter((pl.col("u") != pl.col("u_b")) & (pl.col("start") > pl.col("start_b")))
        .group_by("u", "s", "u_b", "s_b")
        .agg(
            pl.len().alias("shared"),
            pl.col("nats").sum(),
            pl.col("start_b").first().alias("original_start"),
        )
        .filter((pl.col("shared") >= MIN_COPY_SHINGLES) & (pl.col("nats") >= needed))
        .join(sizes, on="s")
        .join(sizes.rename({"s": "s_b", "n": "n_b"}), on="s_b")
        # the original (n_b) mostly reproduced, and much of the copy's session is that:
        # a replay merged with the next one into one session still counts; a short session
        # that happens to share a few steps of a long one is no copy of it
        .with_columns(
            (pl.col("shared") / pl.col("n_b")).alias("containment"),
            (pl.col("shared") / pl.col("n")).alias("copy_share"),
        )
        .filter(
            (pl.col("containment") >= MIN_COPY_CONTAINMENT)
            & (pl.col("copy_share") >= MIN_COPY_SHARE)
        )
    )


def _possible_copies(rare: pl.DataFrame, sessions: pl.DataFrame) -> pl.DataFrame:
    """The rare shingles of the sessions that could still be copies under the account rule
    of `session_copies`: `MIN_LONE_COPY_SHINGLES`+ of them, or an account `_replayed` by its
    sessions with `MIN_COPY_SHINGLES`+ (an upper bound on its copied sessions). The rest
    never reaches the pair join, which keeps its size."""
    per_session = rare.group_by("u", "s").agg(pl.len().alias("k"))
    candidates = (
        per_session.join(sessions, on="u")
        .filter((pl.col("k") >= MIN_LONE_COPY_SHINGLES) | _replayed(pl.len().over("u")))
        .select("s")
    )
    return rare.join(candidates, on="s", how="semi")


def _copies_by_account(ev: pl.DataFrame, pairs: pl.DataFrame) -> pd.DataFrame:
    """Per copying account, its copies in figures and words. The original's account is not
    named: a reason must not carry another person's id (forgetting them would have to
    rewrite this row too); its session's start is enough to find it."""
    copies = (
        pairs.join(_account_ids(ev), on="u")
        .group_by("user_id")
        .agg(
            pl.col("s").n_unique().alias("copied_sessions"),
            pl.col("u_b").n_unique().alias("original_accounts"),
            pl.col("original_start").min(),
            pl.col("containment").max().alias("similarity"),
            pl.col("shared").max().alias("shared"),
            pl.col("pace").median().alias("pace"),
        )
        .with_columns(
            pl.format(
                "{} session(s) repeat earlier sessions of {} other account(s) (the first from "
                "{}) item to item, up to {} shared steps and {} of the original, at {}x its pace",
                "copied_sessions",
                "original_accounts",
                pl.col("original_start")
                .cast(pl.Datetime("ms", "UTC"))
                .dt.strftime("%Y-%m-%d %H:%M UTC"),
                "shared",
                (pl.col("similarity") * 100).round(0).cast(pl.Int64).cast(pl.String) + "%",
                pl.col("pace").round(2),
            ).alias("copy_reason"),
            pl.col("user_id").cast(pl.String),
        )
    )
    return copies.select(COPY_COLUMNS).sort("user_id").to_pandas()
