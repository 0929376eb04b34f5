"""Every series the Grafana dashboard queries exists: the names in each panel's PromQL are looked
up in a real scrape of vLLM's /metrics (vllm:*) and of the caching gateway's (devloop_*)."""

from __future__ import annotations

import json

import pytest
import requests

from devloop.bench.dashboard import (
    DASHBOARD_PATH,
    dashboard_metric_names,
    missing_metrics,
    scrape_sample_names,
)
from devloop.manifests.kustomize import project_root

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((project_root() / DASHBOARD_PATH).read_text())


def _complete(url: str, model: str, **extra) -> None:
    body = {
        "model": model,
        "prompt": "the metrics test",
        "max_tokens": 4,
        "temperature": 0,
        **extra,
    }
    response = requests.post(f"{url}/v1/completions", json=body, timeout=120)
    response.raise_for_status()
    if extra.get("stream"):
        response.content  # read the stream to its end  # noqa: B018


def test_every_vllm_series_the_dashboard_queries_is_exported(
    dashboard, vllm_base_url, vllm_served_model
):
    # Requests first: label sets (finished_reason, ...) appear once something was observed.
    _complete(vllm_base_url, vllm_served_model)
    _complete(vllm_base_url, vllm_served_model, stream=True)
    scrape = requests.get(f"{vllm_base_url}/metrics", timeout=30).text
    exported = scrape_sample_names(scrape)
    queried = [name for name in dashboard_metric_names(dashboard) if name.startswith("vllm:")]
    assert len(queried) >= 10, "the dashboard should chart the engine; did the extractor break?"
    missing = missing_metrics(dashboard, exported, prefixes=("vllm:",))
    assert not missing, f"the dashboard queries series vLLM does not export: {missing}"


def test_every_gateway_series_the_dashboard_queries_is_exported(
    dashboard, vllm_base_url, vllm_served_model, start_gateway
):
    gateway = start_gateway(vllm_base_url)  # no Redis: the local tier is enough for a hit
    _complete(gateway.url, vllm_served_model)
    _complete(gateway.url, vllm_served_model)  # the same request again: a cache hit
    scrape = requests.get(f"{gateway.url}/metrics", timeout=30).text
    queried = [name for name in dashboard_metric_names(dashboard) if name.startswith("devloop_")]
    assert queried, "the dashboard should chart the gateway's cache"
    missing = missing_metrics(dashboard, scrape_sample_names(scrape), prefixes=("devloop_",))
    assert not missing, f"the dashboard queries series the gateway does not export: {missing}"
    # The hit-ratio panel has something to show: the repeat was answered from the cache.
    hits = sum(
        float(line.split()[-1])
        for line in scrape.splitlines()
        if line.startswith("devloop_cache_hits_total")
    )
    assert hits >= 1


def test_the_queue_depth_autoscaler_reads_a_series_vllm_exports(vllm_base_url):
    import yaml

    values = (
        project_root()
        / "kustomize/components/autoscaling/queue-depth/prometheus-adapter-values.yaml"
    )
    (rule,) = yaml.safe_load(values.read_text())["rules"]["custom"]
    series = rule["seriesQuery"].split("{", 1)[0]
    scrape = requests.get(f"{vllm_base_url}/metrics", timeout=30).text
    assert series in scrape_sample_names(scrape)
