"""Per-layer benchmarking of UNet inference builds on small ARM boards."""
__version__ = "0.1.0"
