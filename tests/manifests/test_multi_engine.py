"""The multi overlay: vLLM and llama.cpp side by side behind one gateway, which routes by model.
What it must keep true: two model names (one name on both engines would make them replicas of
one model), the gateway reaching each engine's pods through its headless Service, a drain that
waits for the slower engine's longest stream, and the memory its comment states."""

from __future__ import annotations

import copy
import re

from devloop.manifests import kustomize

from . import policy
from .conftest import ROOT

ENGINES = {"llm-engine": "llm-engine-replicas", "llm-llamacpp": "llm-llamacpp-replicas"}


def _multi(render_target) -> list[dict]:
    return copy.deepcopy(render_target("overlay:multi"))


def _container(objects: list[dict], workload: str) -> dict:
    deployment = kustomize.find_object(objects, "Deployment", workload)
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _gateway_env(objects: list[dict]) -> dict[str, str]:
    return policy.effective_env(objects, _container(objects, "llm-gateway"))


def served_names(objects: list[dict]) -> dict[str, str]:
    """The `model` each engine answers to: vLLM's SERVED_MODEL_NAME (its MODEL_NAME when empty),
    llama-server's LLAMA_ARG_ALIAS."""
    vllm = policy.effective_env(objects, _container(objects, "llm-engine"))
    llama = policy.effective_env(objects, _container(objects, "llm-llamacpp"))
    return {"llm-engine": vllm["SERVED_MODEL_NAME"] or vllm["MODEL_NAME"],
            "llm-llamacpp": llama["LLAMA_ARG_ALIAS"]}


def test_the_two_engines_serve_two_model_names(render_target):
    names = served_names(_multi(render_target))
    assert names == {"llm-engine": "Qwen/Qwen3-0.6B", "llm-llamacpp": "Qwen/Qwen3-0.6B-GGUF"}


def test_the_gateway_reaches_each_engines_pods_through_its_headless_service(render_target):
    objects = _multi(render_target)
    urls = _gateway_env(objects)["UPSTREAM_URLS"].split()
    assert urls == [f"http://{service}:8000" for service in ENGINES.values()]
    by_engine = policy.engine_stream_seconds(objects)
    for engine, service in ENGINES.items():
        headless = kustomize.find_object(objects, "Service", service)
        assert headless["spec"]["clusterIP"] == "None"
        assert policy._engines_behind(service, objects, by_engine) == [engine]


def test_the_gateways_drain_waits_for_the_slower_engine(render_target):
    objects = _multi(render_target)
    streams = policy.engine_stream_seconds(objects)
    assert streams["llm-llamacpp"] > streams["llm-engine"], "llama.cpp's stream is the longer here"
    assert policy.drain_violations(objects) == []
    # vLLM's timeout alone (the cache component's) would cut llama.cpp's streams off.
    gateway_config = next(obj for obj in objects if obj["kind"] == "ConfigMap"
                          and obj["metadata"]["name"].startswith("llm-gateway-config"))
    gateway_config["data"]["GATEWAY_SHUTDOWN_TIMEOUT"] = "2100"
    cut = ("Deployment/llm-gateway container gateway: GATEWAY_SHUTDOWN_TIMEOUT=2100 s is shorter "
           f"than the longest stream ({streams['llm-llamacpp']:.0f} s): it would be cut off")
    assert policy.drain_violations(objects) == [cut]


def _sums(objects: list[dict]) -> tuple[float, float]:
    """GiB of memory requested and of limits, over every container of every workload."""
    requested = limits = 0.0
    for workload in policy.workloads(objects):
        for container in policy.containers(workload):
            resources = container.get("resources", {})
            requested += policy.quantity_bytes(resources.get("requests", {}).get("memory", "0"))
            limits += policy.quantity_bytes(resources.get("limits", {}).get("memory", "0"))
    return requested / policy.GiB, limits / policy.GiB


def test_the_memory_the_overlay_states_is_what_its_deployments_ask(render_target):
    comment = (ROOT / "kustomize/overlays/multi/kustomization.yaml").read_text()
    stated = re.search(r"([\d.]+) GiB requested, ([\d.]+) GiB of limits", comment)
    assert stated, "the overlay's comment states its memory"
    requested, limits = _sums(_multi(render_target))
    assert (float(stated.group(1)), float(stated.group(2))) == (round(requested, 1), round(limits, 2))
    docs = (ROOT / "docs/routing.md").read_text()
    assert f"{round(limits, 2)} GiB" in docs and f"{round(requested, 1)} GiB" in docs
