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
