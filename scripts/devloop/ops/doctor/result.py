"""What one check of `devloop doctor` finds: a status and, for a warning or failure, the fix."""

from __future__ import annotations

from dataclasses import dataclass

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str          # pass, warn, fail, skip (skip: a check it depends on failed)
    summary: str
    fix: str = ""
