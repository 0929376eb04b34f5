"""Reading metric names out of the dashboard's PromQL (devloop.bench.dashboard).

tests/integration/bench/test_dashboard_metrics.py checks the names against a real vLLM scrape; these
pin the extractor itself, including that a wrong name fails the check.
"""

from __future__ import annotations

import json

import pytest

from devloop.bench.dashboard import (
    DASHBOARD_PATH,
    dashboard_metric_names,
    metric_names,
    missing_metrics,
    scrape_sample_names,
)
from devloop.manifests.kustomize import project_root

# A piece of a real vLLM 0.32 /metrics page, as scraped from the CPU server.
SCRAPE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 0.0
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="tiny"} 1.5
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="tiny"} 2.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="tiny"} 2.0
# TYPE vllm:request_success counter
vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny"} 2.0
"""


def test_histogram_quantile_query_yields_the_bucket_series_only():
    expr = (
        "histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket"
        '{model_name=~"$model", engine!="x"}[$__rate_interval])))'
    )
    assert metric_names(expr) == {"vllm:e2e_request_latency_seconds_bucket"}


def test_label_names_variables_durations_and_numbers_are_not_metrics():
    expr = (
        'sum without (engine) (rate(a_total{finished_reason="stop"}[5m] offset 1h)) '
        "/ on (model_name) group_left clamp_min(sum by (model_name) (b_total), 1e-9) "
        "* ${scale} > bool 0.5"
    )
    assert metric_names(expr) == {"a_total", "b_total"}


def test_aggregation_with_trailing_by_clause_and_set_operators():
    expr = "sum(rate(x_count[5m])) by (le) or vector(0) unless count(y)"
    assert metric_names(expr) == {"x_count", "y"}


def test_label_values_in_strings_are_not_names():
    expr = 'label_replace(up{job="vllm:fake_metric"}, "dst", "$1", "src", "(.*)")'
    assert metric_names(expr) == {"up"}


def test_a_wrong_name_like_the_guides_vllm_requests_total_is_reported_missing():
    dashboard = {
        "panels": [
            {
                "title": "Requests",
                "targets": [{"refId": "A", "expr": "rate(vllm_requests_total[5m])"}],
            },
            {"title": "Running", "targets": [{"refId": "A", "expr": "vllm:num_requests_running"}]},
        ]
    }
    missing = missing_metrics(dashboard, scrape_sample_names(SCRAPE))
    assert missing == {"vllm_requests_total": ["panel 'Requests' A"]}


def test_a_bare_histogram_family_name_is_missing_because_prometheus_has_no_such_series():
    dashboard = {"panels": [{"targets": [{"expr": "vllm:e2e_request_latency_seconds"}]}]}
    assert list(missing_metrics(dashboard, scrape_sample_names(SCRAPE))) == [
        "vllm:e2e_request_latency_seconds"
    ]


def test_scrape_names_include_histogram_suffixes_and_counter_totals():
    assert scrape_sample_names(SCRAPE) == {
        "vllm:num_requests_running",
        "vllm:e2e_request_latency_seconds_sum",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:request_success_total",
    }


def test_rows_nested_panels_and_template_variables_are_read():
    dashboard = {
        "panels": [
            {"type": "row", "panels": [{"title": "in row", "targets": [{"expr": "inner_total"}]}]}
        ],
        "templating": {
            "list": [
                {
                    "name": "model",
                    "query": {
                        "query": 'label_values(vllm:num_requests_running{x="1"}, model_name)'
                    },
                },
                {"name": "job", "query": "label_values(job)"},
            ]
        },
    }
    assert dashboard_metric_names(dashboard) == {
        "inner_total": ["panel 'in row' "],
        "vllm:num_requests_running": ["variable $model"],
    }


@pytest.fixture(scope="module")
def shipped_dashboard() -> dict:
    return json.loads((project_root() / DASHBOARD_PATH).read_text())


def test_shipped_dashboard_queries_the_issue_families(shipped_dashboard):
    names = set(dashboard_metric_names(shipped_dashboard))
    for needed in (
        "vllm:request_success_total",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:request_time_per_output_token_seconds_bucket",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "devloop_cache_hits_total",
    ):
        assert needed in names
    assert not {n for n in names if n.startswith("vllm_")}, "vLLM's names are vllm:-prefixed"


def test_shipped_dashboard_queries_only_names_the_engine_and_gateway_export(shipped_dashboard):
    # Anything else would need a third exporter this project does not deploy.
    names = dashboard_metric_names(shipped_dashboard)
    assert all(name.startswith(("vllm:", "devloop_")) for name in names), sorted(names)
