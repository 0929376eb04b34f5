"""`devloop doctor` on the way in through the Gateway API: the CRDs the overlay's HTTPRoute,
Gateway and InferencePool need, with each group's install command, and a GatewayClass that a
controller has accepted (the CRDs alone route nothing)."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from devloop.ops.doctor import checks
from devloop.ops.doctor import command as doctor
from devloop.ops.doctor import facts as doctor_facts

from .test_doctor import healthy, result

POOL = {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
        "metadata": {"name": "llm-engine"}, "spec": {}}


def _without_local_gateway(objects: list[dict]) -> list[dict]:
    """The optimized overlay as a user with a shared Gateway has it: the route, no Gateway."""
    return [obj for obj in copy.deepcopy(objects) if obj["kind"] != "Gateway"]


def test_the_optimized_overlay_needs_the_class_its_gateway_names(rendered):
    assert healthy(rendered, "optimized").gateway_classes_needed == ("eg",)
    assert healthy(rendered, "optimized").http_routes == ("llm",)
    assert healthy(rendered, "dev").http_routes == ()


def test_an_overlay_without_routes_needs_no_gateway_api(rendered):
    res = result(healthy(rendered, "dev", crds=None, gateway_classes=None), "gateway-api")
    assert res.status == "pass" and "no HTTPRoute" in res.summary


def test_an_accepted_class_passes(rendered):
    res = result(healthy(rendered, "optimized"), "gateway-api")
    assert (res.status, res.summary) == ("pass", "GatewayClass eg accepted by its controller")


def test_a_missing_class_warns_with_the_envoy_gateway_install(rendered):
    other = doctor_facts.GatewayClass("nginx", "gateway.nginx.org/nginx-gateway-controller", True)
    res = result(healthy(rendered, "optimized", gateway_classes=(other,)), "gateway-api")
    assert res.status == "warn"
    assert res.summary.startswith("no GatewayClass eg in the cluster (it has: nginx)")
    assert "oci://docker.io/envoyproxy/gateway-helm --version v1.8.2" in res.fix
    assert "gatewayClassName" in res.fix and "docs/gateway-api.md" in res.fix


def test_a_class_no_controller_accepted_warns_with_its_message(rendered):
    waiting = doctor_facts.GatewayClass("eg", "gateway.envoyproxy.io/gatewayclass-controller",
                                        False, "Waiting for controller")
    res = result(healthy(rendered, "optimized", gateway_classes=(waiting,)), "gateway-api")
    assert res.status == "warn"
    assert res.summary == ("GatewayClass eg (gateway.envoyproxy.io/gatewayclass-controller) is "
                           "not Accepted: Waiting for controller: no controller serves it")
    assert "`kubectl describe gatewayclass eg`" in res.fix


def test_a_route_to_a_shared_gateway_needs_some_accepted_class(rendered):
    facts = healthy(rendered, "optimized")
    facts = replace(facts, **doctor.overlay_facts(_without_local_gateway(rendered["optimized"])))
    assert result(facts, "gateway-api").status == "pass"
    none_accepted = replace(facts, gateway_classes=())
    res = result(none_accepted, "gateway-api")
    assert res.status == "warn" and "no GatewayClass is Accepted" in res.summary


@pytest.mark.parametrize("changes, why", [
    ({"crds": None, "gateway_classes": None}, "needs a reachable cluster"),
    ({"crds": ("monitoring.coreos.com/ServiceMonitor",), "gateway_classes": None},
     "needs the Gateway API CRDs (see the crds check)"),
])
def test_the_class_check_waits_for_the_cluster_and_the_crds(rendered, changes, why):
    res = result(healthy(rendered, "optimized", **changes), "gateway-api")
    assert (res.status, res.summary) == ("skip", why)


def test_an_inference_pool_without_its_crd_warns_with_the_inference_extension_install(rendered):
    facts = healthy(rendered, "optimized")
    facts = replace(facts, **doctor.overlay_facts(rendered["optimized"] + [POOL]))
    res = result(facts, "crds")
    assert res.status == "warn"
    assert "inference.networking.k8s.io/InferencePool" in res.summary
    assert "gateway-api-inference-extension/releases/download/v1.6.0/v1-manifests.yaml" in res.fix
    present = replace(facts, crds=(*facts.crds, "inference.networking.k8s.io/InferencePool"))
    assert result(present, "crds").status == "pass"


def test_kubectls_gateway_classes_are_read():
    listed = {"items": [
        {"metadata": {"name": "eg"},
         "spec": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"},
         "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                    "message": "Valid GatewayClass"}]}},
        {"metadata": {"name": "new"}, "spec": {"controllerName": "example.com/gateway"},
         "status": {"conditions": [{"type": "Accepted", "status": "Unknown",
                                    "reason": "Pending", "message": "Waiting for controller"}]}},
    ]}
    assert doctor_facts.parse_gateway_classes(listed) == (
        doctor_facts.GatewayClass("eg", "gateway.envoyproxy.io/gatewayclass-controller", True, "Valid GatewayClass"),
        doctor_facts.GatewayClass("new", "example.com/gateway", False, "Waiting for controller"),
    )


def test_the_gateway_api_check_runs_after_the_crds_check():
    names = [check.__name__ for check in checks.CHECKS]
    assert names.index("check_gateway_api") == names.index("check_crds") + 1
