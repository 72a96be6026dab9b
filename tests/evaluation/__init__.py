"""Evaluation of the weight-diff detectors: real edits against real benign changes."""
