"""Analyses Jinja2 chat templates statically: parse to an AST, walk it, never render.

Modules:

- ``analysis``: :func:`analyse_template`: the hazards a template reaches for.
- ``folding``: constant folding of expressions, so that no name is built unseen.
"""

from weightgate.formats.jinja.analysis import (
    JINJA_DELIMITERS,
    HazardKind,
    TemplateHazard,
    analyse_template,
)
from weightgate.formats.jinja.folding import MAX_FOLDED_CHARS

__all__ = [
    "JINJA_DELIMITERS",
    "MAX_FOLDED_CHARS",
    "HazardKind",
    "TemplateHazard",
    "analyse_template",
]
