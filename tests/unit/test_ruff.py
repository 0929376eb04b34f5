"""Ruff over the whole repository, with the rules pyproject.toml selects (its default set plus
import sorting and bugbear): the suite fails on any finding, as the workflow's lint job does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=300, check=False)


def test_the_repository_is_ruff_clean():
    result = ruff("check", "--no-cache", "--output-format", "concise", ".")
    assert result.returncode == 0, f"ruff findings (fix them, or `ruff check --fix`):\n{result.stdout}{result.stderr}"


def test_the_configuration_selects_import_sorting_and_bugbear():
    # A file as it would sit in the package, checked with the project's configuration.
    source = (
        "import sys\n"
        "import os\n"
        "\n"
        "\n"
        "def append(item, items=[]):\n"
        "    items.append(item)\n"
        "    return items, os.sep, sys.argv\n"
    )
    result = ruff("check", "--no-cache", "--output-format", "concise",
                  "--stdin-filename", "scripts/devloop/common/example.py", "-", stdin=source)
    assert result.returncode == 1
    assert "I001" in result.stdout  # unsorted imports
    assert "B006" in result.stdout  # a mutable default argument
