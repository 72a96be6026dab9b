"""Fixtures: a real https server on loopback for the source tests (being written)."""
