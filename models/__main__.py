"""Command line for the recommenders.

    python -m models evaluate --interactions PATH --protocol {temporal,loo,msr} [--k 10]
        [--json OUT] [--models embedding,ease,...] [--test-days 3] [--seed 42]
    [torchrun --nproc_per_node N -m] models train --interactions PATH --protocol P
        [--json OUT] [--save DIR] [--epochs E] [--long-term auto|ridge|ease|none] [--seed 42]

PATH is CSV/TSV, Parquet or a RecBole `.inter` file with columns user_id, item_id,
timestamp (epoch seconds or a date-time) and optionally weight, event_type or rating (a
rating is ignored: every rating is one implicit interaction); or an S3-Rec sequence `.txt`
file (one user per line, `user item item ...` in time order; its
`<stem>_item2attributes.json` beside it gives the items' attributes). The model and every
baseline are trained on the same split; the comparison table is printed, and with --json
written as {"protocol": ..., "interactions": ..., "k": ...,
"models": {"<name>": {"ndcg@10": ..., ...}}}. A file that cannot be read exits with 2.

`train` fits the embedding model alone on the protocol's training split and scores it on the
test. Under torchrun it trains data parallel on N processes (`models.distributed`: gloo on
CPU, NCCL on CUDA); the first process prints, saves and writes the JSON: processes, device,
training throughput (sequences per second), the validation NDCG@10, the epochs and the test
figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from models.compare import (
    compare,
    comparison_markdown,
    comparison_table,
    default_models,
    load_interactions,
    load_items,
)
from models.distributed import start_process_group, stop_process_group, world
from models.embedding import LONG_TERMS, EmbeddingConfig, EmbeddingRecommender
from models.metrics import user_segments
from models.split import PROTOCOLS, VALIDATION_FOR, make_split


def evaluate_command(args: argparse.Namespace) -> int:
    """Run `python -m models evaluate`; returns the exit code."""
    available = default_models(args.seed, args.device, args.protocol, args.test_days)
    names = args.models.split(",") if args.models else list(available)
    unknown = sorted(set(names) - set(available))
    if unknown:
        print(
            f"error: unknown model(s) {', '.join(unknown)}; choose from {', '.join(available)}",
            file=sys.stderr,
        )
        return 2
    interactions = load_interactions(args.interactions)
    split = make_split(interactions, args.protocol, args.test_days)
    print(
        f"{args.interactions}: {len(interactions):,} interactions, "
        f"{interactions['user_id'].nunique():,} users, {interactions['item_id'].nunique():,} "
        f"items; protocol {args.protocol}: {len(split.train):,} training rows, "
        f"{len(split.truth):,} relevant items of {split.truth['user_id'].nunique():,} users"
    )
    if split.truth.empty:
        print("nothing to evaluate: the split left no relevant items", file=sys.stderr)
        return 1
    items = load_items(args.interactions, interactions)
    results = compare(
        split, items, {n: available[n] for n in names}, args.k, segments=user_segments(split.train)
    )
    print(comparison_markdown(comparison_table(results, args.k)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "protocol": args.protocol,
            "interactions": str(args.interactions),
            "k": args.k,
            "models": results,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"written {args.json}")
    return 0


def train_command(args: argparse.Namespace) -> int:
    """Run `python -m models train` (one process, or one of torchrun's); returns the exit code."""
    process_device = start_process_group()  # under torchrun: this process's GPU or the CPU
    device = process_device if args.device == "auto" else args.device
    try:
        rank, processes = world()
        interactions = load_interactions(args.interactions, report=print if rank == 0 else _quiet)
        split = make_split(interactions, args.protocol, args.test_days)
        items = load_items(args.interactions, interactions)
        config = EmbeddingConfig(
            seed=args.seed,
            device=device,
            validation=VALIDATION_FOR[args.protocol],
            validation_days=float(args.test_days),
            long_term=args.long_term,
            **({"epochs": args.epochs, "patience": args.epochs} if args.epochs else {}),
        )
        model = EmbeddingRecommender(config).fit(split.train, items)
        if rank != 0:
            return 0
        test = compare(split, items, {}, args.k, report=_quiet, fitted={"embedding": model})
        rates = [epoch["sequences_per_s"] for epoch in model.history]
        summary = {
            "processes": processes,
            "device": str(model.device),
            "sequences_per_s": round(float(np.median(rates)), 1) if rates else None,
            "best_validation_ndcg@10": round(model.best_validation_ndcg, 5),
            "best_epoch": model.best_epoch,
            "memory_form": model.memory_form,
            "fit_seconds": round(model.fit_seconds, 1),
            "history": model.history,
            "test": test["embedding"],
        }
        print(
            f"{processes} process(es) on {summary['device']}: {summary['sequences_per_s']} "
            f"sequences/s, validation NDCG@10 {summary['best_validation_ndcg@10']:.4f}, "
            f"test NDCG@{args.k} {test['embedding'][f'ndcg@{args.k}']:.4f}"
        )
        if args.save:
            print(f"saved {model.save(args.save)}")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(summary, indent=2))
            print(f"written {args.json}")
        return 0
    finally:
        stop_process_group()


