"""What the Feast repo (`feature_repo/`) needs besides Feast, importable on its own, without
the platform: where the data directory is (`paths`) and the SQLite online store that reads
only the requested features (`sqlite_store`)."""
