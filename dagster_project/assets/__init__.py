"""Thin Dagster wrappers, one module per asset group of ARCHITECTURE.md."""
