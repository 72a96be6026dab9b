"""The SARIF 2.1.0 envelope every weightgate report shares (scan and diff).

A leaf module, like :mod:`weightgate.errors`: the scan's and the diff's reports build their
rules and results and wrap them here, so both name the tool the same way.
"""

from __future__ import annotations

from typing import Any

from weightgate.version import __version__

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/weightgate/weightgate"


def sarif_log(
    rules: list[dict[str, Any]],
    results: list[dict[str, Any]],
    version: str = __version__,
    **run: Any,
) -> dict[str, Any]:
    """A SARIF log of one run of weightgate; ``run`` adds members (artifacts, invocations)."""
    driver = {
        "name": "weightgate",
        "version": version,
        "semanticVersion": version,
        "informationUri": INFORMATION_URI,
        "rules": rules,
    }
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{"tool": {"driver": driver}, "results": results, **run}],
    }
