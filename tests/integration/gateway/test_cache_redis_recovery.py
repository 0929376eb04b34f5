"""Redis killed and restarted under load: the gateway logs one failure and one recovery per
outage, never a flap (back, failed, back) from connections that died with the old server."""

from __future__ import annotations

import concurrent.futures
import signal
import threading
import time

import pytest
import requests

pytestmark = pytest.mark.redis


def _load(gateway, stop: threading.Event, failures: list) -> None:
    """Deterministic requests over a few prompts (Redis lookups and writes), until stopped."""
    session = requests.Session()
    index = 0
    while not stop.is_set():
        body = {"model": "toy", "prompt": f"p{index % 50}", "temperature": 0, "max_tokens": 2}
        answer = session.post(gateway.url + "/v1/completions", json=body, timeout=30)
        if answer.status_code != 200:
            failures.append(answer.status_code)
        index += 1


def test_a_killed_and_restarted_redis_is_reported_once_each_way(
    start_gateway, toy_upstream, own_redis
) -> None:
    # The local tier off: every lookup goes to Redis, so every pooled connection gets used.
    gateway = start_gateway(toy_upstream.url, own_redis.url, "--cache-max-entries", "0")
    stop, failures = threading.Event(), []
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        workers = [pool.submit(_load, gateway, stop, failures) for _ in range(8)]
        try:
            for _outage in range(2):
                time.sleep(1.0)  # the pool holds several open connections now
                own_redis.process.send_signal(signal.SIGKILL)
                own_redis.process.wait(timeout=10)
                time.sleep(1.5)
                own_redis.start()
                time.sleep(3.0)  # past the 1 s back-off, with every worker using Redis again
        finally:
            stop.set()
            for worker in workers:
                worker.result()
    assert failures == []
    log = gateway.log()
    assert log.count("serving from the local tier") == 2, log
    assert log.count("is back") == 2, log
    assert gateway.stats()["redis"] == "up"
