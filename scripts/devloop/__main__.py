"""`python -m devloop` works where the console script is not on PATH (e.g. inside a fresh venv)."""

import sys

from devloop.cli import main

sys.exit(main())
