"""The subsystems import only downward (scripts/devloop/README.md): the layers contract in
pyproject.toml, checked by the real `lint-imports` (import-linter), and the README's drawing of it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "scripts" / "devloop"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(package_parent: Path | None = None) -> subprocess.CompletedProcess:
    """`lint-imports` with the project's contract, on the package under `package_parent`
    (default: the checkout's own scripts/)."""
    if not LINT_IMPORTS.is_file():
        pytest.fail(f"{LINT_IMPORTS} is missing: run `bash scripts/bootstrap.sh` (import-linter)")
    env = dict(os.environ, PYTHONPATH=str(package_parent or ROOT / "scripts"))
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def contract_layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = config["tool"]["importlinter"]["contracts"]
    return contract["layers"]


def test_subsystems_import_only_downward():
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "upward_import", "message"), [
    ("engine/cpus.py", "from devloop.gateway import config",
     "devloop.engine is not allowed to import devloop.gateway"),
    ("common/ports.py", "import devloop.manifests.kustomize",
     "devloop.common is not allowed to import devloop.manifests"),
    ("bench/stats.py", "from devloop.ops.doctor import facts",
     "devloop.bench is not allowed to import devloop.ops"),
])
def test_an_upward_or_sideways_import_breaks_the_contract(tmp_path, module, upward_import,
                                                           message):
    copy = tmp_path / "devloop"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / module, "a", encoding="utf-8") as source:
        source.write(f"\n{upward_import}\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert message in result.stdout


def test_a_new_subpackage_must_be_placed_in_a_layer(tmp_path):
    copy = tmp_path / "devloop"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "newthing").mkdir()
    (copy / "newthing" / "__init__.py").write_text("")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "devloop.newthing" in result.stdout


def test_the_readme_draws_the_contracts_layers_in_order():
    readme = (PACKAGE / "README.md").read_text(encoding="utf-8")
    drawing = re.search(r"^```\n(.*?)^```", readme, re.MULTILINE | re.DOTALL).group(1)
    rows = [line.split("  ")[0].strip() for line in drawing.splitlines()
            if line.strip() and line.strip() != "|"]
    assert rows == contract_layers()


def test_every_subpackage_is_a_layer_and_the_top_level_is_only_the_wiring():
    layers = {name.strip() for row in contract_layers() for name in row.split("|")}
    subpackages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert subpackages == layers - {"cli"}
    modules = {path.name for path in PACKAGE.glob("*.py")}
    assert modules == {"__init__.py", "__main__.py", "cli.py"}
