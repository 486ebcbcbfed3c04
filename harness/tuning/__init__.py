"""Tuning: kernel templates, their search spaces, the bounded search, per-device databases."""
