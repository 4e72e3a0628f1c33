"""What a run wrote, as content digests: one per Parquet file under tables/ and features/, of
its rows whatever their order, lineage aside. Two runs that wrote the same data have equal
digests, wherever their data directories are and however the rows were ordered.

    python -m devtools.outputs --data-dir DIR                       # print the digests
    python -m devtools.outputs --data-dir DIR --write SNAPSHOT.json  # save them

tests/test_pipeline.py compares the tiny run's digests with tests/snapshots/tiny_outputs.json,
so a refactor that changes an output is caught. When a change of output is intended, rewrite
the snapshot from a tiny run (`make demo PRESET=tiny`, then --write) and say why in the commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pandas as pd
import polars as pl

# When a row was ingested, quarantined or created, and by which run.
LINEAGE_COLUMNS = ["ingested_at", "quarantined_at", "run_id", "created"]
# Trained under a time budget (not repeatable to the bit), and MiniLM's float vectors (the
# last bits depend on the CPU's instruction set): compared by their own tests instead.
NOT_REPEATABLE = {
    "recommendations",
    "user_embedding",
    "item_embedding",
    "user_recommendations",
    "item_text_embedding",
}
FLOAT_DIGITS = 9  # sums in another order differ in the last bits, not in these


def content_digest(path: Path) -> str:
    """sha256 of a Parquet file's rows as text, sorted, lineage columns left out and the
    clock time a `future_timestamp` quarantine detail names normalised."""
    frame = pl.read_parquet(path).drop(LINEAGE_COLUMNS, strict=False)
    if "detail" in frame.columns:
        frame = frame.with_columns(
            pl.col("detail").str.replace(r"the ingestion time .*", "the ingestion time")
        )
    text = frame.select(_as_text(c, t) for c, t in frame.schema.items())
    rows = sorted(text.select(pl.concat_str(pl.all(), separator="\x1f")).to_series().to_list())
    header = ",".join(f"{c}:{t}" for c, t in frame.schema.items())
    return hashlib.sha256("\n".join([header, *rows]).encode()).hexdigest()


def training_rows_in_order(frame: pd.DataFrame) -> pd.DataFrame:
    """A point-in-time join's rows, comparable whichever offline store made them: times as
    UTC instants (Spark hands them back without their zone), sorted by time, user and item."""
    times = pd.to_datetime(frame["event_timestamp"])
    times = times.dt.tz_localize("UTC") if times.dt.tz is None else times
    frame = frame.assign(event_timestamp=times)
    return frame.sort_values(["event_timestamp", "user_id", "item_id"], ignore_index=True)


def _as_text(column: str, dtype: pl.DataType) -> pl.Expr:
    """A column as text: floats rounded to FLOAT_DIGITS, vectors joined, nulls marked."""
    expr = pl.col(column)
    if isinstance(dtype, pl.Array | pl.List):
        inner = pl.element().round(FLOAT_DIGITS) if dtype.inner.is_float() else pl.element()
        expr = expr.cast(pl.List(dtype.inner)).list.eval(inner.cast(pl.String)).list.join(",")
    elif dtype.is_float():
        expr = expr.round(FLOAT_DIGITS)
    return expr.cast(pl.String).fill_null("\N{EMPTY SET}").alias(column)


def output_digests(root: Path, skip: set[str] = NOT_REPEATABLE) -> dict[str, str]:
    """`content_digest` of every Parquet file under root/tables and root/features (hidden
    and leftover files aside), by path relative to `root`; files named in `skip` left out."""
    return {
        str(p.relative_to(root)): content_digest(p)
        for folder in ("tables", "features")
        for p in sorted((root / folder).rglob("*.parquet"))
        if not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
        and p.stem not in skip
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--write", type=Path, help="save the digests as JSON here")
    args = parser.parse_args(argv)
    digests = output_digests(args.data_dir)
    text = json.dumps(digests, indent=1, sort_keys=True) + "\n"
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)
        print(f"{len(digests)} files -> {args.write}")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
