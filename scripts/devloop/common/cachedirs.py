"""The user's cache directory, under which devloop keeps models, builds and logs."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME, else ~/.cache (the XDG base-directory default, also used on macOS)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"))
