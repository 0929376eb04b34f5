"""yamllint over every YAML file of the Kustomize tree (the vendored CRD excepted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devloop.manifests import kustomize

from .conftest import ROOT

CONFIG = Path(__file__).parent / "yamllint.yaml"


def test_kustomize_tree_passes_yamllint():
    files = [str(path) for path in sorted((ROOT / kustomize.KUSTOMIZE_DIR).rglob("*.yaml"))
             if "crds" not in path.parts]
    assert len(files) > 20
    result = subprocess.run([sys.executable, "-m", "yamllint", "--strict", "-c", str(CONFIG), *files],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_yamllint_catches_a_broken_indent(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a:\n  b: 1\n   c: 2\n")
    result = subprocess.run([sys.executable, "-m", "yamllint", "--strict", "-c", str(CONFIG), str(bad)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "bad.yaml" in result.stdout
