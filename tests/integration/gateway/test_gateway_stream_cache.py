"""The stream cache and the gateway's HTTP cache semantics against a small real upstream: what
is stored and what never is (streams that break off, end without [DONE], carry an error event,
or lose their client), the request's Cache-Control, X-Cache labels, fresh ids on hits, and the
engine's headers a client relies on. Replays against the real engine: test_gateway_stream_replay_vllm.py."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

pytestmark = pytest.mark.redis


def _post(gateway, prompt: str, stream: bool = False, headers: dict | None = None, **fields):
    body = {"model": "toy", "prompt": prompt, "temperature": 0, "max_tokens": 4, **fields}
    if stream:
        body["stream"] = True
    return requests.post(gateway.url + "/v1/completions", json=body, headers=headers,
                         timeout=30, stream=stream)


def _events(response: requests.Response) -> list[str]:
    return [line[len("data: "):] for line in response.iter_lines(decode_unicode=True)
            if line.startswith("data: ")]


def test_a_repeated_stream_is_replayed_from_the_cache(start_gateway, toy_upstream, redis_url):
    gateway = start_gateway(toy_upstream.url, redis_url)
    miss = _post(gateway, "same", stream=True)
    miss_events = _events(miss)
    hit = _post(gateway, "same", stream=True)
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
    assert hit.headers["Content-Type"].startswith("text/event-stream")
    hit_events = _events(hit)
    assert miss_events[-1] == "[DONE]" == hit_events[-1]
    # the toy engine writes JSON with spaces; the replay writes it compact, as vLLM does
    assert [json.loads(e) for e in hit_events[:-1]] == [json.loads(e) for e in miss_events[:-1]]
    assert toy_upstream.arrivals["same"] == 1


@pytest.mark.parametrize("prompt", ["cut:2", "nodone:2", "errorevent"])
def test_a_stream_that_broke_off_or_failed_is_never_stored(
    start_gateway, toy_upstream, redis_url, prompt: str
) -> None:
    gateway = start_gateway(toy_upstream.url, redis_url)
    for _ in range(2):
        answer = _post(gateway, prompt, stream=True)
        events = _events(answer)
        assert answer.headers["X-Cache"] == "MISS"  # sent before the outcome was known
        if prompt == "errorevent":
            assert "error" in json.loads(events[-2]) and events[-1] == "[DONE]"
        elif prompt == "cut:2":
            assert json.loads(events[-1])["error"]["type"] == "upstream_error"
    time.sleep(0.2)
    assert toy_upstream.arrivals[prompt] == 2
    assert gateway.stats()["stores"] == 0
    assert redis_keys(redis_url) == []


def redis_keys(redis_url: str) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return client.keys("devloop:cache:*")
    finally:
        client.close()


def test_a_client_that_hangs_up_mid_stream_stores_nothing(start_gateway, toy_upstream, redis_url):
    gateway = start_gateway(toy_upstream.url, redis_url)
    body = json.dumps({"model": "toy", "prompt": "stream:20:0.05", "temperature": 0,
                       "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)
        received = b""
        while b"data: " not in received:  # the stream started; then hang up
            received += sock.recv(65536)
    time.sleep(1.5)  # longer than the rest of the toy stream would have taken
    assert gateway.stats()["stores"] == 0
    assert _post(gateway, "stream:20:0.05", stream=True).headers["X-Cache"] == "MISS"


def test_a_stream_and_a_whole_answer_share_one_entry(start_gateway, toy_upstream, redis_url):
    gateway = start_gateway(toy_upstream.url, redis_url)
    whole = _post(gateway, "shared")
    streamed = _post(gateway, "shared", stream=True)
    assert (whole.headers["X-Cache"], streamed.headers["X-Cache"]) == ("MISS", "HIT")
    chunks = [json.loads(event) for event in _events(streamed)[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole.json()["choices"][0]["text"]
    assert toy_upstream.arrivals["shared"] == 1


def test_no_cache_refreshes_the_entry_and_no_store_bypasses_it(
    start_gateway, toy_upstream, redis_url
) -> None:
    gateway = start_gateway(toy_upstream.url, redis_url)
    text = lambda answer: answer.json()["choices"][0]["text"]
    assert text(_post(gateway, "cc")) == "cc#1"
    refreshed = _post(gateway, "cc", headers={"Cache-Control": "no-cache"})
    assert (refreshed.headers["X-Cache"], text(refreshed)) == ("MISS", "cc#2")
    assert (_post(gateway, "cc").headers["X-Cache"], text(_post(gateway, "cc"))) == ("HIT", "cc#2")
    assert _post(gateway, "cc", headers={"Pragma": "no-cache"}).headers["X-Cache"] == "MISS"
    bypass = _post(gateway, "cc", headers={"Cache-Control": "no-store"})
    assert (bypass.headers["X-Cache"], text(bypass)) == ("BYPASS", "cc#4")
    assert toy_upstream.arrivals["cc"] == 4
    # no-store stores nothing: a new prompt asked with it first is still a miss afterwards
    assert _post(gateway, "fresh", headers={"Cache-Control": "no-store"}).headers[
        "X-Cache"] == "BYPASS"
    assert _post(gateway, "fresh").headers["X-Cache"] == "MISS"
    streamed = _post(gateway, "cc", stream=True, headers={"Cache-Control": "no-cache"})
    assert streamed.headers["X-Cache"] == "MISS" and _events(streamed)[-1] == "[DONE]"
    assert toy_upstream.arrivals["cc"] == 5


def test_max_age_refuses_an_entry_older_than_asked(start_gateway, toy_upstream, redis_url):
    gateway = start_gateway(toy_upstream.url, redis_url)
    _post(gateway, "aged")
    time.sleep(1.1)
    hit = _post(gateway, "aged", headers={"Cache-Control": "max-age=60"})
    assert hit.headers["X-Cache"] == "HIT" and int(hit.headers["Age"]) >= 1
    assert _post(gateway, "aged", headers={"Cache-Control": "max-age=0"}).headers[
        "X-Cache"] == "MISS"


def test_answers_that_are_not_stored_say_bypass(start_gateway, toy_upstream, redis_url):
    gateway = start_gateway(toy_upstream.url, redis_url)
    for prompt in ("status:500", "status:400", "html:502"):
        answer = _post(gateway, prompt)
        assert answer.status_code >= 400 and answer.headers["X-Cache"] == "BYPASS", prompt
    assert _post(gateway, "status:503", stream=True).headers["X-Cache"] == "BYPASS"
    assert _post(gateway, "sampled", temperature=0.9).headers["X-Cache"] == "BYPASS"
    assert gateway.stats()["stores"] == 0


def test_every_hit_gets_its_own_id_and_created_and_names_the_original(
    start_gateway, toy_upstream, redis_url
) -> None:
    gateway = start_gateway(toy_upstream.url, redis_url)
    miss = _post(gateway, "ids")
    hits = [_post(gateway, "ids", headers={"X-Request-ID": f"req-{n}"}) for n in range(2)]
    assert miss.json()["id"] == "cmpl-1"
    assert [hit.json()["id"] for hit in hits] == ["cmpl-req-0", "cmpl-req-1"]
    assert {hit.headers["X-Cache-Original-Id"] for hit in hits} == {"cmpl-1"}
    for hit in hits:  # apart from the id, the answer is the stored one
        assert {**hit.json(), "id": "cmpl-1"} == miss.json()


def test_a_405_from_the_engine_keeps_its_allow_header(start_gateway, toy_upstream) -> None:
    gateway = start_gateway(toy_upstream.url)
    direct = requests.get(toy_upstream.url + "/v1/completions", timeout=10)
    through = requests.get(gateway.url + "/v1/completions", timeout=10)
    assert direct.status_code == through.status_code == 405
    assert through.headers["Allow"] == direct.headers["Allow"]
    assert through.json()["error"]["code"] == 405
