"""Result storage: the versioned JSON document, its schema, and pandas views."""
from harness.results.store import SCHEMA_VERSION, load_result, save_result

__all__ = ["SCHEMA_VERSION", "load_result", "save_result"]
