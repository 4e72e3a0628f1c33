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
SYNCED_SUFFIX = ".shared"  # beside a working copy: the version of the shared copy it holds


class SharedStorage:
    """Tables in storage that several machines share, named by a URL that fsspec reads
    (`s3://bucket/prefix`, `file:///mnt/shared/recsys`, `gs://...` with gcsfs installed).

    The shared store holds the tables; each machine's data directory is its working copy,
    under the same relative paths (`tables/events_clean.parquet` is
    `<url>/tables/events_clean.parquet`). A step fetches what it reads when the shared copy
    is not the one this machine last synced (`fetch`), and publishes what it writes as soon
    as it is written (`publish`). Each working file's synced version (the store's checksum:
    the ETag on S3) is kept beside it in a dot-file, so processes never share a record.
    S3-compatible servers (SeaweedFS, MinIO, Ceph) are named by $RECSYS_S3_ENDPOINT_URL;
    credentials are the AWS SDK's ($AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY, profiles)."""

    def __init__(self, url: str, root: Path, endpoint_url: str = "") -> None:
        import fsspec

        options = {"endpoint_url": endpoint_url} if endpoint_url else {}
        try:
            self.fs, base = fsspec.core.url_to_fs(url, **options)
        except (ImportError, ValueError) as error:
            raise ValueError(f"${STORAGE_URL_ENV}={url!r} cannot be opened: {error}") from error
        self.url, self.root, self.base = url, Path(root).resolve(), base.rstrip("/")
        self.local = "file" in self.fs.protocol or "local" in self.fs.protocol

    def url_of(self, path: Path) -> str:
        """The shared URL of a working-copy `path` (a file or folder under the data root)."""
        return self.fs.unstrip_protocol(self._remote(path))

    def _remote(self, path: Path) -> str:
        try:
            relative = Path(path).resolve().relative_to(self.root)
        except ValueError:
            raise ValueError(f"{path} is not under the data directory {self.root}") from None
        return f"{self.base}/{relative.as_posix()}"

    def publish(self, path: Path) -> None:
        """Put the working copy's `path` (a file, or every file under a folder) in the shared
        store; files this machine synced unchanged since are skipped."""
        files = [path] if path.is_file() else _working_files(path)
        for file in files:
            if _synced(file).get("local") != _local_version(file):
                self._put(file)

    def fetch(self, path: Path) -> None:
        """Bring the working copy of `path` (a file, or a folder's files) up to the shared
        store's; nothing to do where the store holds none of it (a table only this machine
        has written, or none yet)."""
        remote = self._remote(path)
        self.fs.invalidate_cache(remote)
        if not self.fs.exists(remote):
            return
        if not self.fs.isdir(remote):
            self._get(remote, path)
            return
        for name in self.fs.find(remote):
            relative = name[len(remote) :].lstrip("/")
            if not any(part.startswith(".") for part in relative.split("/")):
                self._get(name, path / relative)

    def remove(self, path: Path) -> None:
        """Delete a file from the shared store, as it was from the working copy."""
        remote = self._remote(path)
        if self.fs.exists(remote):
            self.fs.rm(remote)
        _synced_file(path).unlink(missing_ok=True)

    def attach(self, con) -> None:
        """Let a DuckDB connection read and write the store's URLs (`read_parquet('s3://...')`,
        `COPY ... TO 's3://...'`) through this filesystem: DuckDB's own httpfs extension is
        downloaded at run time, and no build of it matches the duckdb wheel offline."""
        if not self.local:
            con.register_filesystem(self.fs)

    def _put(self, file: Path) -> None:
        remote = self._remote(file)
        if self.local:  # a copy beside it, then a rename: readers never see half a file
            partial = f"{remote}.{uuid.uuid4().hex}.tmp"
            self.fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(file), partial)
            self.fs.mv(partial, remote)
        else:  # one PUT (multipart for large files): an object appears whole or not at all
            self.fs.put_file(str(file), remote)
        self.fs.invalidate_cache(remote)
        _record(file, self.fs.checksum(remote))

    def _get(self, remote: str, file: Path) -> None:
        version = self.fs.checksum(remote)
        if file.exists() and _synced(file).get("remote") == version:
            return
        with atomic_file(file) as tmp:
            self.fs.get_file(remote, str(tmp))
        _record(file, version)


def shared_storage(root: Path | None = None) -> SharedStorage | None:
    """The shared store $RECSYS_STORAGE_URL names for the data directory `root` (default: the
    configured one); None when unset: the data directory alone, the embedded default."""
    url = os.environ.get(STORAGE_URL_ENV, "").strip()
    if not url:
        return None
    return SharedStorage(url, root or data_dir(), os.environ.get(S3_ENDPOINT_ENV, "").strip())


def publish_to_shared(root: Path, *paths: Path) -> None:
    """Publish `paths` (files or folders under the data directory `root`) to the shared store,
    when one is configured: for tables a step writes beside the one the IO manager stores."""
    shared = shared_storage(root)
    for path in paths if shared else ():
        shared.publish(path)


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


def _record(file: Path, remote_version: object) -> None:
    record = {"remote": remote_version, "local": _local_version(file)}
    write_text_atomic(json.dumps(record), _synced_file(file))
