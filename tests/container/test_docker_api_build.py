"""Tilt with a podman socket: the Docker Engine API build, as Tilt sends it, against podman.

Tilt talks to whatever DOCKER_HOST names through the Docker Engine API. It uses BuildKit when the
server's API version is 1.39 or newer unless DOCKER_BUILDKIT says otherwise
(internal/docker/client.go, getDockerBuilderVersion); podman reports 1.41 but has no BuildKit
session endpoint, so Tilt fails with "unable to upgrade to h2c, received 404" (tilt-dev/tilt#6434)
unless DOCKER_BUILDKIT=0. These tests pin both halves: the session endpoint is missing, and the
legacy build request (a tar of the context, Tilt's two labels) rebuilds image/Dockerfile without
running any of its steps again.

What they also pin, a podman 4.3 limitation: its compat API turns the `labels` map into one
`LABEL` step each in Go's random map order (the bug Docker fixed for moby#29619), so a rebuild
with no change ends on one of two cached images, one per order, and Tilt then redeploys. podman
also keeps the layers of API builds apart from those of `podman build`: the first API build runs
the dependency step once more, on its own.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import subprocess
import tarfile
import time
import tomllib
import urllib.parse
from pathlib import Path

import pytest

from devloop.engine import serve

from . import lifecycle, podman
from .context import CONTEXT_FILES, ROOT, TILT_LABELS
from .hostpip import build_volumes

pytestmark = pytest.mark.container

API = "/v1.41"


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float = 600):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


# Where podman 4.3 reads containers.conf as root, in order (CONTAINERS_CONF replaces them all).
CONTAINERS_CONFS = [Path("/usr/share/containers/containers.conf"),
                    Path("/etc/containers/containers.conf"),
                    *sorted(Path("/etc/containers/containers.conf.d").glob("*.conf"))]


def _merge(into: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _toml(table: dict, prefix: str = "") -> str:
    """containers.conf's subset of TOML: tables of strings, numbers, booleans and lists."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in table.items()
             if not isinstance(value, dict)]
    text = "\n".join(lines) + "\n"
    for key, value in table.items():
        if isinstance(value, dict):
            name = f"{prefix}.{key}" if prefix else key
            text += f"\n[{name}]\n" + _toml(value, name)
    return text


def _service_config(directory: Path) -> Path:
    """This machine's containers.conf plus the host's pip setup as default volumes: an API
    build takes no --volume, and its dependency step must reach the package index through this
    machine's proxy. Scoped to the test's own service; nothing is baked into a layer."""
    merged: dict = {}
    for conf in CONTAINERS_CONFS:
        if conf.is_file():
            _merge(merged, tomllib.loads(conf.read_text()))
    containers = merged.setdefault("containers", {})
    containers["volumes"] = list(containers.get("volumes", [])) + [
        option.split("=", 1)[1] for option in build_volumes()]
    path = directory / "containers.conf"
    path.write_text(_toml(merged))
    return path


@pytest.fixture(scope="module")
def podman_socket(built_image, tmp_path_factory) -> Path:
    """`podman system service` on a socket of its own, as `DOCKER_HOST=unix://...` names it."""
    directory = tmp_path_factory.mktemp("podman-api")
    path = directory / "podman.sock"
    env = dict(os.environ, CONTAINERS_CONF=str(_service_config(directory)))
    service = subprocess.Popen([podman.podman_path(), "system", "service", "--time=0",
                                f"unix://{path}"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not path.exists():
            assert service.poll() is None, "podman system service exited"
            assert time.monotonic() < deadline, "podman system service did not listen"
            time.sleep(0.2)
        yield path
    finally:
        serve.stop_server(service, grace=15)


def _request(path: Path, method: str, url: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = UnixConnection(path)
    try:
        connection.request(method, url, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _context_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in CONTEXT_FILES:
            tar.add(ROOT / name, arcname=name,
                    filter=lambda info: None if "__pycache__" in info.name
                    or info.name.endswith(".egg-info") else info)
    return buffer.getvalue()


def _build_like_tilt(path: Path, tag: str) -> tuple[str, list[tuple[str, bool]]]:
    """POST /build as Tilt's legacy path does (ImageBuildOptions: Dockerfile, Tags, Labels);
    the built image ID and the build's steps (instruction, cached)."""
    labels = dict(label.split("=", 1) for label in TILT_LABELS)
    query = urllib.parse.urlencode({"dockerfile": "image/Dockerfile", "t": tag, "rm": "1",
                                    "labels": json.dumps(labels)})
    status, _, body = _request(path, "POST", f"{API}/build?{query}", _context_tar(),
                               {"Content-Type": "application/x-tar"})
    messages = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    errors = [m for m in messages if "error" in m or "errorDetail" in m]
    assert status == 200 and not errors, (status, errors or body[-2000:])
    ids = [m["aux"]["ID"] for m in messages if isinstance(m.get("aux"), dict) and "ID" in m["aux"]]
    steps = podman.build_steps("".join(m.get("stream", "") for m in messages))
    return (ids[-1] if ids else podman.image_id(tag)), steps


def test_podman_has_no_buildkit_session_so_tilt_needs_buildkit_off(podman_socket):
    status, _, version = _request(podman_socket, "GET", f"{API}/version")
    assert status == 200
    api_version = tuple(int(part) for part in json.loads(version)["ApiVersion"].split("."))
    # Tilt's SupportsBuildkit: an API version of 1.39 or newer means "use BuildKit".
    assert api_version >= (1, 39)
    status, _, _ = _request(podman_socket, "POST", "/session",
                            headers={"Connection": "Upgrade", "Upgrade": "h2c"})
    assert status == 404, "podman grew a BuildKit session endpoint: revisit the README's advice"


def test_the_docker_api_legacy_build_tilt_sends_reruns_no_step(podman_socket, built_image,
                                                             state_dir):
    tag = built_image["image"] + "-tilt"
    lifecycle.remember_image_tag(state_dir, tag)
    first, _ = _build_like_tilt(podman_socket, tag)
    ids = {first}
    label_orders = set()
    for _ in range(2):
        image_id, steps = _build_like_tilt(podman_socket, tag)
        ids.add(image_id)
        rebuilt = [step for step, cached in steps
                   if not cached and not step.startswith(("FROM ", "LABEL "))]
        assert rebuilt == [], f"a rebuild with no change ran {rebuilt}"
        label_orders.add(tuple(step for step, _ in steps if step.startswith("LABEL \"dev.tilt")))
    assert all(len(order) == len(TILT_LABELS) for order in label_orders), label_orders
    # One image per order of the two labels, never more: anything else would be a cache miss.
    assert len(ids) <= 2, ids
    labels = podman.inspect(tag)["Config"]["Labels"]
    assert labels["dev.tilt.built"] == "true" and labels["dev.tilt.gc"] == "true"