def _quiet(message: str) -> None:
    """A report that says nothing (the other training processes)."""


# What each subcommand's --help says about its options (shared by `evaluate` and `train`).
INTERACTIONS_HELP = (
    "CSV/TSV, Parquet or RecBole .inter with user_id, item_id, timestamp (optionally weight, "
    "event_type; a rating column is ignored, and the command says so); or an S3-Rec "
    "sequence .txt (user item item ...)"
)
PROTOCOL_HELP = (
    "temporal: the last --test-days days hold the items new to each known user; loo: each "
    "user's last interaction (S3-Rec's protocol); msr: a seeded 75/25 split of each item's "
    "interactions (microsoft/recommenders' MovieLens protocol)"
)
EVALUATE_DESCRIPTION = """Train the embedding model and every baseline on one split of the
--interactions file and print their figures side by side (NDCG, precision, recall, MAP, HR,
MRR at k, coverage, novelty, training and scoring seconds). Example:

    python -m models evaluate --interactions ../shared/data/ml-100k/ml-100k.inter --protocol msr
"""


def _add_common_options(command: argparse.ArgumentParser) -> None:
    """The options `evaluate` and `train` share: the data, the split, k, the JSON."""
    command.add_argument("--interactions", type=Path, required=True, help=INTERACTIONS_HELP)
    command.add_argument("--protocol", choices=PROTOCOLS, required=True, help=PROTOCOL_HELP)
    command.add_argument("--k", type=int, default=10, help="the cutoff of every @k figure")
    command.add_argument("--json", type=Path, default=None, help="also write the figures here")


def _parser() -> argparse.ArgumentParser:
    """The command line: `evaluate`, `train` and their options."""
    parser = argparse.ArgumentParser(
        prog="python -m models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    evaluate = commands.add_parser(
        "evaluate",
        help="train every model on one split and compare",
        description=EVALUATE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common_options(evaluate)
    evaluate.add_argument(
        "--models",
        default="",
        help=f"comma-separated, from {', '.join(default_models())}; default: all",
    )
    evaluate.add_argument("--test-days", type=int, default=3, help="temporal protocol only")
    evaluate.add_argument("--seed", type=int, default=42, help="the models' random seed")
    evaluate.add_argument("--device", default="auto", help="auto, cpu or cuda")
    train = commands.add_parser(
        "train",
        help="fit the embedding model alone (data parallel under torchrun)",
        description="Fit the embedding model alone on the protocol's training split and "
        "score it on the test (under torchrun: data parallel, the first process reports).",
    )
    _add_common_options(train)
    train.add_argument("--save", type=Path, default=None, help="a folder for the model")
    train.add_argument("--epochs", type=int, default=0, help="exactly this many (0: early stop)")
    train.add_argument(
        "--long-term",
        choices=LONG_TERMS,
        default="auto",
        help="the item-item memory beside the encoder (auto: ridge unless EASE wins on "
        "validation; none: the encoder alone)",
    )
    train.add_argument("--test-days", type=int, default=3, help="temporal protocol only")
    train.add_argument("--seed", type=int, default=42, help="the model's random seed")
    train.add_argument(
        "--device", default="auto", help="auto (under torchrun: the process's GPU or the CPU)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return train_command(args) if args.command == "train" else evaluate_command(args)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
