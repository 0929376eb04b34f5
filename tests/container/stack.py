"""The dev overlay's engine, gateway and Redis as podman containers, each run as its pod runs.

Every container takes its Deployment's own pod spec from the rendered overlay (podspec.py); the
few differences from a cluster are set here and say why: the engine serves the offline `tiny`
model, every root filesystem is read-only (the dev overlay relaxes that only so Tilt's live
update can write synced files; the base and the optimized overlay keep it), Redis runs the
stand-in image, and a podman network with the Services' names as DNS aliases takes the place of
the Services, so the gateway's ConfigMap URLs (http://llm-engine:8000, redis://llm-redis:6379/0)
work unchanged.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import requests

from devloop.common.ports import free_port
from devloop.engine import health
from devloop.manifests import kustomize

from . import podman, podspec

OVERLAY = "dev"
ENGINE, GATEWAY, REDIS = "llm-engine", "llm-gateway", "llm-redis"
ENGINE_READY_TIMEOUT = 900.0  # a cold start is ~2 minutes on a busy 2-core machine
GATEWAY_READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class Stack:
    engine_url: str
    gateway_url: str
    served_model: str
    containers: dict[str, str]  # Deployment name -> container name
    engine_seconds: float  # from `podman run` to the health check's passing completion

    def as_dict(self) -> dict:
        return asdict(self)


def _deployment(objects: list[dict], name: str) -> dict:
    return next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name)


def _service_aliases(objects: list[dict], deployment: dict) -> list[str]:
    labels = deployment["spec"]["template"]["metadata"].get("labels", {})
    return [
        obj["metadata"]["name"] for obj in objects
        if obj["kind"] == "Service"
        and obj["spec"].get("selector")
        and all(labels.get(k) == v for k, v in obj["spec"]["selector"].items())
    ]


def _start(objects: list[dict], name: str, image: str, run_id: str, network: str,
           env_overrides: dict[str, str] | None = None) -> tuple[str, dict[int, int]]:
    """Start Deployment `name`'s single container; (container name, container -> host port)."""
    deployment = _deployment(objects, name)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    spec = podspec.run_spec(deployment, container["name"], objects, read_only_root=True)
    spec.env.update(env_overrides or {})
    container_name = f"{run_id}-{name}"
    volumes = {}
    for claim in spec.volumes:
        volumes[claim] = f"{run_id}-{claim}"
        podman.run(["volume", "create", "--label", f"{podman.RUN_LABEL}={run_id}", volumes[claim]])
    ports = {port: free_port() for port in spec.ports}
    args = ["run", "--detach", "--name", container_name,
            "--label", f"{podman.RUN_LABEL}={run_id}", f"--network={network}"]
    args += [f"--network-alias={alias}" for alias in _service_aliases(objects, deployment)]
    args += [f"--publish=127.0.0.1:{host}:{port}" for port, host in ports.items()]
    args += podspec.podman_run_args(spec, volumes) + [image] + spec.args
    podman.run(args)
    return container_name, ports


def _wait_for_gateway(url: str, container: str) -> None:
    deadline = time.monotonic() + GATEWAY_READY_TIMEOUT
    while time.monotonic() < deadline:
        if not podman.running(container):
            raise AssertionError(f"the gateway exited:\n{podman.logs(container)}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the gateway did not answer /health:\n{podman.logs(container)}")


def start_engine(objects: list[dict], image: str, run_id: str,
                 network: str) -> tuple[str, str, str, float]:
    """The engine container with the tiny model: (container, URL, served model, seconds from
    `podman run` to the health check's passing one-token completion)."""
    started = time.monotonic()
    engine, ports = _start(objects, ENGINE, image, run_id, network,
                           {"MODEL_NAME": "tiny", "SERVED_MODEL_NAME": ""})
    url = f"http://127.0.0.1:{ports[8000]}"

    def exited() -> str | None:
        return None if podman.running(engine) else f"the container exited:\n{podman.logs(engine)}"

    report = health.wait_until_ready(url, ENGINE_READY_TIMEOUT, interval=0.5, give_up=exited)
    seconds = time.monotonic() - started
    if not report.ready:
        raise AssertionError(f"the engine container did not become ready "
                             f"({report.waiting_for}):\n{podman.logs(engine)}")
    return engine, url, report.model or "tiny", seconds


def create_network(run_id: str) -> str:
    network = f"{run_id}-net"
    podman.run(["network", "create", "--label", f"{podman.RUN_LABEL}={run_id}", network])
    return network


def start(image: str, redis_image: str, run_id: str) -> Stack:
    """Network, Redis, engine and gateway; returns once the engine served a completion."""
    objects = kustomize.load_objects(kustomize.render_overlay(OVERLAY))
    network = create_network(run_id)
    redis, _ = _start(objects, REDIS, redis_image, run_id, network)
    engine, engine_url, model, engine_seconds = start_engine(objects, image, run_id, network)
    gateway, gateway_ports = _start(objects, GATEWAY, image, run_id, network)
    gateway_url = f"http://127.0.0.1:{gateway_ports[8080]}"
    _wait_for_gateway(gateway_url, gateway)
    return Stack(engine_url, gateway_url, model,
                 {ENGINE: engine, GATEWAY: gateway, REDIS: redis}, engine_seconds)
