"""weightgate's version.

In a module of its own so the core can name it without importing the package root, which
pulls in the scanner.
"""

__version__ = "0.1.0"
