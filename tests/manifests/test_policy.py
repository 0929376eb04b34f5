"""Policy checks on what `kubectl kustomize` renders, for every overlay and component set; each
check is also shown to catch the mistake it exists for."""

from __future__ import annotations

import copy
import os

import pytest
import yaml

from devloop.manifests import kustomize

from . import policy, policy_routes
from .conftest import write_kustomization


@pytest.mark.parametrize("check", policy.ALL_CHECKS + policy_routes.ROUTE_CHECKS,
                         ids=lambda check: check.__name__)
def test_rendered_manifests_satisfy_policy(rendered, check):
    assert check(rendered) == []


def test_engine_survives_a_slow_model_load_and_fits_its_memory(rendered):
    assert policy.engine_violations(rendered) == []


def test_no_setting_the_guide_invented_reaches_the_cluster(rendered):
    assert policy.forbidden_text_violations(yaml.safe_dump_all(rendered)) == []


def test_every_object_carries_the_part_of_label(overlay_objects):
    unlabelled = [
        f"{obj['kind']}/{obj['metadata']['name']}"
        for obj in overlay_objects
        if obj["kind"] != "Namespace"
        and obj["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "vllm-devloop"
    ]
    assert unlabelled == []


def test_no_kustomization_uses_deprecated_common_labels():
    from .conftest import ROOT

    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / kustomize.KUSTOMIZE_DIR).rglob("kustomization.yaml")
        if "commonLabels" in yaml.safe_load(path.read_text())
    ]
    assert offenders == []


# Each check catches the mistake it exists for.


def _objects(render_target, target="overlay:optimized"):
    return copy.deepcopy(render_target(target))


def _find(objects, kind, name_prefix):
    return kustomize.find_object(objects, kind, name_prefix)


def test_ingress_without_the_cache_component_is_a_dangling_route(tmp_path):
    objects = kustomize.load_objects(kustomize.render(write_kustomization(tmp_path, ("ingress",))))
    assert policy.ingress_violations(objects) == [
        "Ingress/llm routes to missing Service/llm-gateway"
    ]


def test_a_service_named_vllm_is_caught_for_injecting_vllm_port(render_target):
    objects = _objects(render_target)
    _find(objects, "Service", "llm-engine")["metadata"]["name"] = "vllm"
    assert policy.service_env_violations(objects) == [
        "Service/vllm makes Kubernetes inject VLLM_PORT into pods"
    ]


def test_a_network_policy_without_dns_is_caught(render_target):
    objects = _objects(render_target)
    engine_policy = _find(objects, "NetworkPolicy", "llm-engine")
    engine_policy["spec"]["egress"] = [{"ports": [{"port": 443, "protocol": "TCP"}]}]
    assert policy.network_policy_violations(objects) == [
        "NetworkPolicy/llm-engine lets egress out but not DNS on UDP and TCP 53"
    ]


def test_a_selector_typo_is_caught(render_target):
    objects = _objects(render_target)
    _find(objects, "Service", "llm-gateway")["spec"]["selector"] = {"app.kubernetes.io/name": "llm-gatway"}
    assert policy.selector_violations(objects) == [
        "Service/llm-gateway selects no pod: {'app.kubernetes.io/name': 'llm-gatway'}"
    ]


def test_a_missing_config_map_is_caught(render_target):
    objects = [obj for obj in _objects(render_target) if not obj["metadata"]["name"].startswith("llm-gateway-config")]
    problems = policy.reference_violations(objects)
    assert len(problems) == 1 and problems[0].startswith("Deployment/llm-gateway needs missing ConfigMap/llm-gateway-config-")


def test_a_container_without_limits_or_a_restricted_context_is_caught(render_target):
    objects = _objects(render_target)
    container = _find(objects, "Deployment", "llm-redis")["spec"]["template"]["spec"]["containers"][0]
    del container["resources"]["limits"]
    container["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    assert policy.container_violations(objects) == [
        "Deployment/llm-redis container redis: no cpu limit",
        "Deployment/llm-redis container redis: no memory limit",
        "Deployment/llm-redis container redis: capabilities do not drop ALL",
        "Deployment/llm-redis container redis: adds capabilities ['SYS_ADMIN']",
    ]


def test_a_liveness_only_engine_and_a_small_memory_limit_are_caught(render_target):
    objects = _objects(render_target)
    container = _find(objects, "Deployment", "llm-engine")["spec"]["template"]["spec"]["containers"][0]
    del container["startupProbe"]
    container["resources"]["limits"]["memory"] = "6Gi"  # KV cache 5 GiB + shm 2 GiB do not fit
    assert policy.engine_violations(objects) == [
        "llm-engine has no startupProbe: liveness would kill a pod still loading its model",
        "llm-engine memory limit 6.0 GiB does not cover KV cache 5.0 GiB + /dev/shm 2.0 GiB + weights",
    ]


