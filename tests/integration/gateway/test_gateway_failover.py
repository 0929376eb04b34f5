"""Failover between replicas, against small real HTTP upstreams (the cheap cases: the real
engines' version is test_gateway_replicas.py): what is retried on another replica, the bounded
wait for a replica to come, and timeouts that say which one fired."""

from __future__ import annotations

import concurrent.futures
import time

import requests
from aiohttp import web

from tests.integration.conftest import ToyUpstream

# What vLLM 0.32 answers for a request that reaches it while its engine shuts down.
SHUTTING_DOWN = {"error": {"message": "cannot schedule new futures after shutdown",
                           "type": "InternalServerError", "param": None, "code": 500}}
# What it answers for a request its engine died under (EngineDeadError), as seen on SIGTERM.
ENGINE_DEAD = {"error": {"message": "EngineCore encountered an issue. See stack trace (above) "
                                    "for the root cause.",
                         "type": "InternalServerError", "param": None, "code": 500}}


class FailingUpstream(ToyUpstream):
    """A toy engine whose completions all answer `status` with `body` (a replica going away)."""

    def __init__(self, status: int, body: dict) -> None:
        super().__init__()
        self.status, self.body = status, body

    async def _completions(self, request):
        self.arrivals[str((await request.json()).get("prompt"))] += 1
        return web.json_response(self.body, status=self.status)


def _complete(gateway, prompt: str, **fields) -> requests.Response:
    body = {"model": "toy", "prompt": prompt, "max_tokens": 4, "temperature": 0.5, **fields}
    return requests.post(gateway.url + "/v1/completions", json=body, timeout=30)


def _retries(gateway) -> float:
    text = requests.get(gateway.url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("devloop_gateway_upstream_retries_total{"))


def _toy(kind=ToyUpstream, *args) -> ToyUpstream:
    server = kind(*args)
    server.start()
    return server


def test_a_replica_shutting_down_or_answering_503_is_skipped_and_nothing_fails(
    start_gateway, toy_upstream
) -> None:
    for status, body in ((500, SHUTTING_DOWN), (500, ENGINE_DEAD), (503, {"detail": "draining"})):
        leaving = _toy(FailingUpstream, status, body)
        try:
            gateway = start_gateway(leaving.url, "", "--upstream", toy_upstream.url)
            answers = [_complete(gateway, f"{status}-{index}") for index in range(6)]
            answers += [_complete(gateway, f"{status}-s{index}", stream=True) for index in range(2)]
            assert [a.status_code for a in answers] == [200] * 8
            assert sum(leaving.arrivals.values()) >= 1  # it was tried, then taken out
            assert _retries(gateway) == sum(leaving.arrivals.values())
            gateway.stop()
        finally:
            leaving.stop()


def test_an_engine_error_that_is_not_a_shutdown_is_not_retried(start_gateway) -> None:
    broken = _toy(FailingUpstream, 500, {"error": {"message": "boom", "type": "x", "code": 500}})
    healthy = _toy()
    try:
        gateway = start_gateway(broken.url, "", "--upstream", healthy.url,
                                "--routing-policy", "round-robin")
        statuses = {_complete(gateway, f"p{index}").status_code for index in range(4)}
        assert statuses == {200, 500}  # the engine's own error reaches the client as is
        assert _retries(gateway) == 0
    finally:
        broken.stop()
        healthy.stop()


def test_a_stopped_replica_is_skipped_and_shown_down(start_gateway, toy_upstream) -> None:
    stopped = _toy()
    gateway = start_gateway(stopped.url, "", "--upstream", toy_upstream.url,
                            "--upstream-health-interval-seconds", "0.2")
    stopped.stop()
    assert [_complete(gateway, f"q{index}").status_code for index in range(6)] == [200] * 6
    time.sleep(0.5)
    engines = requests.get(gateway.url + "/health", timeout=5).json()["upstream"]["engines"]
    states = {engine["url"]: engine["state"] for engine in engines}
    assert states == {stopped.url: "down", toy_upstream.url: "ready"}
    metrics = requests.get(gateway.url + "/metrics", timeout=5).text
    assert f'devloop_gateway_upstream_replicas{{state="down",upstream="{stopped.url}"}} 1.0' in metrics
    assert f'devloop_gateway_upstream_replicas{{state="ready",upstream="{toy_upstream.url}"}} 1.0' in (
        metrics)


def test_a_request_waits_for_an_engine_that_comes_up_within_the_wait(start_gateway) -> None:
    late = ToyUpstream()  # its port is chosen, nothing listens yet
    gateway = start_gateway(late.url, "", "--upstream-health-interval-seconds", "0.2",
                            "--upstream-ready-wait-seconds", "20")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_complete, gateway, "patient")
        time.sleep(1.0)
        assert not waiting.done()
        late.start()
        try:
            assert waiting.result(timeout=20).status_code == 200
        finally:
            late.stop()


def test_a_first_byte_timeout_says_so_and_its_value(start_gateway, toy_upstream) -> None:
    gateway = start_gateway(toy_upstream.url, "", "--upstream-timeout-seconds", "0.5")
    answer = _complete(gateway, "hang")
    assert answer.status_code == 504
    message = answer.json()["error"]["message"]
    assert "first byte timeout" in message and "0.5s" in message


def test_a_stall_between_streamed_bytes_says_which_timeout_fired(
    start_gateway, toy_upstream
) -> None:
    gateway = start_gateway(toy_upstream.url, "", "--upstream-timeout-seconds", "0.5")
    answer = _complete(gateway, "stream:3:2", stream=True)
    assert answer.status_code == 200  # the stream had begun: the error comes in-band
    assert "between bytes timeout" in answer.text and "0.5s" in answer.text
