"""Tuning: kernel templates, their search spaces, the bounded search, databases per device and CPU."""
