"""The GitHub Actions workflow: actionlint-clean (with shellcheck over its scripts), yamllint-clean,
and doing what the README promises: lint, the README's tests after bootstrap.sh, the two-arch
image pushed only on tags, and `tilt ci` on kind only when asked for."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def tool(name: str) -> str:
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: run `bash scripts/bootstrap.sh` (the [test] extra installs it)")
    return found


def actionlint(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("actionlint"), "-no-color", "-shellcheck", tool("shellcheck"),
         str(repo / ".github" / "workflows" / "ci.yml")],
        cwd=repo, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def test_workflow_passes_actionlint():
    result = actionlint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


BREAKAGES = {
    "a job that needs a job that does not exist": ("    needs: lint\n", "    needs: lnit\n", "lnit"),
    "an input build-push-action does not have": ("          file: image/Dockerfile\n",
                                                  "          dockerfile: image/Dockerfile\n", "dockerfile"),
    "an expression naming a step that does not exist": ("steps.meta.outputs.tags", "steps.metta.outputs.tags",
                                                        "metta"),
    "a shell script bug": ("run: hadolint image/Dockerfile", "run: hadolint $DOCKERFILES", "SC2086"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_actionlint_fails_a_broken_copy(tmp_path, breakage):
    old, new, expected = BREAKAGES[breakage]
    text = WORKFLOW.read_text(encoding="utf-8")
    assert old in text, f"the workflow no longer contains {old!r}: update this test"
    broken = tmp_path / ".github" / "workflows" / "ci.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    result = actionlint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stdout


def test_workflow_passes_yamllint():
    config = ROOT / "tests" / "manifests" / "yamllint.yaml"
    result = subprocess.run([sys.executable, "-m", "yamllint", "--strict", "-c", str(config), str(WORKFLOW)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def run_lines(job: dict) -> list[str]:
    return [line.strip() for step in job["steps"] for line in step.get("run", "").splitlines()]


def test_jobs_are_lint_test_image_and_tilt_ci(workflow):
    assert set(workflow["jobs"]) == {"lint", "test", "image", "tilt-ci"}


def test_lint_runs_every_linter(workflow):
    commands = " ".join(run_lines(workflow["jobs"]["lint"]))
    for linter in ("yamllint", "hadolint image/Dockerfile", "ruff check", "actionlint"):
        assert linter in commands


def readme_test_command() -> str:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL).group(1)
    return block.strip().splitlines()[1]


def test_test_job_bootstraps_then_runs_the_readmes_test_command(workflow):
    assert run_lines(workflow["jobs"]["test"]) == ["bash scripts/bootstrap.sh", readme_test_command()]


def test_venv_cache_is_keyed_on_every_input_of_bootstrap(workflow):
    cache = next(step for step in workflow["jobs"]["test"]["steps"]
                 if step.get("uses", "").startswith("actions/cache@"))
    assert ".venv" in cache["with"]["path"]
    for path in ("pyproject.toml", "scripts/constraints-vllm.txt", "scripts/bootstrap.sh"):
        assert (ROOT / path).is_file() and f"'{path}'" in cache["with"]["key"]


def test_image_is_built_for_both_architectures_and_pushed_only_on_tags(workflow):
    job = workflow["jobs"]["image"]
    uses = [step.get("uses", "") for step in job["steps"]]
    for action in ("docker/setup-qemu-action@", "docker/setup-buildx-action@", "docker/build-push-action@"):
        assert any(u.startswith(action) for u in uses), action
    build = next(step for step in job["steps"] if step.get("uses", "").startswith("docker/build-push-action@"))
    assert build["with"]["file"] == "image/Dockerfile" and (ROOT / build["with"]["file"]).is_file()
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["with"]["push"] == "${{ startsWith(github.ref, 'refs/tags/') }}"
    login = next(step for step in job["steps"] if step.get("uses", "").startswith("docker/login-action@"))
    assert login["if"] == "startsWith(github.ref, 'refs/tags/')" and login["with"]["registry"] == "ghcr.io"


def test_tilt_ci_runs_only_by_hand_or_with_the_label(workflow):
    job = workflow["jobs"]["tilt-ci"]
    assert "workflow_dispatch" in job["if"] and "'tilt-ci'" in job["if"]
    assert "labeled" in workflow[True]["pull_request"]["types"]  # PyYAML reads the `on` key as True
    assert any(step.get("uses", "").startswith("helm/kind-action@") for step in job["steps"])
    assert "tilt ci --timeout 30m -- --model=tiny" in run_lines(job), "no model download in CI"


def test_every_action_is_pinned_to_a_major_version_or_a_commit(workflow):
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+(\.\d+)*|[0-9a-f]{40})", step["uses"]), (name, step)
