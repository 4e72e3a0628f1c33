"""Privacy: the opt-out list, and forgetting a user everywhere.

The opt-out list is `<data dir>/privacy/opt_out.txt`: one user id per line, `#` starts a
comment. Users on it get no recommendations: none in the `recommendations` table, none in
the Feast view `user_recommendations`, and rows an earlier run put in the online store are
deleted. Their features and events are still used (opting out of personalisation is not a
deletion request).

A deletion request (`forget_user` job) removes one user from every file the platform keeps,
landing exports included, and from the online store, and logs it without the id. The job is
given a request id, never the customer's id: `file_deletion_request` writes the id to an
owner-only file under `privacy/requests/` and returns a random request id, the only thing
that lands in Dagster's stored run config; the job deletes the request file when it is done.
Files are rewritten plan-then-change: every file's new content is staged first, and only
when all are staged are they swapped in, so a file that cannot be rewritten leaves
everything as it was and is named in the error.
"""

from __future__ import annotations

import csv
import json
import os
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pyarrow.parquet as pq

from dagster_project.pseudonyms import deletion_digest, pseudonymise
from dagster_project.redaction import redact_mentions
from dagster_project.settings import DataLayout
from dagster_project.sources.manifest import CANONICAL_FORMAT, read_source_manifest
from dagster_project.storage import publish_to_shared, shared_storage, write_parquet_atomic

if TYPE_CHECKING:  # feast loads in seconds: imported where the online store is touched
    from feast import FeatureStore
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey


def opt_out_file(out: DataLayout) -> Path:
    return out.root / "privacy" / "opt_out.txt"


def opted_out_users(out: DataLayout) -> set[str]:
    """The pseudonyms of the users on the opt-out list, which names them by the ids customers
    know (none when there is no list)."""
    path = opt_out_file(out)
    if not path.exists():
        return set()
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return set(pseudonymise([line for line in lines if line]))


def entity_keys(join_key: str, ids: Iterable[str]) -> list[EntityKey]:
    """Feast entity keys of string ids (e.g. user_id pseudonyms)."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return [EntityKey(join_keys=[join_key], entity_values=[Value(string_val=i)]) for i in ids]


def delete_online_rows(store: FeatureStore, view_names: list[str], user_ids: Iterable[str]) -> int:
    """Delete the users' rows of `view_names` (views keyed by user_id) from the online store;
    returns how many of the users had rows there. SQLite and Redis profiles."""
    from feast.infra.key_encoding_utils import serialize_entity_key

    from recsys_feast.internals import (
        online_store,
        redis_client,
        redis_fields,
        sqlite_connection,
        sqlite_table,
    )

    ids = sorted(set(user_ids))
    if not ids:
        return 0
    config = store.config
    version = config.entity_key_serialization_version
    keys = [
        serialize_entity_key(k, entity_key_serialization_version=version)
        for k in entity_keys("user_id", ids)
    ]
    online = online_store(store)
    kind = config.online_store.type
    deleted = 0
    if "sqlite" in kind.lower():
        conn = sqlite_connection(online, config)
        tables = [sqlite_table(config, store.get_feature_view(n)) for n in view_names]
        with conn:
            for key in keys:
                removed = sum(
                    conn.execute(f"DELETE FROM {table} WHERE entity_key = ?", (key,)).rowcount
                    for table in tables
                )
                deleted += int(removed > 0)
    elif kind == "redis":
        # Redis keeps one hash per entity for all views of the project: drop the views' fields.
        fields = [f for n in view_names for f in redis_fields(store.get_feature_view(n))]
        client = redis_client(online, config)
        for key in keys:
            deleted += int(client.hdel(key + config.project.encode(), *fields) > 0)
    else:
        raise NotImplementedError(f"deleting rows from a {kind!r} online store")
    return deleted


def _token_pattern(user_id: str) -> str:
    """The user id as a whole token inside raw text (u12 does not match u123); the syntax
    works in Python's `re` and in polars."""
    return rf"(^|[^A-Za-z0-9_]){re.escape(user_id)}([^A-Za-z0-9_]|$)"


class DeletionError(RuntimeError):
    """A deletion request cannot be carried out; nothing was changed."""


