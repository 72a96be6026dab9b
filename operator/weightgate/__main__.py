"""``python -m weightgate`` runs the command line."""

import sys

from weightgate.cli import main

sys.exit(main())
