"""The way in from outside the cluster: the gateway-api route (and its local Gateway), the
inference-pool variant, and the controller-neutral Ingress. Each route check is shown to catch
the mistake it exists for, and a user's own overlay renders and validates as docs/gateway-api.md
says."""

from __future__ import annotations

import copy
import os

import pytest

from devloop.manifests import kustomize, validate

from . import policy, policy_routes
from .conftest import ROOT, write_kustomization

POOL_TARGET = "base+gateway-api+gateway-api/gateway+inference-pool"


def _objects(render_target, target="overlay:optimized"):
    return copy.deepcopy(render_target(target))


def _route_rule(objects):
    return kustomize.find_object(objects, "HTTPRoute", "llm")["spec"]["rules"][0]


@pytest.fixture(scope="module")
def crd_schemas():
    return validate.load_crd_schemas(ROOT / validate.CRD_DIR)


def test_the_optimized_overlay_routes_through_an_http_route_not_an_ingress(render_target):
    objects = render_target("overlay:optimized")
    assert not policy.of_kind(objects, "Ingress")
    rule = _route_rule(objects)
    assert rule["backendRefs"] == [{"group": "", "kind": "Service", "name": "llm-gateway", "port": 8080}]
    assert rule["timeouts"] == {"request": "7200s", "backendRequest": "7200s"}
    gateway = kustomize.find_object(objects, "Gateway", "llm")
    assert kustomize.find_object(objects, "HTTPRoute", "llm")["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "llm"}]
    assert gateway["metadata"]["namespace"] == "vllm-optimized"


def test_the_route_timeouts_outlast_each_overlays_longest_stream(render_target):
    for target in ("overlay:optimized", "base+cache+gateway-api"):
        objects = render_target(target)
        longest = policy.longest_stream_seconds(objects)
        timeouts = _route_rule(objects)["timeouts"]
        assert all(policy_routes.duration_seconds(value) >= longest for value in timeouts.values())


def test_the_pool_variant_sends_the_route_to_the_pool_and_keeps_its_timeouts(render_target):
    objects = render_target(POOL_TARGET)
    rule = _route_rule(objects)
    assert rule["backendRefs"] == [
        {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "llm-engine"}]
    assert rule["timeouts"] == {"request": "2100s", "backendRequest": "2100s"}
    pool = kustomize.find_object(objects, "InferencePool", "llm-engine")
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert pool["spec"]["endpointPickerRef"]["name"] == "llm-endpoint-picker"


def test_a_route_around_the_caching_gateway_is_caught(render_target):
    objects = _objects(render_target)
    _route_rule(objects)["backendRefs"] = [{"name": "llm-engine", "port": 8000}]
    assert policy_routes.route_violations(objects) == [
        ("HTTPRoute/llm routes to Service/llm-engine, not the caching gateway's Service/llm-gateway "
        "(or an InferencePool)")]


def test_a_route_to_a_port_the_gateway_lacks_is_caught(render_target):
    objects = _objects(render_target)
    _route_rule(objects)["backendRefs"][0]["port"] = 8081  # the admin port, not in the Service
    assert policy_routes.route_violations(objects) == [
        "HTTPRoute/llm routes to port 8081, which Service/llm-gateway does not have"]


def test_the_route_without_the_cache_component_is_a_dangling_route(tmp_path):
    objects = kustomize.load_objects(kustomize.render(write_kustomization(tmp_path, ("gateway-api",))))
    assert policy_routes.route_violations(objects) == [
        "HTTPRoute/llm routes to missing Service/llm-gateway"]


def test_a_route_to_a_missing_pool_is_caught(render_target):
    objects = [obj for obj in _objects(render_target, POOL_TARGET) if obj["kind"] != "InferencePool"]
    assert policy_routes.route_violations(objects) == [
        "HTTPRoute/llm routes to missing InferencePool/llm-engine"]


def test_timeouts_shorter_than_the_longest_stream_are_caught(render_target):
    objects = _objects(render_target)
    _route_rule(objects)["timeouts"] = {"request": "2100s", "backendRequest": "35m"}
    assert policy_routes.route_violations(objects) == [
        ("HTTPRoute/llm: timeouts.request 2100s is shorter than the longest stream (6827 s): it "
         "would be cut off"),
        ("HTTPRoute/llm: timeouts.backendRequest 35m is shorter than the longest stream "
         "(6827 s): it would be cut off"),
    ]


def test_a_route_left_on_the_implementations_default_timeout_is_caught(render_target):
    objects = _objects(render_target)
    del _route_rule(objects)["timeouts"]
    assert policy_routes.route_violations(objects) == [
        ("HTTPRoute/llm: no timeouts.request: the implementation's default (Envoy's is 15 s) cuts "
         "long streams"),
        ("HTTPRoute/llm: no timeouts.backendRequest: the implementation's default (Envoy's is "
         "15 s) cuts long streams"),
    ]


def test_a_backend_timeout_longer_than_the_request_is_caught(render_target):
    objects = _objects(render_target)
    _route_rule(objects)["timeouts"] = {"request": "2h", "backendRequest": "2h1m"}
    assert policy_routes.route_violations(objects) == [
        ("HTTPRoute/llm: timeouts.backendRequest 2h1m is longer than timeouts.request 2h: the API "
         "server refuses it")]


def test_a_zero_timeout_means_no_limit(render_target):
    objects = _objects(render_target)
    _route_rule(objects)["timeouts"] = {"request": "0s", "backendRequest": "0s"}
    assert policy_routes.route_violations(objects) == []


@pytest.mark.parametrize(("duration", "seconds"), [("7200s", 7200), ("1h30m", 5400), ("500ms", 0.5),
                                                   ("1h1m1s1ms", 3661.001)])
def test_gateway_api_durations_parse_as_gep_2257_writes_them(duration, seconds):
    assert policy_routes.duration_seconds(duration) == pytest.approx(seconds)


@pytest.mark.parametrize("duration", ["2h 1m", "1.5h", "100000s", "1d", "", "1h1m1s1ms1s"])
def test_strings_the_crd_refuses_are_not_durations(duration):
    with pytest.raises(ValueError, match="not a Gateway API duration"):
        policy_routes.duration_seconds(duration)


def test_a_pool_selecting_other_pods_is_caught(render_target):
    """The part-of label is on every pod: the gateway and Redis would become model servers."""
    pool = copy.deepcopy(kustomize.find_object(render_target(POOL_TARGET), "InferencePool", "llm-engine"))
    pool["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/part-of": "vllm-devloop"}
    objects = _objects(render_target) + [pool]
    assert policy_routes.inference_pool_violations(objects) == [
        ("InferencePool/llm-engine selects ['llm-engine', 'llm-gateway', 'llm-redis'], not the pods "
        "of Deployment/llm-engine alone: {'app.kubernetes.io/part-of': 'vllm-devloop'}")]


def test_a_pool_whose_selector_has_a_typo_is_caught(render_target):
    objects = _objects(render_target, POOL_TARGET)
    pool = kustomize.find_object(objects, "InferencePool", "llm-engine")
    pool["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "llm-engnie"}
    assert policy_routes.inference_pool_violations(objects) == [
        ("InferencePool/llm-engine selects no pods, not the pods of Deployment/llm-engine alone: "
        "{'app.kubernetes.io/name': 'llm-engnie'}")]


def test_a_pool_targeting_a_port_the_engine_does_not_serve_is_caught(render_target):
    objects = _objects(render_target, POOL_TARGET)
    kustomize.find_object(objects, "InferencePool", "llm-engine")["spec"]["targetPorts"] = [{"number": 8080}]
    assert policy_routes.inference_pool_violations(objects) == [
        ("InferencePool/llm-engine targets port 8080, which the engine's vllm container does not "
        "serve (it serves [8000])")]


def test_an_ingress_with_nginx_annotations_is_caught(render_target):
    objects = _objects(render_target, "base+cache+ingress")
    ingress = kustomize.find_object(objects, "Ingress", "llm")
    ingress["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/proxy-buffering": "off"}
    ingress["spec"]["ingressClassName"] = "nginx"
    assert policy_routes.ingress_neutrality_violations(objects) == [
        "Ingress/llm carries the controller-specific annotation nginx.ingress.kubernetes.io/proxy-buffering",
        "Ingress/llm names IngressClass nginx",
    ]


def _user_overlay(tmp_path, text: str) -> list[dict]:
    """An overlay of the user's own on top of the optimized one, rendered by the real kustomize."""
    optimized = kustomize.overlay_dir("optimized", kustomize.project_root())
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(optimized, tmp_path)}\n" + text)
    return kustomize.load_objects(kustomize.render(tmp_path))


def test_a_user_attaches_the_route_to_a_shared_gateway_with_a_patch(tmp_path, crd_schemas):
    """The patch docs/gateway-api.md shows (there on the components, here on the overlay)."""
    objects = _user_overlay(tmp_path, """patches:
  - target:
      kind: HTTPRoute
      name: llm
    patch: |-
      - op: replace
        path: /spec/parentRefs
        value:
          - group: gateway.networking.k8s.io
            kind: Gateway
            name: shared
            namespace: gateway-infra
            sectionName: http
""")
    route = kustomize.find_object(objects, "HTTPRoute", "llm")
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                           "name": "shared", "namespace": "gateway-infra",
                                           "sectionName": "http"}]
    assert validate.validate_objects([route], crd_schemas) == []


def test_a_user_sets_the_local_gateways_class_with_a_patch(tmp_path, crd_schemas):
    objects = _user_overlay(tmp_path, """patches:
  - target:
      kind: Gateway
      name: llm
    patch: |-
      - op: replace
        path: /spec/gatewayClassName
        value: nginx
""")
    gateway = kustomize.find_object(objects, "Gateway", "llm")
    assert gateway["spec"]["gatewayClassName"] == "nginx"
    assert validate.validate_objects([gateway], crd_schemas) == []


def test_the_route_and_the_ingress_together_conflict_nowhere(render_target):
    """Both ways in may coexist while a cluster moves from one to the other."""
    objects = render_target("base+cache+gateway-api+ingress")
    assert policy_routes.route_violations(objects) == []
    assert policy.ingress_violations(objects) == []
