"""One gateway in front of several real vLLM engines: routing by model, the merged model list,
the unknown-model 404, affinity, and an engine stopped and restarted under load losing nothing.

The engines: the run's shared server (model `tiny`) and two replicas of `tiny-replica`
(tests/integration/gateway/conftest.py)."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest
import requests

from tests.conftest import engine_start_slot
from tests.integration.gateway.conftest import REPLICA_MODEL, RESTART_READY_TIMEOUT

pytestmark = pytest.mark.vllm

SUCCESSES = "vllm:request_success_total"


def _complete(
    url: str, model: str, prompt: str = "Hello", headers: dict | None = None, **extra
) -> requests.Response:
    body = {"model": model, "prompt": prompt, "max_tokens": 4, "temperature": 0.7, **extra}
    return requests.post(url + "/v1/completions", json=body, timeout=120, headers=headers)


@pytest.fixture
def gateway(start_gateway, vllm_base_url: str, vllm_replicas):
    return start_gateway(vllm_base_url, "", "--upstream", vllm_replicas[0].url,
                         "--upstream", vllm_replicas[1].url,
                         "--upstream-health-interval-seconds", "0.5")


def test_each_request_reaches_an_engine_serving_its_model(
    gateway, vllm_served_model: str
) -> None:
    for model in (vllm_served_model, REPLICA_MODEL, vllm_served_model):
        answer = _complete(gateway.url, model)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == model


def test_the_model_list_is_the_merge_of_every_engines(gateway, vllm_served_model: str) -> None:
    listing = requests.get(gateway.url + "/v1/models", timeout=10).json()
    assert listing["object"] == "list"
    assert sorted(entry["id"] for entry in listing["data"]) == sorted(
        [vllm_served_model, REPLICA_MODEL]
    )


def test_an_unknown_model_gets_the_gateways_404_listing_the_models(
    gateway, vllm_served_model: str
) -> None:
    answer = _complete(gateway.url, "no-such-model")
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error["type"] == "NotFoundError" and error["code"] == 404
    assert error["message"].startswith("The model `no-such-model` does not exist.")  # as vLLM
    assert vllm_served_model in error["message"] and REPLICA_MODEL in error["message"]


def test_health_reports_each_engine(gateway, vllm_base_url: str, vllm_replicas) -> None:
    upstream = requests.get(gateway.url + "/health", timeout=10).json()["upstream"]
    assert upstream["state"] == "up" and upstream["ready"] == 3
    urls = {engine["url"]: engine for engine in upstream["engines"]}
    assert set(urls) == {vllm_base_url, *(replica.url for replica in vllm_replicas)}
    assert urls[vllm_replicas[0].url]["models"] == [REPLICA_MODEL]


def _successes(replicas) -> list[float]:
    return [replica.metric(SUCCESSES) for replica in replicas]


def _served_since(replicas, before: list[float], requests_sent: int) -> list[float]:
    """Each replica's successes since `before`, once all `requests_sent` are counted (vLLM
    updates its counters from its output loop, a moment after the answer)."""
    deadline = time.monotonic() + 10
    while True:
        deltas = [b - a for a, b in zip(before, _successes(replicas), strict=True)]
        if sum(deltas) >= requests_sent or time.monotonic() > deadline:
            return deltas
        time.sleep(0.2)


def test_a_session_stays_on_one_replica_and_unkeyed_requests_spread(
    gateway, vllm_replicas
) -> None:
    before = _successes(vllm_replicas)
    for index in range(4):  # different prompts, one at a time: least outstanding alternates
        assert _complete(gateway.url, REPLICA_MODEL, f"{index} " * 40).status_code == 200
    assert _served_since(vllm_replicas, before, 4) == [2, 2]

    before = _successes(vllm_replicas)
    for turn in range(4):
        answer = _complete(gateway.url, REPLICA_MODEL, f"turn {turn}",
                           headers={"X-Session-ID": "conversation-1"})
        assert answer.status_code == 200
    assert sorted(_served_since(vllm_replicas, before, 4)) == [0, 4]


def test_a_conversations_turns_stay_on_the_replica_of_its_first_turn(
    gateway, vllm_replicas
) -> None:
    messages = [{"role": "user", "content": "Tell me about the sea."}]
    before = _successes(vllm_replicas)
    for turn in range(3):
        body = {"model": REPLICA_MODEL, "messages": messages, "max_tokens": 4}
        answer = requests.post(gateway.url + "/v1/chat/completions", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        messages = [*messages, answer.json()["choices"][0]["message"],
                    {"role": "user", "content": f"And turn {turn}?"}]
    assert sorted(_served_since(vllm_replicas, before, 3)) == [0, 3]


def test_an_engine_stopped_and_restarted_under_load_loses_no_request(
    gateway, vllm_replicas
) -> None:
    """Four clients send requests (half streamed) without pause while one replica gets SIGTERM
    (vLLM drains what it has and refuses new work), is down, and comes back: every request
    succeeds, and the restarted replica serves again."""
    stop = threading.Event()
    outcomes: list[tuple[int, str]] = []
    pause = [0.2]  # between a client's requests; longer while the replica starts again

    def client(index: int) -> None:
        count = 0
        while not stop.is_set():
            count += 1
            stream = count % 2 == 0
            try:
                answer = _complete(gateway.url, REPLICA_MODEL, f"client {index} request {count}",
                                   stream=stream)
                text = answer.text
                ok = answer.status_code == 200 and (not stream or text.endswith("[DONE]\n\n"))
                outcomes.append((answer.status_code if ok else -answer.status_code, text[-200:]))
            except requests.RequestException as error:
                outcomes.append((-1, repr(error)))
            # Requests keep coming through the stop, the outage and the return, but paced: four
            # clients without a pause kept both cores so busy that the restart took minutes.
            stop.wait(pause[0])

    victim = vllm_replicas[0]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client, index) for index in range(4)]
        try:
            # No other test's engine starts meanwhile (engine_start_slot): the restart shares
            # the cores with the load only.
            with engine_start_slot():
                time.sleep(3)
                victim.stop()  # SIGTERM; returns once all its processes exited
                # While it starts again the other replica serves everything: one request a
                # second per client, so that replica leaves the cores room for the start.
                pause[0] = 1.0
                time.sleep(2)
                victim.start()
                victim.wait_ready(RESTART_READY_TIMEOUT)
                pause[0] = 0.2
            time.sleep(4)  # the gateway's probe finds it back and sends it work again
            served_before = victim.metric(SUCCESSES)
            time.sleep(4)
            served_after = victim.metric(SUCCESSES)
        finally:
            stop.set()
            for future in futures:
                future.result()
    failures = [outcome for outcome in outcomes if outcome[0] != 200]
    assert not failures, f"{len(failures)} of {len(outcomes)} failed: {failures[:3]}"
    assert len(outcomes) > 20
    assert served_after > served_before  # the restarted replica is back in the rotation
    retries = requests.get(gateway.url + "/metrics", timeout=5).text
    assert "devloop_gateway_upstream_requests_total" in retries
