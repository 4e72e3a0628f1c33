"""Values read from files the daily run rewrites, re-read only when a file changes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


class FileCache:
    """`get(path, load)`: `load(path)`, cached until the file's size or mtime changes."""

    def __init__(self) -> None:
        self._entries: dict[tuple[Path, str], tuple[tuple[int, int], Any]] = {}
        self._lock = threading.Lock()

    def get(self, path: Path, load: Callable[[Path], Any]) -> Any:
        stat = path.stat()
        state = (stat.st_size, stat.st_mtime_ns)
        key = (path, getattr(load, "__qualname__", repr(load)))
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and hit[0] == state:
            return hit[1]
        value = load(path)
        with self._lock:
            self._entries[key] = (state, value)
        return value
