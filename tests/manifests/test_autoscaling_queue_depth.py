"""The optional queue-depth autoscaler (kustomize/components/autoscaling/queue-depth): it renders
on top of the autoscaling component, validates strictly, and its HPA asks for the metric name
that the shipped prometheus-adapter rule produces from vLLM's real series."""

from __future__ import annotations

import re

import pytest
import yaml

from devloop.manifests import kustomize, validate

from .conftest import ROOT

QUEUE_DEPTH = "autoscaling/queue-depth"
ADAPTER_VALUES = ROOT / kustomize.COMPONENTS_DIR / QUEUE_DEPTH / "prometheus-adapter-values.yaml"


@pytest.fixture(scope="module")
def objects(render_target) -> list[dict]:
    return render_target(f"base+monitoring+autoscaling+{QUEUE_DEPTH}")


def _adapter_rule() -> dict:
    (rule,) = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    return rule


def test_queue_depth_replaces_the_cpu_target(objects):
    hpa = kustomize.find_object(objects, "HorizontalPodAutoscaler", "llm-engine")
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "vllm_num_requests_waiting"},
                "target": {"type": "AverageValue", "averageValue": "2"},
            },
        }
    ]
    # Replica bounds and the slow scale-down come from the autoscaling component unchanged.
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600


def test_queue_depth_rendering_validates_strictly(objects):
    crds = validate.load_crd_schemas(ROOT / validate.CRD_DIR)
    assert validate.validate_objects(objects, crds) == []


def test_without_the_sub_component_the_hpa_stays_on_cpu(render_target):
    hpa = kustomize.find_object(
        render_target("base+autoscaling"), "HorizontalPodAutoscaler", "llm-engine"
    )
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_adapter_rule_turns_vllms_series_into_the_name_the_hpa_asks_for(objects):
    rule = _adapter_rule()
    series = re.match(r"[a-zA-Z_:][\w:]*", rule["seriesQuery"]).group()
    assert series == "vllm:num_requests_waiting"  # tests/integration checks vLLM exports it
    # The adapter's rename is a Go regexp replacement: ${1} is the first group.
    renamed = re.sub(rule["name"]["matches"], rule["name"]["as"].replace("${1}", r"\1"), series)
    hpa = kustomize.find_object(objects, "HorizontalPodAutoscaler", "llm-engine")
    assert renamed == hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    # Per-pod values: the HPA's Pods metric needs the pod and namespace labels mapped.
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
