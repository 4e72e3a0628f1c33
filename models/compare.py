"""Every recommender on one split, side by side: the engine of `python -m models evaluate`
and of the benchmarks.

`load_interactions` reads any interactions file (CSV/TSV, Parquet, a RecBole `.inter` file
or an S3-Rec sequence `.txt` file) into user_id, item_id, event_time[, weight | event_type];
`load_items` gives the catalog the models see (with S3-Rec item attributes where there are
some); `compare` trains each model on the same split and measures it.
"""

from __future__ import annotations

import csv
import json
import re
import time
import warnings
from collections.abc import Callable
from itertools import chain, islice
from pathlib import Path

import numpy as np
import pandas as pd

from models.base import Recommender
from models.baselines import (
    ALSRecommender,
    EASERecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    RecentPopularityRecommender,
)
from models.embedding import EmbeddingConfig, EmbeddingRecommender
from models.metrics import evaluate, evaluate_by_segment, item_popularity
from models.split import VALIDATION_FOR, Split

REQUIRED = ("user_id", "item_id", "timestamp")
EXPECTED = (
    "Expected columns user_id, item_id, timestamp (epoch seconds or a date-time) and "
    "optionally weight, event_type or rating, in CSV/TSV (.csv, .tsv, .txt), Parquet "
    "(.parquet) or a RecBole atomic file (.inter, header name:type); or an S3-Rec sequence "
    "file (.txt, one user per line: user item item ..., integer ids in time order)."
)
_SNIFF_LINES = 20
_NOT_DIGIT_OR_SPACE = re.compile(r"[^0-9\s]")


def _is_sequence_file(path: Path) -> bool:
    """An S3-Rec sequence file: a .txt with no header whose first line is whitespace-separated
    integers and whose first lines vary in length (a headerless table has a fixed width)."""
    if path.suffix != ".txt" or not path.is_file():
        return False
    try:
        with path.open(encoding="utf-8") as handle:
            head = [line.split() for line in islice(handle, _SNIFF_LINES)]
    except (OSError, UnicodeDecodeError):
        return False
    head = [tokens for tokens in head if tokens]
    return (
        bool(head)
        and len(head[0]) >= 2
        and all(t.isascii() and t.isdigit() for t in head[0])
        and len({len(tokens) for tokens in head}) > 1
    )


def _read_sequences(path: Path, report: Callable[[str], None]) -> pd.DataFrame:
    """An S3-Rec sequence file as user_id, item_id, event_time: no timestamps, so position n
    of a line (from 0) is 1970-01-01 00:00:00 UTC plus n seconds."""
    text = path.read_text(encoding="utf-8")
    odd = _NOT_DIGIT_OR_SPACE.search(text)
    if odd:
        line = text.count("\n", 0, odd.start()) + 1
        raise ValueError(
            f"{path}:{line}: {odd.group()!r} in an S3-Rec sequence file, whose tokens are "
            f"integer ids. {EXPECTED}"
        )
    rows = [tokens for tokens in (line.split() for line in text.splitlines()) if tokens]
    users = np.array([tokens[0] for tokens in rows], dtype=object)
    if len(set(users)) < len(users):
        repeated = pd.Series(users).value_counts()
        raise ValueError(
            f"{path}: user {repeated.index[0]} is on {repeated.iloc[0]} lines; an S3-Rec "
            f"sequence file has one line per user. {EXPECTED}"
        )
    lengths = np.array([len(tokens) - 1 for tokens in rows], dtype=np.int64)
    items = np.array(list(chain.from_iterable(tokens[1:] for tokens in rows)), dtype=object)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = np.arange(len(items), dtype=np.int64) - starts
    report(
        f"{path.name}: S3-Rec sequence file ({len(rows):,} users, {len(items):,} "
        "interactions); it has no timestamps, so the order in each line is used as time "
        "(one second per position from 1970-01-01 UTC)"
    )
    empty = int((lengths == 0).sum())
    if empty:
        report(f"{path.name}: {empty:,} users have no items and are left out")
    return pd.DataFrame(
        {
            "user_id": np.repeat(users, lengths).astype(str),
            "item_id": items.astype(str),
            "event_time": pd.to_datetime(position, unit="s", utc=True),
        }
    )


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".inter":  # RecBole atomic file: tab separated, header "name:type"
        frame = pd.read_csv(path, sep="\t", dtype=str)
        return frame.rename(columns=lambda c: c.split(":", 1)[0])
    if path.suffix in (".csv", ".tsv", ".txt"):
        return pd.read_csv(path, sep=None, engine="python", dtype=str)
    raise ValueError(f"{path}: unknown file type {path.suffix or '(none)'!r}. {EXPECTED}")


