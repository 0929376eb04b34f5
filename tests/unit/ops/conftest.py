"""Fixtures shared by the unit tests of `devloop doctor` (tests/unit/ops: test_doctor.py, test_doctor_tilt.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devloop.manifests import kustomize

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """Every overlay's objects, as `kubectl kustomize` renders them."""
    return {name: kustomize.load_objects(kustomize.render_overlay(name, ROOT))
            for name in kustomize.overlay_names(ROOT)}
