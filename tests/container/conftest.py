"""Fixtures of the container tests: the image built once per run, and the dev overlay's pods.

Every test module here sets the `container` marker. Where podman is missing or cannot run a
container the tests skip with the reason, except under .ci/run, which installs and configures
podman (.ci/container-engine.sh) and sets DEVLOOP_REQUIRE_CONTAINER_TESTS=1: there a broken
engine fails them instead, so CI can never pass by skipping them. These tests drive podman (the engine Debian 12 ships; also behind
Podman Desktop); Docker's builders are covered by the GitHub workflow's buildx job.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import STATE_DIR_ENV

from . import lifecycle, local_images, podman, stack
from .context import DOCKERFILE, ROOT
from .hostpip import build_volumes

IMAGE_REPOSITORY = "localhost/vllm-devloop"


REQUIRE_ENV = "DEVLOOP_REQUIRE_CONTAINER_TESTS"


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 (CI) but the container tests cannot run: {reason}",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def state_dir() -> Path:
    return Path(os.environ[STATE_DIR_ENV])


def _prepare(state_dir: Path) -> dict:
    """Images in place, podman able to run them, image/Dockerfile built: the run's state."""
    if podman.podman_path() is None:
        return {"skip": "podman is not installed (Debian: `bash .ci/container-engine.sh` "
                        "installs and configures it as CI does)"}
    try:
        base, redis = local_images.ensure_images()
    except Exception as error:  # noqa: BLE001 - any setup failure is the reason to report
        return {"skip": f"could not make the base images: {error}"}
    why_not = local_images.probe_runtime(base)
    if why_not:
        return {"skip": f"podman cannot run a container here: {why_not} "
                        "(.ci/container-engine.sh sets the runtime and ulimits CI needs)"}
    tag = f"{IMAGE_REPOSITORY}:test-{lifecycle.run_id(state_dir)}"
    lifecycle.remember_image_tag(state_dir, tag)
    # Exactly a user's command (no --build-arg, no --platform); the host's pip configuration is
    # lent only for the dependency layer's downloads behind this machine's proxy.
    build = podman.run(["build", *build_volumes(), "-f", str(DOCKERFILE), "-t", tag, str(ROOT)],
                       timeout=1800)
    return {"base": base, "redis": redis, "image": tag, "image_id": podman.image_id(tag),
            "build_output": build.output}


@pytest.fixture(scope="session")
def built_image(state_dir: Path) -> dict:
    """image/Dockerfile built once per run: {"image", "image_id", "base", "redis", ...}."""
    state = lifecycle.shared(state_dir, "container-image", lambda: _prepare(state_dir))
    if "skip" in state:
        _unavailable(state["skip"])
    if "error" in state:
        pytest.fail(state["error"], pytrace=False)
    return state


@pytest.fixture(scope="session")
def dev_stack(state_dir: Path, built_image: dict) -> stack.Stack:
    """The dev overlay's Redis, engine (tiny model) and gateway, started once per run."""
    state = lifecycle.shared(
        state_dir, "container-stack",
        lambda: stack.start(built_image["image"], built_image["redis"],
                            lifecycle.run_id(state_dir)).as_dict(),
    )
    if "error" in state:
        pytest.fail(state["error"], pytrace=False)
    return stack.Stack(**state)
