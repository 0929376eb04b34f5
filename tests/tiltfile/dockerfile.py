"""Just enough of a Dockerfile reader to know where the image puts each file of the context:
stages, WORKDIR, USER, and COPY/ADD with their flags (continuation lines, JSON form)."""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass, field


@dataclass
class Copy:
    sources: list[str]
    dest: str  # absolute, WORKDIR applied; ends with "/" when written as a directory
    chown: str = ""
    from_stage: str = ""
    stage: int = 0


@dataclass
class Stage:
    base: str
    name: str = ""
    user: str = ""
    workdir: str = "/"
    runs: list[str] = field(default_factory=list)


@dataclass
class Dockerfile:
    stages: list[Stage]
    copies: list[Copy]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def context_sources(self) -> list[str]:
        """Every path of the build context some COPY/ADD reads."""
        return [s for c in self.copies if not c.from_stage for s in c.sources]

    def destination(self, source: str, is_dir: bool) -> tuple[str, Copy] | None:
        """Where the final image holds context path `source` (relative, no ./), from the last
        COPY that writes it. Docker copies a directory's contents to dest; a file goes to dest,
        or under it when dest ends in / or the COPY has several sources."""
        source = posixpath.normpath(source).strip("/")
        found = None
        for copy in self.copies:
            if copy.from_stage:
                continue
            for raw in copy.sources:
                src = posixpath.normpath(raw).strip("/") or "."
                dest = copy.dest.rstrip("/") or "/"
                into_dir = copy.dest.endswith("/") or len(copy.sources) > 1
                if src == source:
                    target = posixpath.join(dest, posixpath.basename(src)) if into_dir and not is_dir else dest
                elif src == ".":
                    target = posixpath.join(dest, source)
                elif source.startswith(src + "/"):
                    target = posixpath.join(dest, posixpath.relpath(source, src))
                else:
                    continue
                found = (posixpath.normpath(target), copy)
        if found is None:
            return None
        # A later stage may take the path over from the stage that copied it.
        path, copy = found
        if copy.stage != len(self.stages) - 1:
            stage_name = self.stages[copy.stage].name or str(copy.stage)
            for later in self.copies:
                if later.from_stage == stage_name and any(
                    posixpath.normpath(s) in (path, posixpath.dirname(path)) or path.startswith(posixpath.normpath(s) + "/")
                    for s in later.sources
                ):
                    return path, later
            return None
        return found


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker too
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse_dockerfile(text: str) -> Dockerfile:
    stages: list[Stage] = []
    copies: list[Copy] = []
    args: dict[str, str] = {}
    for line in _logical_lines(text):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        rest = rest.strip()
        if instruction == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
        elif instruction == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            continue
        elif instruction == "WORKDIR":
            stage = stages[-1]
            stage.workdir = posixpath.normpath(posixpath.join(stage.workdir, _expand(rest, args)))
        elif instruction == "USER":
            stages[-1].user = rest
        elif instruction == "RUN":
            stages[-1].runs.append(rest)
        elif instruction in ("COPY", "ADD"):
            flags: dict[str, str] = {}
            body = rest
            while body.startswith("--"):
                flag, _, body = body.partition(" ")
                key, _, value = flag[2:].partition("=")
                flags[key] = value
                body = body.strip()
            words = json.loads(body) if body.startswith("[") else shlex.split(body)
            words = [_expand(w, args) for w in words]
            *sources, dest = words
            stage = stages[-1]
            absolute = dest if dest.startswith("/") else posixpath.join(stage.workdir, dest)
            if dest.endswith("/") and not absolute.endswith("/"):
                absolute += "/"
            copies.append(Copy(sources=sources, dest=absolute, chown=flags.get("chown", ""),
                               from_stage=flags.get("from", ""), stage=len(stages) - 1))
    return Dockerfile(stages=stages, copies=copies)


def _expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)
