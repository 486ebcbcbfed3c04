"""Result storage: the versioned JSON document, its schema, and pandas views.

Imports nothing itself: the on-device runner imports `harness.results.fingerprint`, and a device
has no jsonschema (store.py) or pandas (frame.py)."""
