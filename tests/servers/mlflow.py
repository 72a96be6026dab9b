"""Fixtures: a real mlflow server on loopback for the source tests (being written)."""
