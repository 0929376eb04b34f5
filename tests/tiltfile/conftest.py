"""The real Tiltfile evaluated once per overlay, with Tilt's API recorded (see tilt_api.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devloop.manifests import kustomize

from .dockerfile import Dockerfile, parse_dockerfile
from .tilt_api import TiltEnvironment
from .tilt_records import Recording, Resource

ROOT = kustomize.project_root(Path(__file__).parent)
TILTFILE = ROOT / "Tiltfile"
DOCKERFILE = ROOT / "image" / "Dockerfile"
OVERLAYS = kustomize.overlay_names(ROOT)
# The CRDs of the kinds the components use, as the real operator installs them.
CRD_FILES = sorted((ROOT / "kustomize" / "crds").rglob("*.yaml"))


def evaluate(**kwargs) -> tuple[TiltEnvironment, Recording]:
    env = TiltEnvironment(TILTFILE, **kwargs)
    return env, env.run()


@pytest.fixture(scope="session")
def tilt_up():
    """`tilt up -- --overlay=NAME` on a bare kind cluster (no CRDs): (recording, resources)."""
    cache: dict[str, tuple[Recording, dict[str, Resource]]] = {}

    def up(overlay: str) -> tuple[Recording, dict[str, Resource]]:
        if overlay not in cache:
            env, rec = evaluate(args=[f"--overlay={overlay}"])
            assert rec.failure is None, f"the Tiltfile failed for overlay {overlay}: {rec.failure}"
            cache[overlay] = (rec, env.assemble())
        return cache[overlay]

    return up


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
    assert DOCKERFILE.is_file(), (
        f"{DOCKERFILE.relative_to(ROOT)} is missing: the Tiltfile builds the image from it"
    )
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