def test_only_the_documented_workloads_may_run_as_root(render_target):
    objects = _objects(render_target, "base+logging")
    del _find(objects, "Deployment", "llm-engine")["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    del _find(objects, "Deployment", "llm-engine")["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"]
    assert policy.container_violations(objects) == ["Deployment/llm-engine container vllm: runAsNonRoot is not set"]


def test_an_unpinned_image_is_caught(render_target):
    objects = _objects(render_target)
    _find(objects, "Deployment", "llm-redis")["spec"]["template"]["spec"]["containers"][0]["image"] = "redis"
    assert policy.image_violations(objects) == ["llm-redis: image redis is not pinned to a version"]


def test_a_guide_flag_in_the_config_is_caught(render_target):
    objects = _objects(render_target)
    _find(objects, "ConfigMap", "llm-engine-config")["data"]["EXTRA_ARGS"] = "--disable-log-requests"
    assert policy.forbidden_text_violations(yaml.safe_dump_all(objects)) == [
        "rendered manifests contain '--disable-log-requests'"
    ]


def test_a_typo_in_an_overlays_engine_settings_is_caught(tmp_path):
    """Rendered for real: an overlay of the dev overlay adding MAX_NUM_SEQ=8 by mistake."""
    dev = kustomize.overlay_dir("dev", kustomize.project_root())
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(dev, tmp_path)}\n"
        "configMapGenerator:\n"
        "  - name: llm-engine-config\n"
        "    behavior: merge\n"
        "    literals:\n"
        "      - MAX_NUM_SEQ=8\n"
    )
    objects = kustomize.load_objects(kustomize.render(tmp_path))
    [violation] = policy.engine_setting_violations(objects)
    assert violation.endswith("unknown engine setting MAX_NUM_SEQ (did you mean MAX_NUM_SEQS?)")


def _engine_container(objects):
    return _find(objects, "Deployment", "llm-engine")["spec"]["template"]["spec"]["containers"][0]


def test_the_drain_check_knows_the_longest_stream_of_each_overlay(render_target):
    # 2048 tokens at 1.2 tok/s (dev, measured); 4096 at 0.6 (optimized, estimated).
    assert round(policy.longest_stream_seconds(render_target("overlay:dev"))) == 1707
    assert round(policy.longest_stream_seconds(render_target("overlay:optimized"))) == 6827


def test_a_grace_period_too_short_for_the_drain_is_caught(render_target):
    objects = _objects(render_target, "overlay:dev")
    _find(objects, "Deployment", "llm-engine")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"] = 30  # the Kubernetes default: SIGKILL mid-stream
    assert policy.drain_violations(objects) == [
        ("Deployment/llm-engine container vllm: terminationGracePeriodSeconds 30 < preStop 5 s "
         "+ drain 2130 s: the kubelet kills it mid-drain")
    ]


def test_a_drain_shorter_than_the_longest_stream_is_caught(render_target):
    objects = _objects(render_target, "overlay:optimized")
    _find(objects, "ConfigMap", "llm-engine-config")["data"]["SHUTDOWN_TIMEOUT"] = "1800"
    gateway = _find(objects, "Deployment", "llm-gateway")["spec"]["template"]["spec"]["containers"][0]
    gateway["env"] = [item for item in gateway["env"] if item["name"] != "GATEWAY_SHUTDOWN_TIMEOUT"]
    assert policy.drain_violations(objects) == [
        ("Deployment/llm-engine container vllm: SHUTDOWN_TIMEOUT=1800 s is shorter than the "
         "longest stream (6827 s): it would be cut off"),
        # Without the overlay's own value the gateway falls back to the cache component's.
        ("Deployment/llm-gateway container gateway: GATEWAY_SHUTDOWN_TIMEOUT=2100 s is shorter "
         "than the longest stream (6827 s): it would be cut off"),
    ]


def test_vllms_default_of_no_drain_is_caught(render_target):
    objects = _objects(render_target, "overlay:dev")
    del _find(objects, "ConfigMap", "llm-engine-config")["data"]["SHUTDOWN_TIMEOUT"]
    assert policy.drain_violations(objects) == [
        ("Deployment/llm-engine container vllm: SHUTDOWN_TIMEOUT=0 s is shorter than the longest "
         "stream (1707 s): it would be cut off")
    ]


def test_a_container_that_stops_before_its_endpoint_is_gone_is_caught(render_target):
    objects = _objects(render_target, "overlay:dev")
    del _find(objects, "Deployment", "llm-gateway")["spec"]["template"]["spec"]["containers"][0]["lifecycle"]
    _engine_container(objects)["lifecycle"]["preStop"] = {"exec": {"command": ["sleep", "1"]}}
    assert policy.drain_violations(objects) == [
        ("Deployment/llm-engine container vllm: preStop sleeps 1 s (< 5 s): it would stop "
         "serving before its endpoint is removed"),
        ("Deployment/llm-gateway container gateway: preStop sleeps 0 s (< 5 s): it would stop "
         "serving before its endpoint is removed"),
    ]


def test_a_new_long_running_container_needs_a_known_drain(render_target):
    objects = _objects(render_target, "overlay:dev")
    sidecar = copy.deepcopy(_engine_container(objects))
    sidecar["name"] = "metrics-proxy"
    _find(objects, "Deployment", "llm-engine")["spec"]["template"]["spec"]["containers"].append(sidecar)
    assert policy.drain_violations(objects) == [
        ("Deployment/llm-engine container metrics-proxy: no known drain; describe its SIGTERM "
         "behaviour in tests/manifests/policy.py or exempt it with the reason")
    ]


def test_an_engine_without_its_decode_speed_cannot_be_checked(render_target):
    objects = _objects(render_target, "overlay:dev")
    del _find(objects, "Deployment", "llm-engine")["metadata"]["annotations"][policy.DECODE_SPEED_ANNOTATION]
    assert policy.drain_violations(objects) == [
        ("Deployment/llm-engine has no vllm-devloop/decode-tokens-per-second annotation: the "
         "drain cannot be checked against the longest stream")
    ]


def test_a_service_monitor_over_an_engine_and_its_headless_twin_is_caught(render_target):
    objects = _objects(render_target)
    monitor = _find(objects, "ServiceMonitor", "llm-engine")
    del monitor["spec"]["selector"]["matchExpressions"]
    assert policy.monitor_violations(objects) == [
        "ServiceMonitor/llm-engine scrapes the same pods through llm-engine, llm-engine-replicas"
    ]
