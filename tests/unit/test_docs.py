"""The README and docs/ stay navigable and true: every relative link and #anchor resolves (with
GitHub's heading slugs), every page under docs/ opens with a contents list of its sections, and
every `devloop ...` command they show names subcommands and flags the real CLI has (walked in
devloop.cli's argparse tree, nested subcommands included)."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from devloop.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks (where a heading or a link is not one)."""
    return FENCE.sub("", text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (github-slugger, as github.com renders READMEs): the
    rendered text lower-cased, every character that is not a letter, digit, space, hyphen or
    underscore dropped, then each space a hyphen. Markdown around the text (code spans, links,
    emphasis) is not part of the rendered text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").replace("**", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a page; repeats get -1, -2 ... as on GitHub."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", prose(path.read_text(encoding="utf-8")),
                              re.MULTILINE):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", prose(path.read_text(encoding="utf-8")))
    return [target for target in LINK.findall(text)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto:


def link_problem(page: Path, target: str) -> str | None:
    """Why a relative link from `page` does not resolve, or None."""
    file_part, _, anchor = target.partition("#")
    resolved = (page.parent / file_part).resolve() if file_part else page
    if not resolved.exists():
        return f"{target}: no file {resolved.relative_to(ROOT) if ROOT in resolved.parents else resolved}"
    if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
        return f"{target}: no heading with anchor #{anchor} in {resolved.name}"
    return None


@pytest.mark.parametrize("heading, slug", [
    ("Check the machine first: `devloop doctor`", "check-the-machine-first-devloop-doctor"),
    ("The engine dies at its first completion: `EngineDeadError`, a worker killed by `SIGILL`",
     "the-engine-dies-at-its-first-completion-enginedeaderror-a-worker-killed-by-sigill"),
    ("`VLLM_PORT 'tcp://…' appears to be a URI`", "vllm_port-tcp-appears-to-be-a-uri"),
    ("The optimized overlay's model: DeepSeek-R1-0528-Qwen3-8B shape, AWQ 4-bit",
     "the-optimized-overlays-model-deepseek-r1-0528-qwen3-8b-shape-awq-4-bit"),
    ("`--reload`: live update without a dropped request", "--reload-live-update-without-a-dropped-request"),
])
def test_slugs_follow_githubs_rules(heading, slug):
    assert github_slug(heading) == slug


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page):
    problems = [problem for target in relative_links(page)
                if (problem := link_problem(page, target))]
    assert problems == []


def test_the_link_checker_catches_a_missing_file_and_a_missing_anchor():
    readme = ROOT / "README.md"
    assert link_problem(readme, "docs/nosuch.md") is not None
    assert "no heading" in link_problem(readme, "docs/gateway.md#nosuch")
    assert "no heading" in link_problem(readme, "#nosuch")
    assert link_problem(readme, "docs/gateway.md#shutdown") is None


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=lambda page: page.name)
def test_every_docs_page_opens_with_a_contents_list_of_its_sections(page):
    text = page.read_text(encoding="utf-8")
    sections = re.findall(r"^## (.+?)\s*$", prose(text), re.MULTILINE)
    assert sections, f"{page.name} has no sections"
    before_first = prose(text).split("\n## ", 1)[0]
    listed = re.findall(r"^- \[[^\]]+\]\(#([^)]+)\)", before_first, re.MULTILINE)
    assert listed == [github_slug(section) for section in sections]


# -- devloop commands against the real argparse tree ---------------------------------------

def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def cli_problems(words: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """What in `devloop WORDS` the CLI does not have: walk down the subcommands while the
    parser has any, and check each --flag against the parser reached at that point. A word
    `a|b|c` in a subcommand's place is a choice of subcommands (prose: `devloop cache
    stats|get|flush`), an upper-case word a placeholder that ends the walk; other words are
    values or positional arguments."""
    problems = []
    path = ["devloop"]
    for word in words:
        children = _subcommands(parser)
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            if flag not in _flags(parser):
                problems.append(f"`{' '.join(path)}` has no flag {flag}")
        elif children and word.isupper():  # a placeholder (`devloop COMMAND --help`)
            return problems
        elif children and not word.startswith("-"):
            names = word.split("|")
            missing = [name for name in names if name not in children]
            if missing:
                problems.append(f"`{' '.join(path)}` has no subcommand {', '.join(missing)}")
                return problems
            parser = children[names[0]]
            path.append(word)
    return problems


def documented_commands(text: str) -> list[list[str]]:
    """Every `devloop ...` command a page shows: each command on a line of a code block (fenced
    or indented) that runs devloop, and each inline code span that starts with one. Comments,
    ` | ` and `&&` end a command; `a|b` inside a word (`\\|` in a table) is a choice."""
    commands = []
    code_lines = [line for block in FENCE.findall(text) for line in block.splitlines()]
    code_lines += [line for line in text.splitlines() if line.startswith("    ")]
    for line in code_lines:
        commands += [match.group(1) for match in
                     re.finditer(r"(?:^|\s|&&\s*|\$\()(?:[\w.$-]*/)*devloop ([^&#\n)]*)", line)]
    for span in re.findall(r"`([^`\n]+)`", FENCE.sub("", text)):
        match = re.match(r"(?:\.venv/bin/)?devloop ([^&#\n]*)", span.replace("\\|", "|"))
        if match:
            commands.append(match.group(1))
    found = []
    for command in commands:
        command = command.split(" | ")[0]
        try:
            words = shlex.split(command)
        except ValueError:  # an unbalanced quote in prose: take the words as written
            words = command.split()
        if words:
            found.append(words)
    return found


def test_commands_are_found_in_code_blocks_tables_and_inline_code():
    text = ("```bash\nflock /tmp/x.lock .venv/bin/devloop serve --port 1 # comment\n```\n"
            "    devloop cache stats --admin-url URL | jq .\n"
            "| `devloop cache stats\\|get` | x |\n"
            "a log line `reload: watching .../devloop for changes` is not a command\n")
    assert documented_commands(text) == [["serve", "--port", "1"],
                                         ["cache", "stats", "--admin-url", "URL"],
                                         ["cache", "stats|get"]]


def test_every_documented_devloop_command_exists_in_the_cli():
    parser = build_parser()
    problems = []
    count = 0
    for page in PAGES:
        for words in documented_commands(page.read_text(encoding="utf-8")):
            count += 1
            problems += [f"{page.name}: {p}" for p in cli_problems(words, parser)]
    assert count > 50, "the pages show far fewer devloop commands than they do"
    assert problems == []


def test_nested_subcommands_and_their_flags_are_checked():
    parser = build_parser()
    assert cli_problems(["cache", "stats", "--admin-url", "http://x"], parser) == []
    assert cli_problems(["cache", "stats|get|flush"], parser) == []
    assert cli_problems(["cache", "stats", "--nosuch"], parser) == ["`devloop cache stats` has no flag --nosuch"]
    assert cli_problems(["cache", "statz"], parser) == ["`devloop cache` has no subcommand statz"]
    assert cli_problems(["serve", "--overlay", "dev", "--set", "A=1"], parser) == []
    assert cli_problems(["nosuch"], parser) == ["`devloop` has no subcommand nosuch"]
    assert cli_problems(["COMMAND", "--help"], parser) == []
    # A flag of another subcommand is not this one's.
    assert cli_problems(["health", "--overlay", "dev"], parser) == ["`devloop health` has no flag --overlay"]
