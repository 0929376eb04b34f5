"""image/Dockerfile built for real with podman/buildah, as users and Tilt build it.

The run's build (conftest.py) is a user's `podman build -f image/Dockerfile -t ... .` with no
build argument. Rebuilds here run with `--network=none`: a step that ran again would need the
package index and fail, so "it built" proves "from cache, offline".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from . import lifecycle, podman
from .context import ROOT, TILT_LABELS, copy_context, edit_code

pytestmark = pytest.mark.container


def _rebuild(context: Path, tag: str, *extra: str) -> podman.Result:
    return podman.run(["build", "--network=none", *extra, "-f", str(context / "image" / "Dockerfile"),
                       "-t", tag, str(context)], timeout=900)


def _not_cached(result: podman.Result) -> list[str]:
    steps = podman.build_steps(result.output)
    assert steps, f"no build steps in the output:\n{result.output[-2000:]}"
    return [instruction for instruction, cached in steps if not cached
            and not instruction.startswith("FROM ")]


def test_image_builds_with_no_build_argument_and_runs_as_the_pods_user(built_image):
    config = podman.inspect(built_image["image"])["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["devloop", "entrypoint"]
    env = dict(item.split("=", 1) for item in config["Env"])
    # Inherited from the vLLM CPU base: its venv first on PATH and its allocator preloads.
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert "libtcmalloc_minimal.so.4" in env["LD_PRELOAD"]
    assert env["HOME"] == "/tmp" and env["HF_HOME"] == "/models/huggingface"


def test_a_second_build_with_no_change_is_all_cache_hits_offline(built_image, state_dir):
    tag = built_image["image"] + "-again"
    lifecycle.remember_image_tag(state_dir, tag)
    result = _rebuild(ROOT, tag)
    assert _not_cached(result) == [], result.output[-3000:]
    assert podman.image_id(tag) == built_image["image_id"]


def test_labels_like_tilts_keep_every_step_cached(built_image, state_dir):
    """buildah appends --label as a last LABEL step; the Dockerfile's steps stay cached, and a
    repeat with the same labels (Tilt passes the same two every time) is one image ID."""
    tag = built_image["image"] + "-labelled"
    lifecycle.remember_image_tag(state_dir, tag)
    labels = [f"--label={label}" for label in ["x=y", *TILT_LABELS]]
    first = _rebuild(ROOT, tag, *labels)
    assert [step for step in _not_cached(first) if not step.startswith("LABEL ")] == [], (
        first.output[-3000:])
    first_id = podman.image_id(tag)
    second = _rebuild(ROOT, tag, *labels)
    assert _not_cached(second) == [], second.output[-3000:]
    assert podman.image_id(tag) == first_id
    assert podman.inspect(tag)["Config"]["Labels"]["x"] == "y"


@pytest.fixture
def edited_context(tmp_path: Path) -> Path:
    """A copy of the build context with one module of the package changed."""
    context = copy_context(tmp_path)
    edit_code(context, "EDITED_BY_THE_CONTAINER_TEST")
    return context


def test_a_code_change_rebuilds_only_the_code_layers_offline(built_image, state_dir,
                                                            edited_context):
    tag = built_image["image"] + "-edited"
    lifecycle.remember_image_tag(state_dir, tag)
    result = _rebuild(edited_context, tag)
    rebuilt = _not_cached(result)
    assert rebuilt and rebuilt[0].startswith("COPY ") and "scripts" in rebuilt[0], rebuilt
    assert not any(step.startswith("RUN ") for step in rebuilt), rebuilt
    check = podman.run(["run", "--rm", "--network=none", "--entrypoint=python3", tag, "-c",
                        "import devloop.engine.health as h; print(h.EDITED_BY_THE_CONTAINER_TEST)"])
    assert check.stdout.strip() == "True"
