"""Fixtures: a real hf_hub server on loopback for the source tests (being written)."""
