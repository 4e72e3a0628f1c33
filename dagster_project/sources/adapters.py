"""Format adapters: map real e-commerce exports onto the canonical raw contract.

`read_export(folder, format, mapping)` reads one export folder in a known layout (Taobao
UserBehavior, UCI Online Retail, Instacart, RetailRocket) or in any CSV/Parquet layout
described by a column mapping (`generic`), and returns a `SourceExport`: the source's
declared time window, a raw behaviour frame, a raw catalog frame and measured source facts.
This module holds the registry of formats (`ADAPTERS`); each format is one module of
`sources.formats`, and `sources.records` reads their files' records.

Raw frames hold text only and keep one row per input record: records that cannot be split
into the file's fields carry `parse_error`, source-specific rejections (cancellations, fees,
order lines of unknown orders) carry `source_reason`/`source_detail`; the cleaning step
quarantines both. Whole-file problems (missing file, missing column, unknown format) raise
`LandingFileError` naming the file and the problem. docs/format_adapters.md describes each
format.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from dagster_project.sources.formats.common import SourceExport
from dagster_project.sources.formats.generic import read_generic
from dagster_project.sources.formats.instacart import read_instacart
from dagster_project.sources.formats.online_retail import read_online_retail
from dagster_project.sources.formats.retailrocket import read_retailrocket
from dagster_project.sources.formats.taobao import read_taobao
from dagster_project.sources.records import LandingFileError

ADAPTERS: dict[str, Callable[[Path, dict], SourceExport]] = {
    "taobao": read_taobao,
    "online_retail": read_online_retail,
    "instacart": read_instacart,
    "retailrocket": read_retailrocket,
    "generic": read_generic,
}


def load_mapping(path: Path) -> dict:
    """A generic-format mapping from a JSON or YAML file."""
    if not path.is_file():
        raise LandingFileError(f"{path}: no such mapping file")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        loaded = yaml.safe_load(text)
    else:
        loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise LandingFileError(f"{path}: a mapping must be an object, got {type(loaded).__name__}")
    return loaded


def read_export(
    folder: Path, format: str, mapping: dict | str | Path | None = None
) -> SourceExport:
    """Read one export folder in a named format (a key of ADAPTERS).

    `mapping` holds the format's options (for `generic`, the column mapping); a string or path
    names a JSON/YAML file holding them, relative to `folder` unless absolute.
    """
    folder = Path(folder)
    if format not in ADAPTERS:
        raise LandingFileError(
            f"{folder}: unknown export format {format!r}; known formats: {sorted(ADAPTERS)}"
        )
    if isinstance(mapping, str | Path):
        mapping = load_mapping(folder / mapping)
    if format == "generic" and not mapping:
        raise LandingFileError(f"{folder}: the generic format needs a column mapping")
    return ADAPTERS[format](folder, dict(mapping or {}))
