"""Signed provenance: model signatures, admission records, record chains."""
