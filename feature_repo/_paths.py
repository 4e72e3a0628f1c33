"""Where the feature assets write their Parquet files (shared by the definition modules)."""

import os
from pathlib import Path

DATA_DIR = Path(
    os.environ.get("RECSYS_DATA_DIR") or Path(__file__).resolve().parent.parent / "data"
).resolve()
FEATURES_DIR = DATA_DIR / "features"
