"""The llamacpp component's pod, as a container: a local stand-in of llama.cpp's server image
(images/llamacpp-server.Containerfile, built from the llama-server built here) run with what the
Deployment gives it: its command (the AMX shell), the rendered ConfigMap as the environment, a
read-only root, uid 10001, no capabilities, /tmp and /models writable. It must answer /health,
/metrics and a completion on the tiny GGUF, and log the AMX line on an AMX CPU."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest
import requests

from devloop.common.ports import free_port
from devloop.engine.llamacpp import amx, binary, gguf
from devloop.manifests import kustomize

from . import local_images, podman
from .conftest import _unavailable

pytestmark = [pytest.mark.container, pytest.mark.llamacpp]

IMAGE = "localhost/devloop-test-llamacpp-server:b11312"
CONTAINERFILE = Path(__file__).parent / "images" / "llamacpp-server.Containerfile"


def _pod(overlay: str = "gguf") -> tuple[dict, dict[str, str]]:
    objects = kustomize.load_objects(kustomize.render_overlay(overlay))
    engine = kustomize.find_object(objects, "Deployment", "llm-llamacpp")
    container = engine["spec"]["template"]["spec"]["containers"][0]
    configmap = next(obj for obj in objects if obj["kind"] == "ConfigMap"
                     and obj["metadata"]["name"].startswith("llm-llamacpp-config"))
    return container, dict(configmap["data"])


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    if podman.podman_path() is None:
        _unavailable("podman is not installed")
    missing = binary.available()
    if missing:
        _unavailable(missing)
    if not podman.image_exists(local_images.ROOTFS_IMAGE):
        local_images.ensure_images()
    context = tmp_path_factory.mktemp("llamacpp-image")
    server = binary.find_server()
    for item in server.parent.iterdir():
        if item.name in ("llama-server",) or ".so" in item.name:
            shutil.copy2(item, context / item.name, follow_symlinks=True)
    podman.run(["build", "--build-arg", f"ROOTFS={local_images.ROOTFS_IMAGE}",
                "-f", str(CONTAINERFILE), "-t", IMAGE, str(context)], timeout=1800)
    return IMAGE


def test_the_component_pod_serves_the_tiny_gguf_as_the_deployment_runs_it(image, tmp_path):
    container, settings = _pod()
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(gguf.tiny_gguf("q8_0"), models / "tiny.gguf")
    models.chmod(0o777)
    port = free_port()
    settings = {**settings, "LLAMA_ARG_MODEL": "/models/tiny.gguf", "LLAMA_ARG_HF_REPO": "",
                "LLAMA_ARG_ALIAS": "tiny", "LLAMA_ARG_OFFLINE": "true", "LLAMA_ARG_CTX_SIZE": "1024"}
    name = f"devloop-llamacpp-{uuid.uuid4().hex[:8]}"
    env_args = [arg for key, value in settings.items() for arg in ("-e", f"{key}={value}")]
    command = container["command"]
    podman.run(["run", "-d", "--name", name, "--read-only", "--user", "10001:10001",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "--tmpfs", "/tmp", "-v", f"{models}:/models", "-p", f"127.0.0.1:{port}:8000",
                *env_args, "--entrypoint", command[0], image, *command[1:]])
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert podman.running(name), podman.logs(name)
            time.sleep(0.5)
        response = requests.post(f"{url}/v1/completions", timeout=60,
                                 json={"prompt": "Hello", "max_tokens": 8})
        assert response.status_code == 200, podman.logs(name)
        assert response.json()["model"] == "tiny"
        assert "llamacpp:requests_processing" in requests.get(f"{url}/metrics", timeout=10).text
        if amx.has_amx_tiles():
            assert "weight repacking is off (LLAMA_ARG_REPACK=false" in podman.logs(name)
    finally:
        podman.run(["rm", "-f", name], check=False)
