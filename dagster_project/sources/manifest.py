"""The landing folder's manifest (`source.json`): the export's declared name, format and time
window, and, for a format adapter's export, the export itself (`read_declared_export`).

An adapter declares its window only once its export has been read, so `source_window`
remembers each folder's window, keyed on the state of the files it was read from (path, size
and modification time of every file in the folder and of the mapping file), and reads the
export again only when they change.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from dagster_project.sources.adapters import read_export
from dagster_project.sources.formats.common import SourceExport
from dagster_project.sources.records import LandingFileError

CANONICAL_FORMAT = "canonical"

Window = tuple[pd.Timestamp, pd.Timestamp]
# landing folder -> (the state of its files when read, the window its export declared)
_WINDOWS: dict[Path, tuple[tuple, Window]] = {}


def read_source_manifest(landing: Path) -> dict:
    """The export's declared name, format and time window (`source.json`).

    `format` is `canonical` (files in the contract's columns under events/ and items/, the
    default) or the name of a format adapter (see docs/format_adapters.md) with an optional
    `mapping`; adapters declare their own window.
    """
    path = landing / "source.json"
    if not path.is_file():
        raise LandingFileError(f"{path}: missing; it declares the source name and its time window")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LandingFileError(f"{path}: not valid JSON ({exc})") from exc
    manifest.setdefault("format", CANONICAL_FORMAT)
    needed = (
        ("source", "window_start", "window_end") if manifest["format"] == CANONICAL_FORMAT else ()
    )
    for key in needed:
        if key not in manifest:
            raise LandingFileError(f"{path}: key {key!r} missing")
    return manifest


def source_window(landing: Path) -> Window:
    """The declared [start, end) window of the export in `landing`, in UTC."""
    manifest = read_source_manifest(landing)
    if manifest["format"] == CANONICAL_FORMAT:
        return (
            pd.Timestamp(manifest["window_start"]).tz_convert("UTC"),
            pd.Timestamp(manifest["window_end"]).tz_convert("UTC"),
        )
    key, state = Path(landing).absolute(), _files_state(landing, manifest)
    if key not in _WINDOWS or _WINDOWS[key][0] != state:
        _read_export(landing, manifest, state)
    return _WINDOWS[key][1]


def read_declared_export(landing: Path, manifest: dict) -> SourceExport:
    """The export in `landing` read by the format adapter its (not canonical) manifest names;
    its window is remembered for `source_window`."""
    return _read_export(landing, manifest, _files_state(landing, manifest))


def _read_export(landing: Path, manifest: dict, state: tuple) -> SourceExport:
    export = read_export(landing, manifest["format"], manifest.get("mapping"))
    _WINDOWS[Path(landing).absolute()] = (state, (export.window_start, export.window_end))
    return export


def _files_state(landing: Path, manifest: dict) -> tuple:
    """(path, size, mtime) of every file under `landing` and of the mapping file the manifest
    names (an export's files lie in its folder, docs/format_adapters.md)."""
    paths = sorted(p for p in Path(landing).rglob("*") if p.is_file())
    mapping = manifest.get("mapping")
    if isinstance(mapping, str | Path):
        paths.append(Path(landing) / mapping)
    return tuple((str(p), *_stat(p)) for p in paths)


def _stat(path: Path) -> tuple[int, int] | tuple[None, None]:
    """(size, mtime in ns) of `path`; (None, None) when it cannot be read."""
    try:
        stat = path.stat()
    except OSError:
        return None, None
    return stat.st_size, stat.st_mtime_ns
