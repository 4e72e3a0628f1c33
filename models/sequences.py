"""Users' events in time order, as the sequence encoder reads them.

A user's sequence is their events sorted by time (ties by row order). Consecutive events on
the same item (a view, then add-to-cart, then purchase of one product) are one token: the
item, its strongest event type and the time since the previous token (a log-scale bucket).
Sequences are stored as CSR arrays: user u's tokens are `items[ptr[u]:ptr[u + 1]]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.base import EVENT_WEIGHTS

# Token event types: 0 = unknown (no event_type column), then by strength.
EVENT_TYPES = ("<none>", *EVENT_WEIGHTS)
EVENT_TYPE_CODES = {name: code for code, name in enumerate(EVENT_TYPES) if code}
SMALL = 1_000  # arrays up to this length take the plain-Python or numpy path (one request)
# Time since the previous token: bucket 0 for the first token, 1 for under a minute, then
# one bucket per doubling of minutes (2 min, 4 min, ... about 90 days and beyond).
GAP_BUCKETS = 20


def event_type_codes(interactions: pd.DataFrame) -> np.ndarray:
    """Index into `EVENT_TYPES` of each interaction (0 without an event_type column)."""
    if "event_type" not in interactions:
        return np.zeros(len(interactions), np.int64)
    return codes_of_event_types(interactions["event_type"])


def codes_of_event_types(names: pd.Series | np.ndarray | list[str]) -> np.ndarray:
    """Index into `EVENT_TYPES` of each event type name (0 for an unknown one)."""
    if len(names) <= SMALL:  # one request's history: a dict is 50x faster than a Categorical
        return np.fromiter((EVENT_TYPE_CODES.get(n, 0) for n in names), np.int64, len(names))
    codes = pd.Categorical(names, categories=EVENT_TYPES[1:]).codes
    return (np.asarray(codes, np.int64) + 1).clip(min=0)


def _repeated_items(token_user: np.ndarray, token_item: np.ndarray) -> np.ndarray:
    """Whether each token's item came earlier in the same user's tokens."""
    if len(token_user) > SMALL:
        return pd.DataFrame({"u": token_user, "i": token_item}).duplicated().to_numpy()
    key = np.stack([token_user, token_item], axis=1)
    repeats = np.ones(len(key), bool)
    repeats[np.unique(key, axis=0, return_index=True)[1]] = False
    return repeats


def previous_occurrences(sequences: Sequences) -> tuple[np.ndarray, np.ndarray]:
    """For each token, the index of the same user's previous token on the same item (-1 for
    the first) and how many of the user's tokens so far are on its item (1 for the first):
    what the memory's recency and repeat weights read when an item comes back."""
    items = sequences.items
    key = sequences.owners.astype(np.int64) * (int(items.max(initial=0)) + 1) + items
    order = np.argsort(key, kind="stable")  # each key's tokens together, in order
    equal = key[order[1:]] == key[order[:-1]]  # a token and the one before on its item
    same = np.flatnonzero(equal)
    previous = np.full(len(sequences.items), -1, np.int64)
    previous[order[same + 1]] = order[same]
    starts = np.flatnonzero(np.r_[True, ~equal])  # each (user, item)'s first token
    ordinal = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    occurrence = np.empty(len(order), np.int64)
    occurrence[order] = ordinal + 1
    return previous, occurrence


