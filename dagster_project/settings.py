"""Where the platform keeps its files: one configurable, git-ignored data directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from recsys_feast.paths import DATA_DIR_ENV as DATA_DIR_ENV  # the one resolver, shared
from recsys_feast.paths import FEAST_CONFIG_ENV as FEAST_CONFIG_ENV
from recsys_feast.paths import data_dir

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIRST_EVENT_DAY_ENV = "RECSYS_FIRST_EVENT_DAY"
# The first daily partition: the generator's first day. Events before it fold into it.
DEFAULT_FIRST_EVENT_DAY = "2026-09-01"
EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"
FEATURE_REPO_DIR = PROJECT_ROOT / "feature_repo"


def first_event_day() -> str:
    """The first day of the event-date partitions: `$RECSYS_FIRST_EVENT_DAY` (YYYY-MM-DD)."""
    return os.environ.get(FIRST_EVENT_DAY_ENV) or DEFAULT_FIRST_EVENT_DAY


# Files the platform writes hold customer data: readable by their owner only.
PRIVATE_UMASK = 0o077


def use_private_umask() -> None:
    """Create every later file and folder of this process owner-only (0600 / 0700); called
    by the platform's entry points (the CLI, the Dagster definitions, the feature server)."""
    os.umask(PRIVATE_UMASK)


# The tables Feast's sources read (feature_repo/data_sources.py): kept under `features/`.
FEATURE_TABLES = frozenset(
    {
        "user_features",
        "item_features",
        "item_text_embedding",
        "user_embedding",
        "item_embedding",
        "user_recommendations",
        "user_recent_activity",
    }
)


# The tables kept one Parquet file per event day (`DataLayout.day_file`), read whole as their
# folder: the cleaning's output, built one day at a time.
DAY_TABLES = frozenset({"events_clean", "quarantine_events"})


@dataclass(frozen=True)
class DataLayout:
    """Every path the platform writes, derived from one root."""

    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def landing_events(self) -> Path:
        return self.landing / "events"

    @property
    def landing_items(self) -> Path:
        return self.landing / "items"

    @property
    def ground_truth(self) -> Path:
        return self.root / "ground_truth"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def feast(self) -> Path:
        return self.root / "feast"

    @property
    def cache(self) -> Path:
        """Work worth keeping between runs (e.g. text embeddings by text hash)."""
        return self.root / "cache"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def gx(self) -> Path:
        return self.root / "gx"

    @property
    def duckdb_file(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    def table(self, name: str) -> Path:
        """Parquet file of a canonical table, e.g. `tables/items_clean.parquet`; the folder of
        one kept by event day (`DAY_TABLES`), e.g. `tables/events_clean/`."""
        if name in DAY_TABLES:
            return self.tables / name
        return self.tables / f"{name}.parquet"

    def day_file(self, name: str, day: str) -> Path:
        """One event day's file (day = YYYY-MM-DD) of a table kept by day (`DAY_TABLES`)."""
        return self.table(name) / f"{day}.parquet"

    def raw_table(self, name: str) -> Path:
        """Folder of a raw table (`raw_events`, `raw_items`): the landed files, read through
        `sources.raw_table.raw_relation`."""
        return self.tables / name

    def asset_table(self, asset: str) -> Path:
        """Where a table asset is stored: raw tables as folders, the files Feast's sources
        read under `features/`, every other table under `tables/`."""
        if asset.startswith("raw_"):
            return self.raw_table(asset)
        if asset in FEATURE_TABLES:
            return self.feature_table(asset)
        return self.table(asset)

    def feature_table(self, name: str) -> Path:
        return self.features / f"{name}.parquet"

    def daily_folder(self, name: str) -> Path:
        """Folder of a table kept one file per event day, e.g. `features/daily/user_totals/`."""
        return self.features / "daily" / name

    def daily_file(self, name: str, day: str) -> Path:
        """One event day's file (day = YYYY-MM-DD) of a table kept per day."""
        return self.daily_folder(name) / f"{day}.parquet"


def layout(root: Path | str | None = None) -> DataLayout:
    """The layout under `root`, or under the configured data directory."""
    return DataLayout(Path(root).resolve() if root else data_dir())
