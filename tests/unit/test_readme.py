"""The README's commands stay true: they parse with the real CLI, and its render commands run."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from devloop.cli import build_parser
from devloop.manifests import kustomize

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def first_block() -> list[str]:
    match = re.search(r"```bash\n(.*?)```", README, re.DOTALL)
    assert match, "README.md has no bash block"
    return match.group(1).strip().splitlines()


def test_readme_opens_with_the_setup_and_test_commands():
    assert README.index("```bash") < README.index("\n## ")  # before any section
    setup_and_run, tests = first_block()
    assert setup_and_run.startswith("bash scripts/bootstrap.sh && .venv/bin/devloop ")
    assert tests == ".venv/bin/python -m pytest -n auto"


def devloop_invocations() -> list[list[str]]:
    """Every `devloop ...` command written in a README code block or inline code span."""
    found = []
    for line in re.findall(r"(?:^|`|&& )(?:\.venv/bin/)?(devloop [^`\n|&]+)", README, re.MULTILINE):
        found.append(shlex.split(line, comments=True)[1:])
    return found


def test_every_devloop_command_in_the_readme_parses():
    invocations = devloop_invocations()
    assert invocations, "the README shows no devloop command"
    parser = build_parser()
    for argv in invocations:
        if argv[-1] in ("NAME", "OVERLAY"):  # a placeholder in prose
            argv = argv[:-1] + ["dev"]
        try:
            parser.parse_args(argv)
        except SystemExit as exit_:
            pytest.fail(f"`devloop {' '.join(argv)}` from README.md does not parse (exit {exit_.code})")


@pytest.mark.parametrize("path", sorted(set(re.findall(r"kubectl kustomize (kustomize/overlays/\w+)", README))))
def test_readme_render_commands_run(path):
    result = subprocess.run([kustomize.kubectl_path(), "kustomize", path], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "kind: Deployment" in result.stdout
