"""Deploying to devices: packing the harness, exporting and cross-compiling builds, and
running the on-device runner over a transport."""
