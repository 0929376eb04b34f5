"""Policy checks over the way in from outside the cluster: the Gateway API's HTTPRoute, the
Inference Extension's InferencePool and the Ingress. Like policy.py, each returns the list of
violations."""

from __future__ import annotations

import re

from .policy import (
    Obj,
    engine_stream_seconds,
    longest_stream_seconds,
    longest_through_service,
    name,
    of_kind,
    selects,
    workloads,
)

GATEWAY_SERVICE = "llm-gateway"  # the caching gateway's Service (components/cache)
ENGINE = "llm-engine"
ENGINE_CONTAINER = "vllm"
CORE_SERVICE = ("", "Service")  # a backendRef's default group and kind
INFERENCE_POOL = ("inference.networking.k8s.io", "InferencePool")
# A Gateway API Duration (GEP-2257): the HTTPRoute CRD's own pattern, and its parts ("ms" tried
# before "m", or 500ms would read as 500m and a stray s).
DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
DURATION_PART = re.compile(r"([0-9]{1,5})(ms|h|m|s)")
DURATION_SECONDS = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}


def duration_seconds(duration: str) -> float:
    """'7200s', '1h30m', '500ms' in seconds; ValueError for anything the CRD's pattern refuses."""
    if not DURATION.match(duration):
        raise ValueError(f"not a Gateway API duration: {duration!r}")
    return sum(int(number) * DURATION_SECONDS[unit] for number, unit in DURATION_PART.findall(duration))


def _backend_kind(ref: Obj) -> tuple[str, str]:
    return ref.get("group", CORE_SERVICE[0]), ref.get("kind", CORE_SERVICE[1])


def _backend_violations(route: str, ref: Obj, objects: list[Obj]) -> list[str]:
    """A backend is the caching gateway's Service on one of its ports, or an InferencePool of
    this render: anything else skips the cache and the project's routing, or goes nowhere."""
    kind = _backend_kind(ref)
    if kind == INFERENCE_POOL:
        if ref["name"] not in {name(pool) for pool in of_kind(objects, "InferencePool")}:
            return [f"HTTPRoute/{route} routes to missing InferencePool/{ref['name']}"]
        return []
    if kind != CORE_SERVICE:
        return [(f"HTTPRoute/{route} routes to {kind[1]}/{ref['name']}, neither the caching gateway's "
                f"Service/{GATEWAY_SERVICE} nor an InferencePool")]
    if ref["name"] != GATEWAY_SERVICE:
        return [(f"HTTPRoute/{route} routes to Service/{ref['name']}, not the caching gateway's "
                f"Service/{GATEWAY_SERVICE} (or an InferencePool)")]
    service = next((svc for svc in of_kind(objects, "Service") if name(svc) == GATEWAY_SERVICE), None)
    if service is None:
        return [f"HTTPRoute/{route} routes to missing Service/{GATEWAY_SERVICE}"]
    if ref.get("port") not in [port["port"] for port in service["spec"]["ports"]]:
        return [(f"HTTPRoute/{route} routes to port {ref.get('port')}, which Service/{GATEWAY_SERVICE} "
                "does not have")]
    return []


def _timeout_violations(route: str, timeouts: Obj, longest: float | None) -> list[str]:
    """Both timeouts let the longest stream finish ("0s" turns a timeout off), and the backend's
    is no longer than the whole request's (the CRD's CEL rule, which JSON Schema cannot check)."""
    problems = []
    seconds = {}
    for field in ("request", "backendRequest"):
        if field not in timeouts:
            problems.append(f"HTTPRoute/{route}: no timeouts.{field}: the implementation's default "
                            "(Envoy's is 15 s) cuts long streams")
            continue
        seconds[field] = duration_seconds(timeouts[field])
        if longest is not None and 0 < seconds[field] < longest:
            problems.append(f"HTTPRoute/{route}: timeouts.{field} {timeouts[field]} is shorter than "
                            f"the longest stream ({longest:.0f} s): it would be cut off")
    request, backend = seconds.get("request", 0), seconds.get("backendRequest", 0)
    if request and backend > request:
        problems.append(f"HTTPRoute/{route}: timeouts.backendRequest {timeouts.get('backendRequest')} "
                        f"is longer than timeouts.request {timeouts['request']}: the API server "
                        "refuses it")
    return problems


