"""The catalog as the features and the model see it: the validated items with first_seen."""

import pandas as pd

from dagster_project.contracts import ITEM_COLUMNS

# The contract's item columns, with first_seen in place of listed_at.
CATALOG_COLUMNS = [c for c in ITEM_COLUMNS if c != "listed_at"] + ["first_seen"]


def catalog_items(items_clean: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """`items_clean` with first_seen: the listing time or the item's first event, whichever is
    earlier; the ingest time for an item with neither."""
    first_event = events.groupby("item_id")["event_time"].min()
    catalog = items_clean.copy()
    catalog["first_seen"] = pd.concat(
        [catalog["listed_at"], catalog["item_id"].map(first_event)], axis=1
    ).min(axis=1)
    catalog["first_seen"] = catalog["first_seen"].fillna(catalog["ingested_at"])
    return catalog[CATALOG_COLUMNS]
