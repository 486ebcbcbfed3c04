"""asv benchmark types for the UNet harness (see benchmarks/devicesamples.py)."""
