"""The gateway against a small real HTTP upstream: what reaches the client when the engine fails,
size limits, errors never cached, single flight counted at the upstream, Redis failing under it.
The engine itself is tested in test_gateway_vllm.py."""

from __future__ import annotations

import concurrent.futures
import json
import time

import pytest
import requests

pytestmark = pytest.mark.redis


def _complete(gateway, prompt: str, **fields) -> requests.Response:
    body = {"model": "toy", "prompt": prompt, "temperature": 0, "max_tokens": 4, **fields}
    return requests.post(gateway.url + "/v1/completions", json=body, timeout=30)


def test_a_repeated_deterministic_request_is_a_hit_and_the_upstream_sees_it_once(
    start_gateway, toy_upstream, redis_url
) -> None:
    gateway = start_gateway(toy_upstream.url, redis_url)
    first, second = _complete(gateway, "same"), _complete(gateway, "same")
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert {**second.json(), "id": first.json()["id"]} == first.json()  # a hit has its own id
    assert toy_upstream.arrivals["same"] == 1


def test_a_sampled_request_is_never_cached(start_gateway, toy_upstream, redis_url) -> None:
    gateway = start_gateway(toy_upstream.url, redis_url)
    answers = [_complete(gateway, "sampled", temperature=0.8) for _ in range(3)]
    assert [a.headers["X-Cache"] for a in answers] == ["BYPASS"] * 3
    assert len({a.json()["choices"][0]["text"] for a in answers}) == 3
    assert toy_upstream.arrivals["sampled"] == 3


def test_the_cache_everything_policy_caches_sampled_requests(
    start_gateway, toy_upstream, redis_url
) -> None:
    gateway = start_gateway(toy_upstream.url, redis_url, "--cache-policy", "all")
    answers = [_complete(gateway, "sampled", temperature=0.8) for _ in range(2)]
    assert [a.headers["X-Cache"] for a in answers] == ["MISS", "HIT"]


def test_an_engine_error_reaches_the_client_and_is_not_cached(
    start_gateway, toy_upstream, redis_url
) -> None:
    gateway = start_gateway(toy_upstream.url, redis_url)
    for _ in range(2):
        answer = _complete(gateway, "status:500")
        assert answer.status_code == 500
        assert answer.headers["X-Cache"] == "BYPASS"  # never stored
        assert answer.json()["error"]["message"] == "toy failure"
    assert toy_upstream.arrivals["status:500"] == 2
    assert _complete(gateway, "status:400").status_code == 400
    assert gateway.stats()["stores"] == 0


def test_a_non_json_error_page_becomes_an_openai_error_body(start_gateway, toy_upstream) -> None:
    gateway = start_gateway(toy_upstream.url)
    answer = _complete(gateway, "html:502")
    assert answer.status_code == 502
    assert answer.headers["Content-Type"].startswith("application/json")
    error = answer.json()["error"]
    assert "bad gateway" in error["message"] and error["code"] == 502


def test_an_engine_refusing_connections_is_waited_for_then_a_503_with_retry_after(
    start_gateway,
) -> None:
    from devloop.common.ports import free_port

    gateway = start_gateway(
        f"http://127.0.0.1:{free_port()}", "", "--upstream-ready-wait-seconds", "0.5"
    )
    started = time.perf_counter()
    answer = _complete(gateway, "anything")
    assert answer.status_code == 503 and answer.headers["Retry-After"].isdigit()
    message = answer.json()["error"]["message"]
    assert "became ready within 0.5s" in message and "Connect" in message  # why: refused
    assert time.perf_counter() - started < 10
    stream = _complete(gateway, "anything", stream=True)
    assert stream.status_code == 503 and stream.json()["error"]["type"] == "upstream_unavailable"


def test_an_engine_that_does_not_answer_in_time_is_a_504(start_gateway, toy_upstream) -> None:
    gateway = start_gateway(toy_upstream.url, "", "--upstream-timeout-seconds", "0.5")
    started = time.perf_counter()
    answer = _complete(gateway, "hang")
    assert answer.status_code == 504
    assert time.perf_counter() - started < 5
    assert answer.json()["error"]["type"] == "upstream_timeout"
    # and the timeout is not cached either: the next identical request goes upstream again
    assert _complete(gateway, "hang").status_code == 504
    assert toy_upstream.arrivals["hang"] == 2


