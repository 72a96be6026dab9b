"""Fixtures: a real registry server on loopback for the source tests (being written)."""
