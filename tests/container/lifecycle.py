"""One set of container-test objects per test run, shared by every xdist worker.

The pattern of tests/conftest.py's vLLM server: the first worker that needs an object takes a
file lock in the run's state directory, makes it and records it in a JSON file; the others wait
on the lock and read the file. A failure is recorded too, so the other workers fail (or skip) at
once instead of trying again for minutes. The run's controller removes everything at the end
(tests/conftest.py calls `cleanup`), by the run-id label podman.py puts on every object.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable
from pathlib import Path

from . import podman

IMAGE_TAGS_FILE = "container-image-tags.txt"


def run_id(state_dir: Path) -> str:
    """This run's id: the state directory's unique name (devloop-tests-XXXXXXXX)."""
    return state_dir.name


def shared(state_dir: Path, name: str, make: Callable[[], dict]) -> dict:
    """The state `make` returned for the first worker that asked for `name` in this run."""
    state_file = state_dir / f"{name}.json"
    with open(state_dir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if state_file.is_file():
            return json.loads(state_file.read_text())
        try:
            state = make()
        except Exception as error:
            state_file.write_text(json.dumps({"error": f"{type(error).__name__}: {error}"}))
            raise
        state_file.write_text(json.dumps(state))
        return state


def remember_image_tag(state_dir: Path, tag: str) -> None:
    """A tag this run created, removed again at the end (the layers stay cached)."""
    with open(state_dir / IMAGE_TAGS_FILE, "a") as tags:
        tags.write(tag + "\n")


def cleanup(state_dir: Path) -> None:
    """Remove this run's containers, networks, volumes and image tags, if it made any."""
    tags_file = state_dir / IMAGE_TAGS_FILE
    made_any = tags_file.is_file() or any(state_dir.glob("container-*.json"))
    if not made_any or podman.podman_path() is None:
        return
    podman.remove_run_objects(run_id(state_dir))
    if tags_file.is_file():
        tags = sorted(set(tags_file.read_text().split()))
        if tags:
            podman.run(["rmi", "--force", *tags], check=False)
