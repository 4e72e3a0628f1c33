"""Where the feature assets write their Parquet files (shared by the definition modules)."""

from recsys_feast.paths import data_dir

DATA_DIR = data_dir()
FEATURES_DIR = DATA_DIR / "features"