def load_interactions(path: Path | str, report: Callable[[str], None] = print) -> pd.DataFrame:
    """user_id, item_id (strings), event_time (UTC) and weight or event_type where given.

    `timestamp` may be epoch seconds or a date-time string; an S3-Rec sequence file has none
    and its line order is used. A `rating` column is ignored (every rating is one implicit
    interaction), and said so. Rows missing a user, an item or a readable timestamp are
    dropped and counted (`report`); no row is lost silently. A file that cannot be read as
    interactions raises ValueError naming the columns and formats expected."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such interactions file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file. {EXPECTED}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty. {EXPECTED}")
    if _is_sequence_file(path):
        return _read_sequences(path, report)
    try:
        frame = _read_table(path)
    except ValueError as error:
        if EXPECTED in str(error):
            raise
        raise ValueError(f"{path}: cannot read it as a table ({error}). {EXPECTED}") from None
    except (csv.Error, OSError) as error:  # no delimiter found, unreadable, pyarrow I/O
        raise ValueError(
            f"{path}: cannot read it as a table ({type(error).__name__}: {error}). {EXPECTED}"
        ) from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)}; found "
            f"{', '.join(map(str, frame.columns))}. {EXPECTED}"
        )
    stamp = frame["timestamp"]
    numeric = pd.to_numeric(stamp, errors="coerce")
    with warnings.catch_warnings():  # unreadable times become NaT and are counted below
        warnings.simplefilter("ignore", UserWarning)
        event_time = (
            pd.to_datetime(numeric, unit="s", utc=True)
            if numeric.notna().mean() > 0.5
            else pd.to_datetime(stamp, utc=True, errors="coerce")
        )
    out = pd.DataFrame(
        {
            "user_id": frame["user_id"].astype("string"),
            "item_id": frame["item_id"].astype("string"),
            "event_time": event_time,
        }
    )
    if "rating" in frame:
        report(
            f"{path.name}: rating column ignored: every rating counts as one implicit "
            "interaction, as the msr protocol counts every test rating as relevant"
        )
    if "weight" in frame:
        out["weight"] = pd.to_numeric(frame["weight"], errors="coerce")
    elif "event_type" in frame:
        out["event_type"] = frame["event_type"].astype("string")
    bad = out[["user_id", "item_id", "event_time"]].isna().any(axis=1)
    if "weight" in out:
        bad |= out["weight"].isna() | (out["weight"] <= 0)
    if bad.any():
        report(
            f"{path.name}: dropped {int(bad.sum()):,} of {len(out):,} rows without a user, an "
            "item, a readable timestamp or a positive weight"
        )
    out = out[~bad].reset_index(drop=True)
    if out.empty:
        raise ValueError(
            f"{path}: no usable interactions (every row lacks a user, an item, a readable "
            f"timestamp or a positive weight). {EXPECTED}"
        )
    out["user_id"] = out["user_id"].astype(str)
    out["item_id"] = out["item_id"].astype(str)
    return out


def load_items(
    path: Path | str, interactions: pd.DataFrame, report: Callable[[str], None] = print
) -> pd.DataFrame:
    """The catalog the models see: `item_id` (every item of `interactions`, sorted) and,
    beside an S3-Rec `<stem>.txt` with a `<stem>_item2attributes.json` (item id -> list of
    integer attribute ids), `attributes`: a tuple of ints per item, empty where unknown."""
    path = Path(path)
    items = pd.DataFrame({"item_id": sorted(interactions["item_id"].unique())})
    attributes_file = path.with_name(f"{path.stem}_item2attributes.json")
    if not (attributes_file.exists() and _is_sequence_file(path)):
        return items
    try:
        mapping = json.loads(attributes_file.read_text(encoding="utf-8"))
        mapping = {str(item): tuple(int(a) for a in attrs) for item, attrs in mapping.items()}
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{attributes_file}: expected a JSON object mapping each item id to a list of "
            f"integer attribute ids ({error})"
        ) from None
    items["attributes"] = [mapping.get(item, ()) for item in items["item_id"]]
    known = int(items["item_id"].isin(mapping.keys()).sum())
    distinct = len({a for attrs in items["attributes"] for a in attrs})
    report(
        f"{attributes_file.name}: attributes for {known:,} of {len(items):,} items "
        f"({distinct:,} distinct attribute ids)"
    )
    return items


def default_models(
    seed: int = 42, device: str = "auto", protocol: str = "temporal", test_days: int = 3
) -> dict[str, Callable[[], Recommender]]:
    """The model and every baseline, each made fresh for a run; the model validates as
    `protocol` tests (`VALIDATION_FOR`; `temporal` over its `test_days`)."""
    config = EmbeddingConfig(
        seed=seed,
        device=device,
        validation=VALIDATION_FOR[protocol],
        validation_days=float(test_days),
    )
    return {
        "embedding": lambda: EmbeddingRecommender(config),
        "popularity": PopularityRecommender,
        "popularity_recent": RecentPopularityRecommender,
        "item_knn": ItemKNNRecommender,
        "ease": EASERecommender,
        "als": lambda: ALSRecommender(seed=seed),
    }


# A fitted model's choices worth keeping beside its figures, where it has them
FIT_CHOICES = ("best_epoch", "trained_share", "loss_used", "memory_form")


def compare(
    split: Split,
    items: pd.DataFrame,
    models: dict[str, Callable[[], Recommender]],
    k: int = 10,
    report: Callable[[str], None] = print,
    fitted: dict[str, Recommender] | None = None,
    segments: pd.Series | None = None,
) -> dict[str, dict]:
    """Train each model on `split.train` (or take it from `fitted`), rank for the users in
    `split.truth`, and measure; with `segments` (segment per user_id), also per segment."""
    users = split.truth["user_id"].unique()
    popularity = item_popularity(split.train)
    categories = items.set_index("item_id")["category"] if "category" in items else None
    results: dict[str, dict] = {}
    for name in [*(fitted or {}), *models]:
        t0 = time.perf_counter()
        if fitted and name in fitted:
            model = fitted[name]
        else:
            report(f"[compare] {name}: training on {len(split.train):,} interactions")
            model = models[name]().fit(split.train, items)
        t1 = time.perf_counter()
        train_s = getattr(model, "fit_seconds", t1 - t0)  # a fitted model's own training time
        recommendations = model.recommend(users, k)
        t2 = time.perf_counter()
        metrics = evaluate(split.truth, recommendations, len(items), k, popularity, categories)
        results[name] = {
            **metrics,
            "map": metrics[f"map@{k}"],
            "coverage": metrics[f"coverage@{k}"],
            "train_s": round(train_s, 2),
            "score_s": round(t2 - t1, 2),
        }
        fit = {key: getattr(model, key) for key in FIT_CHOICES if hasattr(model, key)}
        if fit:  # what the fit chose (early stopping), beside what it scored
            results[name]["fit"] = fit
        if segments is not None:
            by_segment = evaluate_by_segment(
                split.truth, recommendations, segments, len(items), k, popularity, categories
            )
            results[name]["segments"] = {s: m for s, m in by_segment.items() if s != "all"}
        report(
            f"[compare] {name}: ndcg@{k} {metrics[f'ndcg@{k}']:.4f}, train {train_s:.1f} s, "
            f"score {t2 - t1:.1f} s"
        )
    return results


def comparison_table(results: dict[str, dict[str, float]], k: int = 10) -> pd.DataFrame:
    """One row per model, the headline columns first."""
    table = pd.DataFrame(
        {
            name: {m: v for m, v in r.items() if not isinstance(v, dict)}
            for name, r in results.items()
        }
    ).T
    first = [f"ndcg@{k}", f"precision@{k}", f"recall@{k}", "map", f"hr@{k}", f"mrr@{k}", "coverage"]
    rest = [c for c in table.columns if c not in first and c not in (f"map@{k}", f"coverage@{k}")]
    table = table[[c for c in first if c in table] + rest].rename_axis("model")
    if "users" in table:
        table["users"] = table["users"].astype(int)
    return table


def comparison_markdown(table: pd.DataFrame) -> str:
    """`comparison_table` as Markdown: metrics to 4 decimals, user counts as integers."""
    formats = [",.0f" if column == "users" else ".4f" for column in table.columns]
    return table.to_markdown(floatfmt=["", *formats])
