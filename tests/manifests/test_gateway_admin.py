"""The gateway's admin endpoints (/cache/*) stay out of reach of API clients in every rendered
set that has the gateway: bound to the pod's loopback, exposed by no Service (so by no HTTPRoute or
Ingress either) and let in by no NetworkPolicy; readiness is /ready, which drains on SIGTERM."""

from __future__ import annotations

import copy
import ipaddress

import pytest

from . import policy

LOOPBACK_NAMES = {"localhost"}


def _gateway(objects: list[dict]) -> dict | None:
    return next((w for w in policy.workloads(objects) if policy.name(w) == "llm-gateway"), None)


def _gateway_settings(objects: list[dict], gateway: dict) -> dict[str, str]:
    container = next(policy.containers(gateway))
    settings: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef", {}).get("name")
        config = next((c for c in policy.of_kind(objects, "ConfigMap") if policy.name(c) == ref),
                      None)
        settings.update((config or {}).get("data", {}))
    settings.update({env["name"]: env.get("value", "") for env in container.get("env", [])})
    return settings


def admin_violations(objects: list[dict]) -> list[str]:
    gateway = _gateway(objects)
    if gateway is None:
        return []
    settings = _gateway_settings(objects, gateway)
    problems = []
    host = settings.get("GATEWAY_ADMIN_HOST", "")
    try:
        loopback = host in LOOPBACK_NAMES or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        problems.append(f"the gateway's admin endpoints listen on {host!r}, not the loopback")
    admin_port = int(settings.get("GATEWAY_ADMIN_PORT", "8081"))
    container = next(policy.containers(gateway))
    admin_names = {p.get("name") for p in container.get("ports", [])
                   if p["containerPort"] == admin_port}
    for service in policy.of_kind(objects, "Service"):
        if not policy.selects(service["spec"].get("selector", {}),
                              gateway["spec"]["template"]["metadata"]["labels"]):
            continue
        for port in service["spec"]["ports"]:
            if port.get("targetPort", port["port"]) in admin_names | {admin_port}:
                problems.append(f"Service/{policy.name(service)} exposes the admin port")
    for netpol in policy.of_kind(objects, "NetworkPolicy"):
        for rule in netpol["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if port.get("port") in admin_names | {admin_port}:
                    problems.append(f"NetworkPolicy/{policy.name(netpol)} lets the admin port in")
    probe = container.get("readinessProbe", {}).get("httpGet", {})
    if probe.get("path") != "/ready":
        problems.append(f"the gateway's readiness probe is {probe.get('path')}, not /ready")
    if container.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/health":
        problems.append("the gateway's liveness probe is not /health")
    return problems


def test_admin_endpoints_are_reachable_by_port_forward_only(rendered):
    assert admin_violations(rendered) == []


def test_the_optimized_overlay_has_the_gateway_and_its_policy(render_target):
    # The check above is not vacuous: the fullest overlay renders the gateway, a Service, an
    # HTTPRoute and NetworkPolicies for it.
    objects = render_target("overlay:optimized")
    kinds = {obj["kind"] for obj in objects}
    assert _gateway(objects) is not None
    assert {"Service", "NetworkPolicy", "HTTPRoute"} <= kinds


@pytest.mark.parametrize("mistake", ["public-admin-host", "service-on-admin", "policy-lets-admin",
                                     "readiness-on-health"])
def test_each_way_of_exposing_the_admin_port_is_caught(render_target, mistake):
    objects = copy.deepcopy(render_target("overlay:optimized"))
    gateway = _gateway(objects)
    container = next(policy.containers(gateway))
    if mistake == "public-admin-host":
        container.setdefault("env", []).append({"name": "GATEWAY_ADMIN_HOST", "value": "0.0.0.0"})
    elif mistake == "service-on-admin":
        service = next(s for s in policy.of_kind(objects, "Service")
                       if policy.name(s) == "llm-gateway")
        service["spec"]["ports"].append({"name": "admin", "port": 8081, "targetPort": "admin"})
    elif mistake == "policy-lets-admin":
        netpol = next(n for n in policy.of_kind(objects, "NetworkPolicy")
                      if policy.name(n) == "llm-gateway")
        netpol["spec"]["ingress"][0]["ports"].append({"port": 8081, "protocol": "TCP"})
    else:
        container["readinessProbe"]["httpGet"]["path"] = "/health"
    assert len(admin_violations(objects)) == 1
