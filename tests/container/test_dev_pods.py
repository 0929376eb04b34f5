"""The built image run the way the dev overlay's pods run it: engine, gateway, Redis.

stack.py starts each container from its Deployment's own pod spec (read-only root, uid 10001, no
capabilities, tmpfs /tmp and /dev/shm, a writable /models volume, the ConfigMap values, the CPU
and memory limits), the engine with MODEL_NAME=tiny.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from devloop.engine import amx

from . import podman
from .stack import ENGINE, GATEWAY, REDIS

pytestmark = pytest.mark.container

DEVLOOP = str(Path(sys.executable).parent / "devloop")


def test_image_registers_the_amx_plugin_vllm_loads_in_every_process(built_image):
    script = ("from importlib.metadata import entry_points; "
              "print([e.value for e in entry_points(group='vllm.general_plugins')"
              f" if e.name == {amx.PLUGIN_NAME!r}])")
    result = podman.run(["run", "--rm", "--network=none", "--entrypoint=python3",
                         built_image["image"], "-c", script])
    assert result.stdout.strip() == "['devloop.engine.amx:vllm_plugin']"


def test_engine_container_runs_with_the_deployments_security_context(dev_stack):
    host = podman.inspect(dev_stack.containers[ENGINE])["HostConfig"]
    config = podman.inspect(dev_stack.containers[ENGINE])["Config"]
    assert host["ReadonlyRootfs"] is True
    assert config["User"] == "10001:10001"
    assert "CAP_CHOWN" not in (host.get("CapAdd") or [])
    assert host["Memory"] == 5 * 1024**3
    assert host["NanoCpus"] == 2 * 10**9
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["MODEL_NAME"] == "tiny" and env["ENFORCE_EAGER"] == "true"
    probe = ("id -u; touch /probe 2>/dev/null && echo writable || echo read-only;"
             " touch /models/probe /tmp/probe /dev/shm/probe && echo volumes-ok;"
             " grep CapEff /proc/1/status")
    effective = podman.run(["exec", dev_stack.containers[ENGINE], "sh", "-c", probe]).stdout.split()
    assert effective[:3] == ["10001", "read-only", "volumes-ok"]
    assert effective[-1] == "0000000000000000", "the engine must run with no capabilities"


def test_engine_container_is_healthy_and_serves_a_completion(dev_stack):
    health = subprocess.run([DEVLOOP, "health", "--url", dev_stack.engine_url, "--json"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert health.returncode == 0, health.stdout + health.stderr
    response = requests.post(dev_stack.engine_url + "/v1/completions", timeout=120, json={
        "model": dev_stack.served_model, "prompt": "The dev loop", "max_tokens": 8,
        "temperature": 0})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"]
    if "amx_tile" in amx.cpu_flags():
        # On an AMX CPU bf16 serves only with the plugin's permission; without the kernel's
        # grant the entrypoint falls back to float32 and says so.
        logs = podman.logs(dev_stack.containers[ENGINE], tail=400)
        assert '"dtype":"bfloat16"' in logs.replace(" ", ""), logs[-2000:]


def _redis_keys(dev_stack) -> int:
    return int(podman.run(["exec", dev_stack.containers[REDIS], "redis-cli", "dbsize"]).stdout)


def test_gateway_container_answers_miss_then_hit_through_the_redis_container(dev_stack):
    request = {"model": dev_stack.served_model, "prompt": "Cache me", "max_tokens": 4,
               "temperature": 0}
    # As the readiness probes would: Redis answers the gateway before the cache is exercised.
    deadline = time.monotonic() + 60
    while requests.get(dev_stack.gateway_url + "/health", timeout=10).json()["redis"] != "up":
        assert time.monotonic() < deadline, podman.logs(dev_stack.containers[GATEWAY])
        time.sleep(1)
    first = requests.post(dev_stack.gateway_url + "/v1/completions", json=request, timeout=120)
    second = requests.post(dev_stack.gateway_url + "/v1/completions", json=request, timeout=120)
    assert first.status_code == 200 and second.status_code == 200, first.text + second.text
    assert first.headers["X-Cache"] == "MISS"
    assert second.headers["X-Cache"] == "HIT"
    assert second.json()["choices"] == first.json()["choices"]
    # The gateway writes to Redis after the answer is on its way: wait for the write.
    deadline = time.monotonic() + 30
    while _redis_keys(dev_stack) == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    health = requests.get(dev_stack.gateway_url + "/health", timeout=10).json()
    assert _redis_keys(dev_stack) >= 1, (
        f"the answer must be in Redis, the gateway's shared tier; gateway health: {health}\n"
        f"{podman.logs(dev_stack.containers[GATEWAY])}")
    assert health["redis"] == "up", health
    assert podman.running(dev_stack.containers[GATEWAY])
