"""The gateway container's postStart hook, as the dev overlay renders it, run against a real
`devloop gateway --reload` (the dev pod's command). Kubernetes keeps the container out of
Running until the hook returns, and Tilt port-forwards only to a Running pod: the hook must
return only once the gateway answers /ready, and must never fail (a failed hook kills the
container)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import requests

from devloop.common.ports import free_port
from devloop.manifests import kustomize

ROOT = kustomize.project_root()


def _hook_command() -> list[str]:
    objects = kustomize.load_objects(kustomize.render_overlay("dev", ROOT))
    gateway = next(obj for obj in objects
                   if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "llm-gateway")
    container = next(c for c in gateway["spec"]["template"]["spec"]["containers"]
                     if c["name"] == "gateway")
    command = container["lifecycle"]["postStart"]["exec"]["command"]
    assert command[0] == "python3"
    return [sys.executable, *command[1:]]  # the image's python3 is the pod's Python, as here


def _run_hook(command: list[str], port: int) -> subprocess.Popen:
    return subprocess.Popen(command, env={**os.environ, "GATEWAY_PORT": str(port)})


def test_the_hook_returns_once_the_gateway_is_ready_and_not_before(tmp_path):
    port = free_port()
    hook = _run_hook(_hook_command(), port)
    time.sleep(1.0)
    assert hook.poll() is None, "the hook returned while nothing listened: Tilt would forward now"
    gateway = subprocess.Popen(
        [sys.executable, "-m", "devloop", "gateway", "--reload", "--host", "127.0.0.1",
         "--port", str(port), "--admin-port", "0", "--upstream-url", "http://127.0.0.1:9",
         "--redis-url", ""],
        stdout=(tmp_path / "gateway.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        assert hook.wait(timeout=60) == 0
        ready = requests.get(f"http://127.0.0.1:{port}/ready", timeout=5)
        assert ready.status_code == 200, ready.text
    finally:
        hook.kill()
        gateway.terminate()
        gateway.wait(timeout=30)


def test_the_hook_gives_up_with_exit_code_zero_when_the_gateway_never_answers():
    """The same hook with its 60 s deadline shortened to 1 s (the only change)."""
    command = _hook_command()
    assert "time.monotonic() + 60" in command[-1]
    command[-1] = command[-1].replace("time.monotonic() + 60", "time.monotonic() + 1")
    started = time.monotonic()
    assert _run_hook(command, free_port()).wait(timeout=30) == 0
    assert time.monotonic() - started < 10
