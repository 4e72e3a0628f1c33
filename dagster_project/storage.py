"""Atomic writes (a killed run never leaves a half-written table behind), retries with
backoff for calls to servers, and tables in storage that several machines share
(`SharedStorage`). SQL and the DuckDB session: `dagster_project.sql`."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pandas as pd
import polars as pl
import pyarrow.parquet as pq

from dagster_project.settings import data_dir

T = TypeVar("T")


@contextmanager
def atomic_file(path: Path, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write; renamed onto `path` when the
    block ends without an error (with permission bits `mode`, if given), removed otherwise:
    the one way the platform writes a file, so a killed run never leaves half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet_atomic(frame: pd.DataFrame | pl.DataFrame, path: Path) -> Path:
    """Write `frame` (pandas or polars) to `path` atomically (`atomic_file`)."""
    with atomic_file(path) as tmp:
        if isinstance(frame, pl.DataFrame):
            frame.write_parquet(tmp, compression="zstd", compression_level=1, statistics=True)
        else:
            frame.to_parquet(tmp, index=False)
    return path


def parquet_rows(path: Path) -> int:
    """Rows of a Parquet file, or of every Parquet file of a folder (a table kept one file per
    event day), from their footers; 0 for a path that does not exist."""
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path] if path.exists() else []
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def write_text_atomic(text: str, path: Path) -> Path:
    """Write a text file (report, JSON) atomically (`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def retry_with_backoff(
    action: Callable[[], T],
    retry_on: tuple[type[BaseException], ...],
    what: str,
    attempts: int = 4,
    first_wait_s: float = 2.0,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`action()`, tried up to `attempts` times on the `retry_on` errors with waits of
    first_wait_s, 2x, 4x ... between; then a RuntimeError that says what failed and why."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except retry_on as error:
            if attempt == attempts:
                raise RuntimeError(
                    f"{what} failed {attempts} times; the last error was "
                    f"{type(error).__name__}: {error}"
                ) from error
            wait = first_wait_s * 2 ** (attempt - 1)
            log(
                f"{what}: attempt {attempt} of {attempts} failed ({type(error).__name__}: "
                f"{error}); retrying in {wait:g} s"
            )
            sleep(wait)
    raise AssertionError("unreachable")


# Storage that several machines share (see `SharedStorage`).
STORAGE_URL_ENV = "RECSYS_STORAGE_URL"
S3_ENDPOINT_ENV = "RECSYS_S3_ENDPOINT_URL"
# Of the data directory, what the store holds: tables, Feast sources and day files, the saved
# model, the reports steps read back, the opt-out list and deletion records.
SHARED_FOLDERS = ("tables", "features", "models", "reports", "privacy")
SYNCED_SUFFIX = ".shared"  # beside a working copy: the version of the shared copy it holds


class SharedStorage:
    """Tables in storage that several machines share, named by a URL that fsspec reads
    (`s3://bucket/prefix`, `file:///mnt/shared/recsys`, `gs://...` with gcsfs installed).

    The store holds the data directory's `SHARED_FOLDERS`; each machine's data directory is
    its working copy, under the same relative paths (`tables/items_clean.parquet` is
    `<url>/tables/items_clean.parquet`). A step brings its working copy up to the store's
    when it starts (`fetch_all`: one listing per folder when nothing changed), and what
    other steps read is published as soon as it is written (`publish`; `publish_changes`
    puts everything changed here). Each working file's synced version (the store's ETag, or size and
    modification time, and the local file's) is kept beside it in a dot-file. A fetch
    replaces or deletes only files unchanged here since they were synced: a file written
    here and not yet published is never lost to an older shared copy, and a file never
    shared stays this machine's own until it publishes it (start a new machine with an
    empty data directory). A file the store no longer has, but this machine had from it, is
    deleted here too. S3-compatible servers (SeaweedFS, MinIO, Ceph) are named by
    $RECSYS_S3_ENDPOINT_URL; credentials are the AWS SDK's ($AWS_ACCESS_KEY_ID,
    $AWS_SECRET_ACCESS_KEY, profiles). Concurrent writers of one table are not arbitrated:
    the last publish wins, as the platform's runs write one at a time."""

    def __init__(self, url: str, root: Path, endpoint_url: str = "") -> None:
        import fsspec

        options = {"endpoint_url": endpoint_url} if endpoint_url else {}
        try:
            self.fs, base = fsspec.core.url_to_fs(url, **options)
        except (ImportError, ValueError) as error:
            raise ValueError(f"${STORAGE_URL_ENV}={url!r} cannot be opened: {error}") from error
        self.url, self.root, self.base = url, Path(os.path.abspath(root)), base.rstrip("/")
        protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else self.fs.protocol
        self.local = bool({"file", "local"} & set(protocols))

    def url_of(self, path: Path) -> str:
        """The shared URL of a working-copy `path` (a file or folder under the data root)."""
        return self.fs.unstrip_protocol(self._remote(path))

    def _remote(self, path: Path) -> str:
        try:
            relative = Path(os.path.abspath(path)).relative_to(self.root)
        except ValueError:
            raise ValueError(f"{path} is not under the data directory {self.root}") from None
        return f"{self.base}/{relative.as_posix()}"

    def fetch_all(self) -> int:
        """Bring the whole working copy up to the store's (`fetch` of each shared folder);
        returns the files downloaded or deleted."""
        return sum(self.fetch(self.root / folder) for folder in SHARED_FOLDERS)

    def fetch(self, path: Path) -> int:
        """Bring the working copy of `path` (a file, or a folder's files) up to the store's:
        download what changed there, delete what was shared and is gone from it. Returns the
        files downloaded or deleted."""
        remote = self._remote(path)
        self.fs.invalidate_cache(remote)
        listed = self._listing(remote)
        if path.is_file() or (remote in listed and len(listed) == 1):  # one file
            wanted = {path: listed[remote]} if remote in listed else {}
            local = [path] if path.is_file() else []
        else:
            wanted = {path / name[len(remote) + 1 :]: info for name, info in listed.items()}
            local = _working_files(path) if path.is_dir() else []
        changed = 0
        for file, info in wanted.items():
            changed += self._get(info, file)
        for file in local:  # shared once, deleted there since, unchanged here
            if file not in wanted and _unchanged_since_synced(file):
                file.unlink()
                _synced_file(file).unlink(missing_ok=True)
                changed += 1
        return changed

    def publish(self, path: Path) -> int:
        """Put the working copy's `path` (a file, or every file under a folder, the store's
        folder then holding those alone) in the store; files unchanged since this machine
        last synced them are skipped. Returns the files put or deleted."""
        if path.is_file():
            return int(self._put(path))
        if not path.is_dir():
            raise FileNotFoundError(f"{path} does not exist: nothing to publish")
        files = _working_files(path)
        changed = sum(self._put(file) for file in files)
        remote = self._remote(path)
        kept = {self._remote(file) for file in files}
        for name in self._listing(remote):
            if name not in kept and name != remote:
                self.fs.rm(name)
                changed += 1
        return changed

    def publish_changes(self) -> int:
        """Put every file of the shared folders written or changed here since it was last
        synced (deleting nothing: deletions are published where they happen, `remove`);
        returns the files put."""
        folders = [self.root / f for f in SHARED_FOLDERS if (self.root / f).is_dir()]
        return sum(self._put(file) for folder in folders for file in _working_files(folder))

    def remove(self, path: Path) -> None:
        """Delete a file or folder from the store, as it was from the working copy."""
        remote = self._remote(path)
        if self.fs.exists(remote):
            self.fs.rm(remote, recursive=True)
        self.fs.invalidate_cache(remote)
        if not path.is_dir():
            _synced_file(path).unlink(missing_ok=True)

    def attach(self, con) -> None:
        """Let a DuckDB connection read and write the store's URLs (`read_parquet('s3://...')`,
        `COPY ... TO 's3://...'`) through this filesystem: DuckDB's own httpfs extension is
        downloaded at run time, and no build of it matches the duckdb wheel offline."""
        if not self.local:
            con.register_filesystem(self.fs)

    def _listing(self, remote: str) -> dict[str, dict]:
        """The store's files at `remote` (itself, or those under it; dot-files left out),
        with their details."""
        try:
            found = self.fs.find(remote, detail=True)
        except FileNotFoundError:
            return {}
        return {
            name.rstrip("/"): info
            for name, info in found.items()
            if info.get("type") != "directory"
            and not any(part.startswith(".") for part in name[len(self.base) :].split("/"))
        }

    def _put(self, file: Path) -> bool:
        if _unchanged_since_synced(file):
            return False  # this machine's own copy of what the store holds
        remote = self._remote(file)
        if self.local:  # a hidden copy beside it, then a rename: never half a file
            folder, name = remote.rsplit("/", 1)
            partial = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
            self.fs.makedirs(folder, exist_ok=True)
            self.fs.put_file(str(file), partial)
            self.fs.mv(partial, remote)
        else:  # one PUT (multipart for large files): an object appears whole or not at all
            self.fs.put_file(str(file), remote)
        self.fs.invalidate_cache(remote)
        _record(file, _version(self.fs.info(remote)))
        return True

    def _get(self, info: dict, file: Path) -> bool:
        version = _version(info)
        if file.exists() and (
            _synced(file).get("remote") == version or not _unchanged_since_synced(file)
        ):
            return False  # up to date, or written here since: this machine publishes it
        with atomic_file(file) as tmp:
            self.fs.get_file(info["name"], str(tmp))
        _record(file, version)
        return True


