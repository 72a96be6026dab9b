"""Fixtures: a real s3 server on loopback for the source tests (being written)."""
