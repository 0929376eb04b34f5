"""The README's commands stay true: it opens with the two commands `.ci/run` reads, and the
commands of the README and of docs/ (where its long sections moved) parse with the real CLI, and
their render commands run."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from devloop.cli import build_parser
from devloop.manifests import kustomize

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# The README and the pages it links to under docs/, as one text for the command checks.
PAGES = "\n".join([README, *(page.read_text(encoding="utf-8")
                             for page in sorted((ROOT / "docs").glob("*.md")))])


def first_block() -> list[str]:
    match = re.search(r"```bash\n(.*?)```", README, re.DOTALL)
    assert match, "README.md has no bash block"
    return match.group(1).strip().splitlines()


def test_readme_opens_with_the_setup_and_test_commands():
    assert README.index("```bash") < README.index("\n## ")  # before any section
    setup_and_run, tests = first_block()
    assert setup_and_run.startswith("bash scripts/bootstrap.sh && .venv/bin/devloop ")
    assert tests == ".venv/bin/python -m pytest -n auto"


def test_ci_reads_the_same_two_commands():
    """`.ci/run`'s own awk program over the README yields exactly the block's two lines."""
    program = re.search(r"awk '([^']+)' README\.md", (ROOT / ".ci" / "run").read_text()).group(1)
    result = subprocess.run(["awk", program, "README.md"], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.splitlines() == first_block()


def devloop_invocations() -> list[list[str]]:
    """Every `devloop ...` command written in a code block or inline code span of the README
    or docs/."""
    found = []
    text = PAGES.replace("\\|", "|")  # a `|` inside a table cell is written `\|`
    text = re.sub(r"\\\n\s*", " ", text)  # a shell line continued with `\` is one command
    for line in re.findall(r"(?:^|`|&& )(?:\.venv/bin/)?(devloop [^`\n|&]+)", text, re.MULTILINE):
        found.append(shlex.split(line, comments=True)[1:])
    return found


def names_a_command(argv: list[str], parser: argparse.ArgumentParser) -> bool:
    """True when argv is only subcommand names (`bench`, `cache stats`): a command named in a
    table or in prose, not an invocation, so its required arguments are not given
    (tests/unit/test_docs.py checks that it exists)."""
    for word in argv:
        choices = next((action.choices for action in parser._actions
                        if isinstance(action, argparse._SubParsersAction)), None)
        if not choices or word not in choices:
            return False
        parser = choices[word]
    return True


def test_every_devloop_command_in_the_readme_and_docs_parses():
    invocations = devloop_invocations()
    assert invocations, "the README and docs/ show no devloop command"
    parser = build_parser()
    for argv in invocations:
        if argv[-1] in ("NAME", "OVERLAY"):  # a placeholder in prose
            argv = argv[:-1] + ["dev"]
        if names_a_command(argv, parser):
            continue
        try:
            parser.parse_args(argv)
        except SystemExit as exit_:
            pytest.fail(f"`devloop {' '.join(argv)}` from README.md or docs/ does not parse "
                        f"(exit {exit_.code})")


@pytest.mark.parametrize("path", sorted(set(re.findall(r"kubectl kustomize (kustomize/overlays/\w+)", PAGES))))
def test_readme_render_commands_run(path):
    result = subprocess.run([kustomize.kubectl_path(), "kustomize", path], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "kind: Deployment" in result.stdout