def shared_storage(root: Path | None = None) -> SharedStorage | None:
    """The shared store $RECSYS_STORAGE_URL names for the data directory `root` (default: the
    configured one); None when unset: the data directory alone, the embedded default."""
    url = os.environ.get(STORAGE_URL_ENV, "").strip()
    if not url:
        return None
    return SharedStorage(url, root or data_dir(), os.environ.get(S3_ENDPOINT_ENV, "").strip())


def publish_to_shared(root: Path, *paths: Path) -> None:
    """Publish `paths` (files or folders under the data directory `root`) to the shared store
    at once, when one is configured: what a step writes beside the IO manager's tables."""
    shared = shared_storage(root)
    for path in paths if shared else ():
        shared.publish(path)


def _version(info: dict) -> str:
    """A stored file's version as a listing and a HEAD request both give it: its ETag (S3,
    GCS), else its size and modification time (a filesystem)."""
    tag = info.get("ETag") or info.get("etag")
    if tag:
        return str(tag).strip('"')
    return f"{info.get('size')}:{info.get('mtime') or info.get('LastModified')}"


def _unchanged_since_synced(file: Path) -> bool:
    """Whether `file` is as it was when last put or got (False for one never synced)."""
    return _synced(file).get("local") == _local_version(file)


def _working_files(folder: Path) -> list[Path]:
    return sorted(
        f
        for f in folder.rglob("*")
        if f.is_file() and not any(p.startswith(".") for p in f.relative_to(folder).parts)
    )


def _synced_file(file: Path) -> Path:
    return file.with_name(f".{file.name}{SYNCED_SUFFIX}")


def _local_version(file: Path) -> list[int]:
    stat = file.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _synced(file: Path) -> dict:
    try:
        return json.loads(_synced_file(file).read_text())
    except (OSError, ValueError):
        return {}


def _record(file: Path, remote_version: str) -> None:
    record = {"remote": remote_version, "local": _local_version(file)}
    write_text_atomic(json.dumps(record), _synced_file(file))
