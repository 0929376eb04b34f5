"""The podman CLI, as the container tests drive it: build, run, inspect, clean up.

Every object a test run creates carries the label `devloop-test-run=<run id>`, so the run's
controller can remove exactly its own containers, volumes, networks and image tags at the end
(tests/container/lifecycle.py) and never another engineer's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

RUN_LABEL = "devloop-test-run"


class PodmanError(AssertionError):
    """A podman command failed; the message carries its command line and output."""


@dataclass(frozen=True)
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def podman_path() -> str | None:
    return shutil.which("podman")


def run(args: list[str], check: bool = True, timeout: float = 900,
        cwd: Path | None = None, input_bytes: bytes | None = None) -> Result:
    """`podman ARGS`, captured; raises PodmanError with the tail of its output on failure."""
    command = [podman_path() or "podman", *args]
    started = time.monotonic()
    completed = subprocess.run(command, capture_output=True, timeout=timeout, cwd=cwd,
                               input=input_bytes, check=False)
    result = Result(command, completed.returncode,
                    completed.stdout.decode(errors="replace"),
                    completed.stderr.decode(errors="replace"), time.monotonic() - started)
    if check and result.returncode != 0:
        tail = "\n".join(result.output.splitlines()[-40:])
        raise PodmanError(f"`{' '.join(command)}` exited {result.returncode}:\n{tail}")
    return result


def image_exists(ref: str) -> bool:
    return run(["image", "exists", ref], check=False).returncode == 0


def image_id(ref: str) -> str:
    return run(["image", "inspect", "--format", "{{.Id}}", ref]).stdout.strip()


def inspect(ref: str) -> dict:
    return json.loads(run(["inspect", ref]).stdout)[0]


def build_steps(output: str) -> list[tuple[str, bool]]:
    """(instruction, cached) per step of a buildah build log (`STEP n/m: ...`, then
    `--> Using cache <id>` when the step was not run again)."""
    steps: list[tuple[str, bool]] = []
    for line in output.splitlines():
        if line.startswith("STEP "):
            steps.append((line.split(": ", 1)[1], False))
        elif line.startswith("--> Using cache") and steps:
            steps[-1] = (steps[-1][0], True)
    return steps


def logs(container: str, tail: int = 60) -> str:
    result = run(["logs", "--tail", str(tail), container], check=False)
    return result.output


def running(container: str) -> bool:
    result = run(["inspect", "--format", "{{.State.Running}}", container], check=False)
    return result.stdout.strip() == "true"


def remove_run_objects(run_id: str) -> None:
    """Remove the containers, networks, volumes and image tags labelled with this run's id."""
    selector = f"label={RUN_LABEL}={run_id}"
    containers = run(["ps", "-aq", "--filter", selector], check=False).stdout.split()
    if containers:
        run(["rm", "--force", "--time", "5", *containers], check=False)
    for kind in ("network", "volume"):
        names = run([kind, "ls", "-q", "--filter", selector], check=False).stdout.split()
        if names:
            run([kind, "rm", "--force", *names], check=False)