def _requests_dir(out: DataLayout) -> Path:
    return out.root / "privacy" / "requests"


def file_deletion_request(out: DataLayout, user_id: str) -> str:
    """Write a deletion request for `user_id` (the id customers know) to an owner-only file;
    returns its request id, which is what the `forget_user` job is given."""
    if not user_id.strip():
        raise ValueError("no user id given")
    request_id = uuid.uuid4().hex
    folder = _requests_dir(out)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(folder / f"{request_id}.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(user_id.strip() + "\n")
    return request_id


def read_deletion_request(out: DataLayout, request_id: str) -> str:
    """The user id of a filed deletion request."""
    if not re.fullmatch(r"[0-9a-f]{32}", request_id):
        raise ValueError(
            f"{request_id!r} is not a deletion request id: file one with "
            "`python -m dagster_project.cli deletion-request USER_ID`"
        )
    path = _requests_dir(out) / f"{request_id}.txt"
    if not path.is_file():
        raise ValueError(f"no deletion request {request_id} in {path.parent} (done already?)")
    return path.read_text().strip()


def close_deletion_request(out: DataLayout, request_id: str) -> None:
    """Delete the request file: the customer's id is no longer needed anywhere."""
    (_requests_dir(out) / f"{request_id}.txt").unlink(missing_ok=True)


def _csv_without(path: Path, *user_ids: str) -> tuple[str | None, int]:
    """A canonical CSV export's text without the records of any of `user_ids`, and how many
    were dropped (None when none). Bytes that are not UTF-8 are kept as they are."""
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    lines = text.splitlines(keepends=True)
    if not lines:
        return None, 0
    header = next(csv.reader([lines[0]]))
    column = header.index("user_id") if "user_id" in header else None
    mentions = re.compile("|".join(f"(?:{_token_pattern(u)})" for u in user_ids))
    kept = [lines[0]]
    for line in lines[1:]:
        fields = next(csv.reader([line]), []) if column is not None else []
        mine = (
            fields[column] in user_ids
            if column is not None and len(fields) == len(header)
            else bool(mentions.search(line))  # a line that does not split: by its text
        )
        if not mine:
            kept.append(line)
    removed = len(lines) - len(kept)
    return ("".join(kept) if removed else None), removed


def _parquet_without(path: Path, *user_ids: str) -> tuple[pl.DataFrame | None, int]:
    """One Parquet file without the rows of any of `user_ids` (by a user_id column, or a
    `raw` text column that names one), and how many were dropped (None when none)."""
    names = pq.read_schema(path).names
    if "user_id" not in names and "raw" not in names:
        return None, 0
    frame = pl.read_parquet(path)
    mine = pl.lit(False)
    if "user_id" in names:
        mine = mine | pl.col("user_id").cast(pl.String).is_in(list(user_ids)).fill_null(False)
    if "raw" in names:
        pattern = "|".join(f"(?:{_token_pattern(u)})" for u in user_ids)
        mine = mine | pl.col("raw").cast(pl.String).str.contains(pattern).fill_null(False)
    removed = frame.filter(mine).height
    return (frame.filter(~mine) if removed else None), removed


def _stage(path: Path, *user_ids: str) -> tuple[Path | None, int]:
    """Write `path` without the rows of any of `user_ids` to a hidden file beside it; (that
    file, rows removed), no file when nothing is removed."""
    if path.suffix == ".csv":
        text, removed = _csv_without(path, *user_ids)
    elif path.suffix == ".parquet":
        frame, removed = _parquet_without(path, *user_ids)
    else:
        return None, 0
    if not removed:
        return None, 0
    staged = path.with_name(f".{path.name}.{uuid.uuid4().hex}.forget")
    if path.suffix == ".csv":
        staged.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    else:
        write_parquet_atomic(frame, staged)
    return staged, removed


def forget_in_file(path: Path, *user_ids: str) -> int:
    """Drop the rows of any of `user_ids` from one CSV or Parquet file; returns how many."""
    staged, removed = _stage(path, *user_ids)
    if staged is not None:
        os.replace(staged, path)
    return removed


def forget_user_files(out: DataLayout, user_id: str) -> dict[str, int]:
    """Remove one user (by the id customers know) from every file the platform keeps: the
    landing exports (so the next run cannot bring them back), the raw tables and quarantine
    (raw id), and the clean and derived tables, the feature files (Feast's offline store),
    the model outputs (pseudonym) and the generator's answer key. Returns rows removed per
    file (relative to the data directory) where there were any."""
    if not user_id:
        raise ValueError("no user id given")
    (pseudonym,) = pseudonymise([user_id])
    manifest = read_source_manifest(out.landing) if out.landing.exists() else {}
    if manifest.get("format", CANONICAL_FORMAT) != CANONICAL_FORMAT:
        raise NotImplementedError(
            f"the landing folder holds a {manifest['format']!r} export; forgetting a user in "
            "adapter formats is not supported yet: remove them at the source and re-export"
        )
    shared = shared_storage(out.root)
    if shared:  # the shared copies too: rows this machine never read
        shared.fetch_all()
    files = [
        *(sorted(out.landing.rglob("*")) if out.landing.exists() else []),
        *sorted(out.tables.rglob("*.parquet")),
        *sorted(out.features.rglob("*.parquet")),
        *sorted(out.ground_truth.rglob("*.parquet")),
    ]
    staged: dict[Path, tuple[Path, int]] = {}
    try:
        for path in files:  # plan: every file's new content, staged beside it
            if not path.is_file() or path.name.startswith("."):
                continue
            try:
                new, count = _stage(path, user_id, pseudonym)
            except Exception as exc:
                raise DeletionError(
                    f"{path.relative_to(out.root)}: cannot be rewritten without the user "
                    f"({type(exc).__name__}: {exc}); nothing was changed"
                ) from exc
            if new is not None:
                staged[path] = (new, count)
    except BaseException:
        for new, _ in staged.values():
            new.unlink(missing_ok=True)
        raise
    for path, (new, _) in staged.items():  # change: swap every staged file in
        os.replace(new, path)
    shared_tables = [
        p for p in staged if p.is_relative_to(out.tables) or p.is_relative_to(out.features)
    ]
    publish_to_shared(out.root, *shared_tables)
    return {str(path.relative_to(out.root)): count for path, (_, count) in staged.items()}


def redact_user(
    out: DataLayout, user_id: str, dagster_home: Path | None = None
) -> tuple[list[str], dict[str, int]]:
    """After the rows are gone (`forget_user_files`, `delete_online_rows`): redact the
    customer's id and pseudonym wherever text still names them under the data directory and
    the Dagster home (event logs, captured output, reports, GX results, the opt-out list)
    and vacuum SQLite files. Returns (files redacted, files still mentioning them with
    counts), as paths relative to their folder. The saved model is not searched: it holds
    the pseudonym until the next retrain (the documented exception)."""
    ids = [user_id, *pseudonymise([user_id])]
    folders = [out.root]
    if dagster_home is not None and not dagster_home.resolve().is_relative_to(out.root.resolve()):
        folders.append(dagster_home)
    redacted: list[str] = []
    left: dict[str, int] = {}
    for folder in folders:
        done, still = redact_mentions(folder, ids, skip=[out.models])
        redacted += [str(p.relative_to(folder)) for p in done]
        left |= {str(p.relative_to(folder)): n for p, n in still.items()}
    return redacted, left


def user_views(store: FeatureStore) -> list[str]:
    """The feature views keyed by the user entity."""
    return sorted(v.name for v in store.list_feature_views() if "user" in v.entities)


def record_deletion(
    out: DataLayout,
    user_id: str,
    removed: dict[str, int],
    online: int,
    files_redacted: int = 0,
) -> Path:
    """Append to privacy/deletions.jsonl when and how much was removed, naming the user only
    by a keyed digest (`pseudonyms.deletion_digest`: the log must not keep the id it deleted,
    and whoever holds the key can still answer "was this customer deleted?")."""
    path = out.root / "privacy" / "deletions.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "user_hmac": deletion_digest(user_id),
        "deleted_at": datetime.now(UTC).isoformat(),
        "rows_removed": sum(removed.values()),
        "files": len(removed),
        "online_users_removed": online,
        "files_redacted": files_redacted,
    }
    with path.open("a") as log:
        log.write(json.dumps(entry) + "\n")
    return path