def test_a_body_over_the_limit_gets_413(start_gateway, toy_upstream) -> None:
    gateway = start_gateway(toy_upstream.url, "", "--max-body-bytes", "1000")
    answer = _complete(gateway, "x" * 2000)
    assert answer.status_code == 413
    assert "MAX_BODY_BYTES" in answer.json()["error"]["message"]
    assert _complete(gateway, "x" * 100).status_code == 200


def test_sixteen_identical_concurrent_misses_reach_the_upstream_once(
    start_gateway, toy_upstream
) -> None:
    gateway = start_gateway(toy_upstream.url)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: _complete(gateway, "sleep:1.0"), range(16)))
    assert {a.status_code for a in answers} == {200}
    assert len({json.dumps(a.json()["choices"]) for a in answers}) == 1
    assert len({a.json()["id"] for a in answers}) == 16  # each under its own id
    assert toy_upstream.arrivals["sleep:1.0"] == 1


def test_streaming_passes_through_chunk_by_chunk(start_gateway, toy_upstream) -> None:
    gateway = start_gateway(toy_upstream.url)
    arrivals = []
    with requests.post(
        gateway.url + "/v1/completions",
        stream=True,
        timeout=30,
        json={"model": "toy", "prompt": "s", "temperature": 0.7, "stream": True},
    ) as answer:
        assert answer.headers["X-Cache"] == "BYPASS"
        for line in answer.iter_lines():
            if line:
                arrivals.append((time.perf_counter(), line))
    assert arrivals[-1][1] == b"data: [DONE]"
    assert len(arrivals) == 4
    # The toy engine spaces its chunks 50 ms apart; a buffering proxy would deliver them at once.
    assert arrivals[2][0] - arrivals[0][0] > 0.06


def test_health_answers_while_the_engine_is_down_and_reports_it(start_gateway, redis_url) -> None:
    from devloop.common.ports import free_port

    gateway = start_gateway(f"http://127.0.0.1:{free_port()}", redis_url)
    health = requests.get(gateway.url + "/health", timeout=5)
    assert health.status_code == 200
    assert health.json()["upstream"]["state"] == "down"
    assert health.json()["redis"] == "up"


def test_models_and_other_paths_are_proxied(start_gateway, toy_upstream) -> None:
    gateway = start_gateway(toy_upstream.url)
    assert requests.get(gateway.url + "/v1/models", timeout=5).json()["data"][0]["id"] == "toy"


def test_metrics_export_the_dashboard_counters(start_gateway, toy_upstream, redis_url) -> None:
    gateway = start_gateway(toy_upstream.url, redis_url)
    _complete(gateway, "m")
    _complete(gateway, "m")
    samples = _scrape(gateway)
    assert samples[("devloop_cache_requests_total", ())] == 2
    assert samples[("devloop_cache_hits_total", (("tier", "local"),))] == 1
    assert samples[("devloop_cache_misses_total", ())] == 1
    assert samples[("devloop_cache_redis_degraded", ())] == 0
    route = (("code", "200"), ("route", "/v1/completions"))
    assert samples[("devloop_gateway_requests_total", route)] == 2
    assert samples[("devloop_gateway_request_duration_seconds_count", route[1:])] == 2


def _scrape(gateway) -> dict[tuple[str, tuple], float]:
    """The gateway's /metrics parsed by prometheus_client: {(name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(gateway.url + "/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_redis_stopped_mid_run_every_request_succeeds_and_restarted_the_cache_recovers(
    start_gateway, toy_upstream, own_redis
) -> None:
    gateway = start_gateway(toy_upstream.url, own_redis.url)
    assert _complete(gateway, "r0").status_code == 200
    own_redis.stop()
    for index in range(20):
        answer = _complete(gateway, f"r{index % 5}")
        assert answer.status_code == 200
    assert _scrape(gateway)[("devloop_cache_redis_degraded", ())] == 1
    assert gateway.log().count("failed") == 1  # logged once, not per request
    own_redis.start()
    time.sleep(1.2)  # past the reconnect back-off
    assert _complete(gateway, "fresh").headers["X-Cache"] == "MISS"
    time.sleep(0.2)  # the Redis write happens after the answer
    assert len(own_redis.client().keys("devloop:cache:*")) == 1  # the restarted Redis got the write
    assert gateway.stats()["redis"] == "up"
