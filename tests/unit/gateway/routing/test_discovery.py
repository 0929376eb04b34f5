"""Reading the upstream list, a name's replicas and an engine's model listing
(devloop.gateway.routing.discovery)."""

from __future__ import annotations

import asyncio

import pytest

from devloop.gateway.routing.discovery import (
    models_from_listing,
    needs_resolving,
    replica_urls,
    resolve_replicas,
    split_upstreams,
    unique,
    upstream_problem,
)


def test_the_environment_list_takes_commas_spaces_and_newlines() -> None:
    assert split_upstreams(" http://a:8000, http://b:8080\nhttp://c:1 ") == [
        "http://a:8000", "http://b:8080", "http://c:1"
    ]
    assert split_upstreams("  ") == []


def test_duplicates_and_trailing_slashes_collapse_keeping_the_order() -> None:
    assert unique(["http://b:1/", "http://a:1", "http://b:1"]) == ("http://b:1", "http://a:1")


@pytest.mark.parametrize(
    "url",
    ["localhost:8000", "ftp://host:21", "http://", "http://host:8000/v1", "http://h:1?x=1"],
)
def test_an_unusable_upstream_url_is_explained(url: str) -> None:
    assert upstream_problem(url) is not None


def test_a_base_url_is_a_good_upstream() -> None:
    assert upstream_problem("http://llm-engine-replicas:8000") is None
    assert upstream_problem("https://engine.example:443/") is None


def test_only_http_host_names_are_expanded_into_replicas() -> None:
    assert needs_resolving("http://llm-engine-replicas:8000")
    assert not needs_resolving("http://10.1.2.3:8000")
    assert not needs_resolving("https://engine.example:443")


def test_each_address_of_a_headless_service_is_a_replica_in_a_stable_order() -> None:
    addresses = ["10.0.0.10", "10.0.0.9", "10.0.0.10"]
    assert replica_urls("http://svc:8000", addresses) == [
        "http://10.0.0.9:8000", "http://10.0.0.10:8000"
    ]
    assert replica_urls("http://svc:8000", []) == ["http://svc:8000"]


def test_localhost_is_one_replica_and_an_unresolvable_name_keeps_what_was_known() -> None:
    assert asyncio.run(resolve_replicas("http://localhost:8000")) == ["http://127.0.0.1:8000"]
    assert asyncio.run(resolve_replicas("http://no-such-host.invalid:8000")) is None
    assert asyncio.run(resolve_replicas("http://10.1.2.3:8000")) == ["http://10.1.2.3:8000"]


def test_a_vllm_model_listing_gives_its_entries_by_id() -> None:
    listing = {"object": "list", "data": [
        {"id": "tiny-a", "object": "model", "max_model_len": 2048},
        {"id": "tiny-b", "object": "model"},
        {"object": "model"},  # no id: skipped
    ]}
    models = models_from_listing(listing)
    assert list(models) == ["tiny-a", "tiny-b"]
    assert models["tiny-a"]["max_model_len"] == 2048


@pytest.mark.parametrize("payload", [{"detail": "Not Found"}, [], None, {"data": "x"}])
def test_an_answer_that_is_not_a_listing_is_a_value_error(payload: object) -> None:
    with pytest.raises(ValueError, match="data"):
        models_from_listing(payload)
