"""Benchmarks: run with ``scripts/bench`` (``python -m tests.benchmarks``), never by the suite.

Every figure is printed as a ratio against a named reference measured in the same run, so
a slow machine changes the numbers on both sides and never fails anything.
"""
