"""Report writers: human text, JSON, and SARIF 2.1.0 for code-scanning dashboards."""

from weightgate.scan.reports.json import render_json
from weightgate.scan.reports.sarif import render_sarif
from weightgate.scan.reports.text import render_text

__all__ = ["render_json", "render_sarif", "render_text"]
