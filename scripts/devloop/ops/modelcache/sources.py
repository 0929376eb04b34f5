"""Where a model-cache backup reads from: a directory on this machine, or the engine pod's volume
through `kubectl exec` (listed with the image's python3, read with `cat`)."""

from __future__ import annotations

import io
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from devloop.common.errors import DevloopError, UsageError

DEFAULT_NAMESPACE = "vllm-dev"
DEFAULT_SELECTOR = "app.kubernetes.io/name=llm-engine"
DEFAULT_CONTAINER = "vllm"
DEFAULT_POD_PATH = "/models"


@dataclass(frozen=True)
class Entry:
    """One thing in the cache: a regular file (size, mtime) or a symlink (target)."""

    path: str  # relative, '/'-separated
    size: int = 0
    mtime: float = 0.0
    link: str | None = None



class Source(Protocol):
    """Where a backup reads from."""

    description: str

    def entries(self) -> list[Entry]: ...

    def open(self, path: str) -> BinaryIO: ...


def safe_relative(path: str) -> str:
    """`path` if it is relative and stays inside its root; a listing or manifest that names
    `../x` or `/etc/x` would otherwise write outside the target."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or path != pure.as_posix():
        raise DevloopError(f"refusing unsafe path {path!r} (absolute, '..' or not normalised)")
    return path


class LocalSource:
    """A directory on this machine (the volume's contents, or a copy of them)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.description = f"dir:{self.root.resolve()}"
        if not self.root.is_dir():
            raise UsageError(f"{self.root}: no such directory")

    def entries(self) -> list[Entry]:
        found = []
        for directory, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            base = Path(directory)
            # A symlink to a directory is listed in dirnames; os.walk does not descend into it.
            for name in sorted(filenames) + [d for d in dirnames if (base / d).is_symlink()]:
                full = base / name
                rel = full.relative_to(self.root).as_posix()
                info = full.lstat()
                if full.is_symlink():
                    found.append(Entry(rel, link=os.readlink(full)))
                elif full.is_file():
                    found.append(Entry(rel, size=info.st_size, mtime=info.st_mtime))
        return sorted(found, key=lambda entry: entry.path)

    def open(self, path: str) -> BinaryIO:
        return open(self.root / safe_relative(path), "rb")


# Runs in the pod with the image's python3 (the engine image has it; busybox find has no -printf).
_LIST_SCRIPT = r"""
import json, os, sys
root = sys.argv[1]
for directory, dirs, files in os.walk(root):
    for name in files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
        full = os.path.join(directory, name)
        rel = os.path.relpath(full, root)
        st = os.lstat(full)
        if os.path.islink(full):
            print(json.dumps({"path": rel, "link": os.readlink(full)}))
        elif os.path.isfile(full):
            print(json.dumps({"path": rel, "size": st.st_size, "mtime": st.st_mtime}))
"""


@dataclass
class Pod:
    """A container in a pod, reached with `kubectl exec` (the engine's by default)."""

    namespace: str = DEFAULT_NAMESPACE
    name: str | None = None  # None: the first pod matching `selector`
    container: str = DEFAULT_CONTAINER
    path: str = DEFAULT_POD_PATH
    kubectl: str = "kubectl"
    selector: str = DEFAULT_SELECTOR

    def resolve(self) -> str:
        if self.name:
            return self.name
        out = self._run(["get", "pods", "-l", self.selector, "--field-selector=status.phase=Running",
                         "-o", "jsonpath={.items[*].metadata.name}"], exec_in_pod=False)
        names = out.decode().split()
        if not names:
            raise DevloopError(
                f"no running pod matches {self.selector} in namespace {self.namespace}: deploy the "
                "overlay first (`tilt up` or `kubectl apply -k`), or name one with --pod"
            )
        self.name = names[0]
        return self.name

    def exec_argv(self, command: list[str], stdin: bool = False) -> list[str]:
        return [self.kubectl, "exec", *(["-i"] if stdin else []), "-n", self.namespace,
                self.resolve(), "-c", self.container, "--", *command]

    def _run(self, args: list[str], exec_in_pod: bool = True, stdin: bytes | None = None) -> bytes:
        argv = self.exec_argv(args, stdin is not None) if exec_in_pod else [
            self.kubectl, "-n", self.namespace, *args]
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, check=False)
        except FileNotFoundError:
            raise DevloopError(f"{self.kubectl} not found: install kubectl") from None
        if done.returncode != 0:
            raise DevloopError(f"`{' '.join(argv)}` failed: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout

    def run(self, command: list[str], stdin: bytes | None = None) -> bytes:
        return self._run(command, stdin=stdin)


class PodSource:
    """The volume as the engine pod sees it."""

    def __init__(self, pod: Pod) -> None:
        self.pod = pod
        self.description = f"pod:{pod.namespace}/{pod.resolve()}:{pod.path}"

    def entries(self) -> list[Entry]:
        out = self.pod.run(["python3", "-c", _LIST_SCRIPT, self.pod.path])
        found = [Entry(**json.loads(line)) for line in out.decode().splitlines() if line.strip()]
        return sorted(found, key=lambda entry: entry.path)

    def open(self, path: str) -> BinaryIO:
        argv = self.pod.exec_argv(["cat", f"{self.pod.path.rstrip('/')}/{safe_relative(path)}"])
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return _ProcessReader(process, argv)


class _ProcessReader(io.RawIOBase):
    """A subprocess's stdout as a file; closing it checks the exit code."""

    def __init__(self, process: subprocess.Popen, argv: list[str]) -> None:
        self.process, self.argv = process, argv

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.process.stdout.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self.process.stdout.close()
        code = self.process.wait()
        if code != 0:
            error = self.process.stderr.read().decode(errors="replace").strip()
            raise DevloopError(f"`{' '.join(self.argv)}` failed ({code}): {error}")


# -- backup ------------------------------------------------------------------------------------