def last_occurrences(owner: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Whether each token is its owner's last on its item (`_repeated_items`, read backwards)."""
    return ~_repeated_items(owner[::-1], items[::-1])[::-1]


def tokens_on_item(owner: np.ndarray, items: np.ndarray) -> np.ndarray:
    """For each token, how many tokens its owner has on its item (among those given)."""
    key = owner.astype(np.int64) * (int(items.max(initial=0)) + 1) + items
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return counts[inverse.ravel()]


def epoch_seconds(times: pd.Series) -> np.ndarray:
    """Whole seconds since 1970 of timestamps in any unit (ns, us, ms or s; naive = UTC):
    the integer behind a timestamp column is in its own unit, not always nanoseconds."""
    return pd.to_datetime(times, utc=True).dt.as_unit("s").astype("int64").to_numpy()


def gap_buckets(seconds: np.ndarray) -> np.ndarray:
    """Log-scale bucket of the seconds since the previous token (see `GAP_BUCKETS`)."""
    minutes = np.maximum(seconds, 0) / 60.0
    bucket = 1 + np.floor(np.log2(np.maximum(minutes, 1.0))).astype(np.int64)
    return np.clip(bucket, 1, GAP_BUCKETS - 1)


@dataclass(frozen=True)
class Sequences:
    """Every user's tokens (item index, event type code, gap bucket) as CSR arrays."""

    ptr: np.ndarray
    items: np.ndarray
    types: np.ndarray
    gaps: np.ndarray
    repeats: np.ndarray  # the token's item came earlier in the same user's sequence
    times: np.ndarray | None = None  # epoch seconds of each token (None in a loaded model)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.ptr)

    @property
    def owners(self) -> np.ndarray:
        """The user of each token."""
        return np.repeat(np.arange(len(self.ptr) - 1), self.lengths)

    def user_items(self, user: int) -> np.ndarray:
        return self.items[self.ptr[user] : self.ptr[user + 1]]

    def without(self, tokens: np.ndarray) -> Sequences:
        """The same sequences with the tokens at these absolute indices removed; gap buckets
        (where token times are known) and repeats are those of what remains."""
        keep = np.ones(len(self.items), bool)
        keep[tokens] = False
        owner = self.owners[keep]
        ptr = np.r_[0, np.cumsum(np.bincount(owner, minlength=len(self.lengths)))]
        items, times, gaps = self.items[keep], self.times, self.gaps[keep]
        if times is not None:
            times = times[keep]
            gaps = _token_gaps(owner, times)
        return Sequences(
            ptr.astype(np.int64),
            items,
            self.types[keep],
            gaps,
            _repeated_items(owner, items),
            times,
        )


def build_sequences(
    user: np.ndarray, item: np.ndarray, event_type: np.ndarray, seconds: np.ndarray, n_users: int
) -> Sequences:
    """Tokens per user from parallel arrays of interactions (user and item indices, event type
    codes, epoch seconds), consecutive repeats of an item merged into one token."""
    if not len(user):  # every user without a token
        none = np.zeros(0, np.int64)
        return Sequences(np.zeros(n_users + 1, np.int64), none, none, none, none.astype(bool), none)
    order = np.lexsort((np.arange(len(user)), seconds, user))
    u, i, t, s = user[order], item[order], event_type[order], seconds[order]
    starts = np.flatnonzero(np.r_[True, (u[1:] != u[:-1]) | (i[1:] != i[:-1])])
    token_user, token_item = u[starts], i[starts]
    token_type = np.maximum.reduceat(t, starts)
    token_time = s[starts]
    gaps = _token_gaps(token_user, token_time)
    ptr = np.r_[0, np.cumsum(np.bincount(token_user, minlength=n_users))].astype(np.int64)
    repeats = _repeated_items(token_user, token_item)
    return Sequences(
        ptr,
        token_item.astype(np.int64),
        token_type.astype(np.int64),
        gaps,
        repeats,
        token_time.astype(np.int64),
    )


def _token_gaps(token_user: np.ndarray, token_time: np.ndarray) -> np.ndarray:
    """The gap bucket of each token since the same user's previous one (0 for a first)."""
    first = np.r_[True, token_user[1:] != token_user[:-1]]
    return np.where(first, 0, gap_buckets(np.r_[0.0, np.diff(token_time)])).astype(np.int64)


SESSION_BREAK = 6  # gap bucket of 32 minutes and more: a new visit


def serving_gap(sequences: Sequences) -> int:
    """The gap bucket to serve with: recommendations are for the user's next visit, so the
    median gap between visits (gaps of 32 minutes or more) where at least a tenth of the gaps
    are such breaks; otherwise (e.g. no real clock) the median gap."""
    gaps = sequences.gaps[sequences.gaps > 0]
    if not len(gaps):
        return 0
    breaks = gaps[gaps >= SESSION_BREAK]
    chosen = breaks if len(breaks) >= 0.1 * len(gaps) else gaps
    return int(np.median(chosen))


VALIDATION_MODES = ("next", "random", "window")
DAY_SECONDS = 86_400


@dataclass(frozen=True)
class ValidationSplit:
    """What training reads and what validation asks for (`split_for_validation`)."""

    train: Sequences  # training's sequences: targets are the tokens before `held_out`
    held_out: np.ndarray  # per user, the first token of `train` held out (its end: none)
    truth: tuple[np.ndarray, np.ndarray]  # per user, the items validation asks for (CSR)
    held: int  # tokens held out for validation


def split_for_validation(
    sequences: Sequences,
    mode: str,
    serve_gap: int,
    seed: int = 0,
    window_days: float = 3.0,
    share: float = 0.1,
) -> ValidationSplit:
    """Hold out what validation asks for, as the test will (`validation_tokens` for `next`
    and `window`; an unknown mode is a ValueError). `random` (set-style tests such as msr,
    whose relevant items are a random part of each user's history): a random `share` of
    each user's tokens (`random_tokens`) is taken out of the sequences; the rest is both
    what training reads and the validation's context, and the held items new to that
    context are the truth."""
    if mode not in VALIDATION_MODES:
        raise ValueError(f"validation must be one of {', '.join(VALIDATION_MODES)}, not {mode!r}")
    if mode != "random":
        held_out = validation_tokens(sequences, serve_gap, mode, window_days)
        truth = validation_truth(sequences, held_out, mode)
        held = len(held_tokens(sequences, held_out, mode))
        return ValidationSplit(sequences, held_out, truth, held)
    tokens = random_tokens(sequences, share, seed)
    train = sequences.without(tokens)
    n_items = int(sequences.items.max(initial=-1)) + 1
    asked = np.unique(sequences.owners[tokens] * n_items + sequences.items[tokens])
    context = train.owners * n_items + train.items
    asked = asked[~np.isin(asked, context)]
    counts = np.bincount(asked // n_items, minlength=len(sequences.lengths))
    truth = (np.r_[0, np.cumsum(counts)].astype(np.int64), asked % n_items)
    return ValidationSplit(train, train.ptr[1:].copy(), truth, len(tokens))


def random_tokens(sequences: Sequences, share: float, seed: int = 0) -> np.ndarray:
    """Absolute indices of a random `share` of each user's tokens (rounded, at least one),
    sorted, for users with three or more; at least two tokens of each user are left."""
    lengths = sequences.lengths
    wanted = np.where(lengths >= 3, np.clip(np.rint(share * lengths), 1, lengths - 2), 0)
    owner = sequences.owners
    order = np.lexsort((np.random.default_rng(seed).random(len(owner)), owner))
    rank = np.arange(len(owner)) - sequences.ptr[owner]  # rank of the draw within its user
    return np.sort(order[rank < wanted[owner]])


def validation_tokens(
    sequences: Sequences, serve_gap: int, mode: str = "next", window_days: float = 3.0
) -> np.ndarray:
    """Per user, the first token held out for validation (never a training target).

    - `next` (what comes next: leave-last-out and temporal tests): the first token of the
      user's last visit when the model serves next visits (`serve_gap` is a session break)
      and that visit follows at least two tokens; else the newest token.
    - `window` (what the next days bring: the `temporal` test): the user's first token in
      the last `window_days` days before the data's end, rounded up to midnight, as
      `models.split.temporal_holdout` cuts; the end of the sequence (nothing held out) for
      users with no token in that window. Every token from it on is validated as a set.

    Tokens after it are history when validating and serving, never training targets."""
    if mode not in ("next", "window"):
        raise ValueError(
            f"validation tokens are for next or window, not {mode!r} "
            "(random holds out a share: split_for_validation)"
        )
    if mode == "window":
        return _window_starts(sequences, window_days)
    newest = sequences.ptr[1:] - 1
    if serve_gap < SESSION_BREAK:
        return newest
    index = np.arange(len(sequences.items))
    breaks = np.where(sequences.gaps >= SESSION_BREAK, index, -1)
    owner = sequences.owners
    last_break = np.full(len(newest), -1)
    np.maximum.at(last_break, owner, breaks)
    usable = last_break - sequences.ptr[:-1] >= 2
    return np.where(usable, last_break, newest)


def _window_starts(sequences: Sequences, window_days: float) -> np.ndarray:
    if sequences.times is None:
        raise ValueError("window validation needs token times")
    if not len(sequences.items):
        return sequences.ptr[1:].copy()
    end = -(-int(sequences.times.max() + 1) // DAY_SECONDS) * DAY_SECONDS  # next midnight
    inside = sequences.times >= end - window_days * DAY_SECONDS
    owner = sequences.owners
    first = sequences.ptr[1:].copy()
    index = np.flatnonzero(inside)
    np.minimum.at(first, owner[index], index)
    return first


def held_tokens(sequences: Sequences, held_out: np.ndarray, mode: str) -> np.ndarray:
    """Absolute indices of every validation token, per user in order: the held-out one for
    `next`; for `window`, every token from the held-out one to the end (`random` holds its
    tokens out of the sequences themselves: none here)."""
    ends = sequences.ptr[1:]
    held = np.minimum(held_out, ends)
    counts = ends - held if mode == "window" else (held < ends).astype(np.int64)
    return ranges(held, counts)


def validation_truth(
    sequences: Sequences, held_out: np.ndarray, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the items validation asks for, as CSR arrays (ptr, items): the items of
    `held_tokens` that are new to the user (as every protocol's truth)."""
    tokens = held_tokens(sequences, held_out, mode)
    owner = sequences.owners[tokens]
    new = ~sequences.repeats[tokens]
    owner = owner[new]
    ptr = np.r_[0, np.cumsum(np.bincount(owner, minlength=len(held_out)))].astype(np.int64)
    return ptr, sequences.items[tokens[new]]


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated arange(start, start + length) for each pair."""
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + within


@dataclass(frozen=True)
class Window:
    """A batch of right-padded token windows (B x T) and each row's real length."""

    items: np.ndarray
    types: np.ndarray
    gaps: np.ndarray
    lengths: np.ndarray


def windows(sequences: Sequences, starts: np.ndarray, ends: np.ndarray, pad_item: int) -> Window:
    """Tokens [starts[b], ends[b]) of the sequences arrays for each row b, right-padded with
    `pad_item` to the longest row (absolute token indices, as in `Sequences.ptr`)."""
    lengths = np.maximum(ends - starts, 0)
    width = max(int(lengths.max(initial=0)), 1)
    rows = np.repeat(np.arange(len(starts)), lengths)
    cols = ranges(np.zeros(len(starts), np.int64), lengths)
    flat = ranges(starts, lengths)
    items = np.full((len(starts), width), pad_item, np.int64)
    types = np.zeros((len(starts), width), np.int64)
    gaps = np.zeros((len(starts), width), np.int64)
    items[rows, cols] = sequences.items[flat]
    types[rows, cols] = sequences.types[flat]
    gaps[rows, cols] = sequences.gaps[flat]
    return Window(items, types, gaps, lengths)


def similar_length_chunks(lengths: np.ndarray, rows: int = 256) -> list[np.ndarray]:
    """Row indices of `lengths` in chunks of at most `rows`, sorted by length, so that each
    chunk pads to its own longest row: encoding a batch of users in index order padded most
    of them to the longest history (on the default shop, 13 s against 4 s for every user)."""
    order = np.argsort(lengths, kind="stable")
    return [order[lo : lo + rows] for lo in range(0, len(order), rows)]


def length_batches(
    users: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """`users` in shuffled batches of similar sequence length (less padding): users are
    shuffled, sorted by length within pools of 50 batches, cut into batches, and the batches
    shuffled."""
    shuffled = rng.permutation(users)
    batches: list[np.ndarray] = []
    pool = 50 * batch_size
    for lo in range(0, len(shuffled), pool):
        group = shuffled[lo : lo + pool]
        group = group[np.argsort(lengths[group], kind="stable")]
        batches.extend(group[j : j + batch_size] for j in range(0, len(group), batch_size))
    return [batches[j] for j in rng.permutation(len(batches))]
