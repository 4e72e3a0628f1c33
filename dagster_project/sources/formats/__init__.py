"""The export formats `sources.adapters.read_export` knows, one module each, and what they
share (`common`)."""
