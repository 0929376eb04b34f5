"""The image's build context: what .dockerignore lets through, copied or edited for a test."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "image" / "Dockerfile"
# What .dockerignore lets into the build context, plus the Dockerfile and .dockerignore itself.
CONTEXT_FILES = ["image", "pyproject.toml", "LICENSE", "README.md", "scripts", ".dockerignore"]
SKIPPED = ("__pycache__", "*.egg-info", "*.pyc")
# Tilt labels every image it builds with these (internal/docker/client.go, BuiltLabelSet).
TILT_LABELS = ["dev.tilt.built=true", "dev.tilt.gc=true"]
EDITED_MODULE = Path("scripts") / "devloop" / "engine" / "health.py"


def copy_context(destination: Path) -> Path:
    """A copy of the build context under `destination`, to edit without touching the repo."""
    for name in CONTEXT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns(*SKIPPED))
        else:
            shutil.copy2(source, destination / name)
    return destination


def edit_code(context: Path, marker: str) -> None:
    """A code-only change: one line appended to a module of the package."""
    module = context / EDITED_MODULE
    module.write_text(module.read_text() + f"\n{marker} = True\n")
