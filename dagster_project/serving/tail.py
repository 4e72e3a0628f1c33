"""`recsys intake-tail FILE`: feed a file of events (one JSON object per line) to the intake.

    recsys intake-tail events.jsonl [--follow] [--batch 500] [--data-dir DIR]

Each batch of lines goes through `EventIntake.receive`, exactly as `POST /events` does
(the batch's rules, the landing area, the quarantine, the online push). Where it got to is
kept beside the file (`<file>.offset`, the byte offset after the last line handled), so a
restart goes on from there; a line handled twice (a crash between landing and saving the
offset) is a `duplicate_event` for the intake or the daily run, never a second event. A
line that is not JSON is quarantined as `unparseable_row`. With `--follow` it waits for
new lines (as `tail -f`) until interrupted; it always publishes what it landed before it
stops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagster_project.resources import FeastResource
from dagster_project.serving.intake import EventIntake
from dagster_project.serving.online import RecentActivityStore
from dagster_project.settings import layout, use_private_umask
from dagster_project.storage import write_text_atomic

POLL_S = 0.5


def _offset_file(path: Path) -> Path:
    return path.with_name(path.name + ".offset")


def read_batches(
    path: Path, start: int, size: int, follow: bool
) -> Iterator[tuple[list[Any], int]]:
    """(entries, byte offset after them) for each batch of complete lines from `start`."""
    with open(path, "rb") as f:
        f.seek(start)
        entries: list[Any] = []
        while True:
            line = f.readline()
            if line.endswith(b"\n"):
                text = line.decode("utf-8", errors="replace").strip()
                if text:
                    entries.append(_entry(text))
                if len(entries) >= size:
                    yield entries, f.tell()
                    entries = []
                continue
            f.seek(f.tell() - len(line))  # an incomplete last line waits for its end
            if entries:
                yield entries, f.tell()
                entries = []
            if not follow:
                return
            time.sleep(POLL_S)


def _entry(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # not an object: the intake quarantines it as unparseable_row


def tail(path: Path, intake: EventIntake, batch: int, follow: bool) -> dict[str, int]:
    """Feed `path` to `intake` from its saved offset; returns the counts."""
    offset_file = _offset_file(path)
    start = int(offset_file.read_text()) if offset_file.exists() else 0
    counts = {"received": 0, "accepted": 0, "rejected": 0}
    try:
        for entries, offset in read_batches(path, start, batch, follow):
            (answer,) = intake.receive([entries])
            counts["received"] += answer.received
            counts["accepted"] += answer.accepted
            counts["rejected"] += len(answer.rejected)
            write_text_atomic(str(offset), offset_file)
            intake.publish_due()
            print(
                f"[intake-tail] {counts['received']:,} read, {counts['accepted']:,} accepted, "
                f"{counts['rejected']:,} quarantined",
                flush=True,
            )
    finally:
        intake.flush()
    return counts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys intake-tail", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("file", type=Path)
    parser.add_argument("--follow", action="store_true", help="wait for new lines")
    parser.add_argument("--batch", type=int, default=500, help="lines per intake batch")
    parser.add_argument("--data-dir", default="", help="default: $RECSYS_DATA_DIR or ./data")
    parser.add_argument("--feast-config", default="", help="default: $RECSYS_FEAST_CONFIG")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Feed a JSON-lines file of events to the intake (`recsys intake-tail`)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.file.is_file():
        parser.error(f"{args.file} is not a file")
    use_private_umask()
    out = layout(args.data_dir or None)
    store = FeastResource(data_dir=str(out.root), config_file=args.feast_config).store()
    intake = EventIntake(out, RecentActivityStore(store))
    with contextlib.suppress(KeyboardInterrupt):
        tail(args.file, intake, max(1, args.batch), args.follow)


if __name__ == "__main__":
    main()