def route_violations(objects: list[Obj]) -> list[str]:
    """Every HTTPRoute rule goes to the caching gateway (or a pool) with timeouts that outlast the
    longest stream its backends can send, the bound the drain policy derives: the engines behind
    the gateway (its UPSTREAM_URLS) or behind the pool."""
    problems = []
    for route in of_kind(objects, "HTTPRoute"):
        for rule in route["spec"].get("rules", []):
            refs = rule.get("backendRefs", [])
            if not refs:
                problems.append(f"HTTPRoute/{name(route)} has a rule without a backend")
            for ref in refs:
                problems += _backend_violations(name(route), ref, objects)
            longest = _longest_behind(refs, objects)
            problems += _timeout_violations(name(route), rule.get("timeouts", {}), longest)
    return problems


def _longest_behind(refs: list[Obj], objects: list[Obj]) -> float | None:
    """The longest stream any of a rule's backends may send (None when unknown)."""
    found = []
    by_engine = engine_stream_seconds(objects)
    for ref in refs:
        if _backend_kind(ref) == INFERENCE_POOL:
            pools = [pool for pool in of_kind(objects, "InferencePool") if name(pool) == ref["name"]]
            selector = pools[0]["spec"]["selector"]["matchLabels"] if pools else {}
            found += [by_engine.get(name(w)) for w in workloads(objects) if name(w) in by_engine
                      and selects(selector, w["spec"]["template"]["metadata"].get("labels", {}))]
        else:
            found.append(longest_through_service(ref["name"], objects))
    known = [seconds for seconds in found if seconds is not None]
    return max(known) if known else longest_stream_seconds(objects)


def _container_ports(workload: Obj) -> list[int]:
    return [port["containerPort"] for container in workload["spec"]["template"]["spec"]["containers"]
            if container["name"] == ENGINE_CONTAINER for port in container.get("ports", [])]


def inference_pool_violations(objects: list[Obj]) -> list[str]:
    """A pool selects exactly the engine's pods, and its target ports are the vLLM container's."""
    problems = []
    for pool in of_kind(objects, "InferencePool"):
        where = f"InferencePool/{name(pool)}"
        selector = pool["spec"]["selector"]["matchLabels"]
        selected = [w for w in workloads(objects)
                    if selects(selector, w["spec"]["template"]["metadata"].get("labels", {}))]
        if [name(w) for w in selected] != [ENGINE]:
            problems.append(f"{where} selects {[name(w) for w in selected] or 'no pods'}, not the "
                            f"pods of Deployment/{ENGINE} alone: {selector}")
            continue
        ports = _container_ports(selected[0])
        for target in pool["spec"]["targetPorts"]:
            if target["number"] not in ports:
                problems.append(f"{where} targets port {target['number']}, which the engine's "
                                f"{ENGINE_CONTAINER} container does not serve (it serves {ports})")
    return problems


def ingress_neutrality_violations(objects: list[Obj]) -> list[str]:
    """The Ingress names no controller: no annotations (every one is some controller's) and no
    ingressClassName, so the cluster's default IngressClass takes it."""
    problems = []
    for ingress in of_kind(objects, "Ingress"):
        for key in ingress["metadata"].get("annotations", {}):
            problems.append(f"Ingress/{name(ingress)} carries the controller-specific annotation {key}")
        if "ingressClassName" in ingress["spec"]:
            problems.append(f"Ingress/{name(ingress)} names IngressClass "
                            f"{ingress['spec']['ingressClassName']}")
    return problems


ROUTE_CHECKS = (route_violations, inference_pool_violations, ingress_neutrality_violations)
