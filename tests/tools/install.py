"""Run a project install script (scripts/install-*) and get the command it installed."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class ToolInstallFailed(RuntimeError):
    """An install script failed; the message carries its stderr's tail."""


def install_tool(script: str) -> Path:
    """The command installed by `scripts/<script>` (cached; installs if missing).

    Raises:
        ToolInstallFailed: The script failed or printed no path.
    """
    installed = subprocess.run(
        [REPO / "scripts" / script], capture_output=True, text=True, check=False
    )
    lines = installed.stdout.strip().splitlines()
    if installed.returncode != 0 or not lines:
        raise ToolInstallFailed(
            f"scripts/{script} failed (exit {installed.returncode}):\n{installed.stderr[-4000:]}"
        )
    return Path(lines[-1])
