"""checkov's Kubernetes checks over the rendered overlays: what hand-written policy misses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from devloop.manifests import kustomize

from .conftest import NESTED_TARGETS, OVERLAYS, ROOT, write_kustomization

CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"
SKIPS = yaml.safe_load((Path(__file__).parent / "checkov-skips.yaml").read_text())


def reason(skip: str | dict) -> str:
    return skip if isinstance(skip, str) else skip["reason"]


def skipped(check: str, resource: str) -> bool:
    """A skip is a reason (any resource) or a reason limited to a list of resources."""
    skip = SKIPS.get(check)
    return skip is not None and (isinstance(skip, str) or resource in skip["resources"])


@pytest.fixture(scope="module")
def findings(tmp_path_factory) -> dict[str, set[str]]:
    """check id -> the resources failing it, over every overlay, from one checkov run."""
    if not CHECKOV.is_file():
        pytest.fail(f"{CHECKOV} is missing: run `bash scripts/bootstrap.sh`")
    workdir = tmp_path_factory.mktemp("checkov")
    args = [str(CHECKOV), "--framework", "kubernetes", "--skip-download", "--quiet", "--compact",
            "--output", "json"]
    for overlay in OVERLAYS:
        path = workdir / f"{overlay}.yaml"
        path.write_text(kustomize.render_overlay(overlay, ROOT))
        args += ["--file", str(path)]
    # The components no overlay carries (the InferencePool variant of the route), in a namespace
    # of their own as an overlay would put them.
    for number, target in enumerate(NESTED_TARGETS):
        slug = f"component-set-{number}"
        kustomization = write_kustomization(workdir / slug, tuple(target.split("+")[1:]))
        with (kustomization / "kustomization.yaml").open("a", encoding="utf-8") as file:
            file.write(f"namespace: {slug}\n")
        path = workdir / f"{slug}.yaml"
        path.write_text(kustomize.render(kustomization))
        args += ["--file", str(path)]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    reports = json.loads(result.stdout)
    failed: dict[str, set[str]] = {}
    for report in reports if isinstance(reports, list) else [reports]:
        for check in report["results"]["failed_checks"]:
            failed.setdefault(check["check_id"], set()).add(check["resource"])
    assert result.returncode in (0, 1), result.stderr  # 1 means "some check failed"
    return failed


def test_checkov_finds_nothing_beyond_the_documented_skips(findings):
    unexplained = {
        check: sorted(resource for resource in resources if not skipped(check, resource))
        for check, resources in findings.items()
    }
    assert {check: resources for check, resources in unexplained.items() if resources} == {}


def test_every_documented_skip_still_occurs(findings):
    assert sorted(set(SKIPS) - set(findings)) == []


def test_every_skip_gives_a_reason():
    assert all(len(reason(skip)) > 80 for skip in SKIPS.values())
