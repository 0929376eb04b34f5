"""Every rendered object against the Kubernetes OpenAPI schema (strict) or its CRD's schema."""

from __future__ import annotations

import copy

import pytest

from devloop.manifests import kustomize, validate

from .conftest import ROOT


@pytest.fixture(scope="session")
def crd_schemas():
    return validate.load_crd_schemas(ROOT / validate.CRD_DIR)


def test_every_object_validates_strictly(rendered, crd_schemas):
    assert validate.validate_objects(rendered, crd_schemas) == []


def test_the_service_monitor_is_checked_against_the_crd_schema(crd_schemas):
    assert ("monitoring.coreos.com/v1", "ServiceMonitor") in crd_schemas


def test_an_unknown_field_in_a_built_in_kind_is_rejected(render_target, crd_schemas):
    objects = copy.deepcopy(render_target("overlay:dev"))
    deployment = kustomize.find_object(objects, "Deployment", "llm-engine")
    deployment["spec"]["template"]["spec"]["containers"][0]["startupProbes"] = {}
    problems = validate.validate_objects([deployment], crd_schemas)
    assert len(problems) == 1 and "startupProbes" in problems[0]


def test_a_typo_in_a_service_monitor_is_rejected(render_target, crd_schemas):
    objects = copy.deepcopy(render_target("overlay:optimized"))
    monitor = kustomize.find_object(objects, "ServiceMonitor", "llm-engine")
    monitor["spec"]["endpoints"][0]["scrapeInterval"] = "15s"  # the field is `interval`
    problems = validate.validate_objects([monitor], crd_schemas)
    assert len(problems) == 1 and "'scrapeInterval' was unexpected" in problems[0]


def test_a_wrong_type_in_a_service_monitor_is_rejected(render_target, crd_schemas):
    objects = copy.deepcopy(render_target("overlay:optimized"))
    monitor = kustomize.find_object(objects, "ServiceMonitor", "llm-engine")
    monitor["spec"]["endpoints"][0]["interval"] = 15
    problems = validate.validate_objects([monitor], crd_schemas)
    assert problems == ["ServiceMonitor/llm-engine: spec.endpoints.0.interval: 15 is not of type 'string'"]


def test_a_kind_without_any_schema_is_reported(crd_schemas):
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert validate.validate_objects([unknown], crd_schemas) == [
        ("Widget/w: no schema for example.com/v1 Widget in Kubernetes "
         f"{validate.KUBERNETES_VERSION} or in {validate.CRD_DIR}/")
    ]


@pytest.mark.parametrize("kind", [("gateway.networking.k8s.io/v1", "HTTPRoute"),
                                  ("gateway.networking.k8s.io/v1", "Gateway"),
                                  ("inference.networking.k8s.io/v1", "InferencePool")])
def test_the_routing_kinds_are_checked_against_their_crd_schemas(crd_schemas, kind):
    assert kind in crd_schemas


def test_a_timeout_in_the_wrong_place_of_an_http_route_is_rejected(render_target, crd_schemas):
    objects = copy.deepcopy(render_target("overlay:optimized"))
    route = kustomize.find_object(objects, "HTTPRoute", "llm")
    route["spec"]["timeouts"] = route["spec"]["rules"][0].pop("timeouts")  # it belongs to a rule
    problems = validate.validate_objects([route], crd_schemas)
    assert len(problems) == 1 and "'timeouts' was unexpected" in problems[0]


def test_a_timeout_that_is_not_a_gateway_api_duration_is_rejected(render_target, crd_schemas):
    objects = copy.deepcopy(render_target("overlay:optimized"))
    route = kustomize.find_object(objects, "HTTPRoute", "llm")
    route["spec"]["rules"][0]["timeouts"]["request"] = "2h 0m"
    problems = validate.validate_objects([route], crd_schemas)
    assert problems == [("HTTPRoute/llm: spec.rules.0.timeouts.request: '2h 0m' does not match "
                        "'^([0-9]{1,5}(h|m|s|ms)){1,4}$'")]


def test_an_inference_pool_with_the_alpha_fields_is_rejected(render_target, crd_schemas):
    """v1 took targetPorts (a list) and endpointPickerRef; the v1alpha2 names do not validate."""
    objects = copy.deepcopy(render_target("base+gateway-api+gateway-api/gateway+inference-pool"))
    pool = kustomize.find_object(objects, "InferencePool", "llm-engine")
    pool["spec"]["targetPortNumber"] = pool["spec"].pop("targetPorts")[0]["number"]
    problems = validate.validate_objects([pool], crd_schemas)
    assert len(problems) == 1 and "targetPorts" in problems[0]


def test_a_gateway_without_a_class_is_rejected(render_target, crd_schemas):
    objects = copy.deepcopy(render_target("overlay:optimized"))
    gateway = kustomize.find_object(objects, "Gateway", "llm")
    del gateway["spec"]["gatewayClassName"]
    assert validate.validate_objects([gateway], crd_schemas) == [
        "Gateway/llm: spec: 'gatewayClassName' is a required property"]


# The CRDs' CEL rules (x-kubernetes-validations), which the API server enforces beside the schema.

def test_a_backend_timeout_longer_than_the_request_breaks_the_crds_cel_rule(render_target, crd_schemas):
    objects = copy.deepcopy(render_target("overlay:optimized"))
    route = kustomize.find_object(objects, "HTTPRoute", "llm")
    route["spec"]["rules"][0]["timeouts"] = {"request": "2h", "backendRequest": "2h1m"}
    assert validate.validate_objects([route], crd_schemas) == [
        ("HTTPRoute/llm: spec.rules.0.timeouts: backendRequest timeout cannot be longer than "
        "request timeout")]


def test_an_endpoint_picker_service_without_a_port_breaks_the_rule_after_defaulting(render_target, crd_schemas):
    """The rule reads `self.kind`, which the object leaves to the schema's default (Service)."""
    objects = copy.deepcopy(render_target("base+gateway-api+gateway-api/gateway+inference-pool"))
    pool = kustomize.find_object(objects, "InferencePool", "llm-engine")
    del pool["spec"]["endpointPickerRef"]["kind"]
    assert validate.validate_objects([pool], crd_schemas) == []
    del pool["spec"]["endpointPickerRef"]["port"]
    assert validate.validate_objects([pool], crd_schemas) == [
        ("InferencePool/llm-engine: spec.endpointPickerRef: port is required when kind is "
        "'Service' or unspecified (defaults to 'Service')")]


def test_a_target_port_listed_twice_breaks_the_crds_cel_rule(render_target, crd_schemas):
    objects = copy.deepcopy(render_target("base+gateway-api+gateway-api/gateway+inference-pool"))
    pool = kustomize.find_object(objects, "InferencePool", "llm-engine")
    pool["spec"]["targetPorts"] = [{"number": 8000}, {"number": 8000}]
    assert validate.validate_objects([pool], crd_schemas) == [
        "InferencePool/llm-engine: spec.targetPorts: port number must be unique"]


def test_every_cel_rule_of_the_project_crds_compiles(crd_schemas):
    from devloop.manifests import cel

    rules = []

    def collect(node):
        if isinstance(node, dict):
            rules.extend(rule["rule"] for rule in node.get("x-kubernetes-validations", []))
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(list(crd_schemas.values()))
    assert len(rules) > 100  # the Gateway API's alone have some two hundred
    for rule in set(rules):
        cel._program(rule)  # raises on a rule cel-python cannot parse
