"""The pool's states and the router's choices, waits and refusals, in a real event loop
(devloop.gateway.routing.endpoints and .router)."""

from __future__ import annotations

import asyncio

import pytest

from devloop.gateway.routing.endpoints import DOWN, GONE, READY, EndpointPool
from devloop.gateway.routing.router import (
    NoEndpoint,
    Router,
    Target,
    is_retryable_answer,
    target_for,
)


class FakeClient:
    """Stands in for aiohttp.ClientSession: the pool only ever closes it."""

    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


def _pool(*urls: str) -> EndpointPool:
    pool = EndpointPool(FakeClient)
    pool.sync_replicas("http://svc:8000", list(urls))
    return pool


def _router(pool: EndpointPool, wait: float = 0.2) -> Router:
    return Router(pool, "affinity", ready_wait_seconds=wait, retry_after_seconds=4)


def test_a_request_goes_to_a_replica_serving_its_model() -> None:
    async def scenario() -> None:
        pool = _pool("http://10.0.0.1:8000", "http://10.0.0.2:8000")
        a, b = pool.endpoints
        pool.learn_models(a, {"tiny-a": {"id": "tiny-a"}}, 0)
        pool.learn_models(b, {"tiny-b": {"id": "tiny-b"}}, 0)
        router = _router(pool)
        assert await router.pick(Target("tiny-b", None), set()) is b
        assert await router.pick(Target("tiny-a", None), set()) is a
        assert set(pool.models()) == {"tiny-a", "tiny-b"}

    asyncio.run(scenario())


def test_an_unknown_model_is_a_404_listing_the_models_once_every_listing_is_known() -> None:
    async def scenario() -> None:
        pool = _pool("http://10.0.0.1:8000", "http://10.0.0.2:8000")
        a, b = pool.endpoints
        pool.learn_models(a, {"tiny-a": {}}, 0)
        router = _router(pool)
        # b's models are not known yet: it might serve "nope", so no 404 (it is tried).
        assert await router.pick(Target("nope", None), set()) is b
        pool.learn_models(b, {"tiny-b": {}}, 0)
        with pytest.raises(NoEndpoint) as refusal:
            await router.pick(Target("nope", None), set())
        assert refusal.value.status == 404
        assert "tiny-a, tiny-b" in refusal.value.message

    asyncio.run(scenario())


def test_with_no_ready_replica_a_request_waits_and_goes_when_one_comes_back() -> None:
    async def scenario() -> None:
        pool = _pool("http://10.0.0.1:8000")
        (only,) = pool.endpoints
        pool.mark_down(only, "ConnectionRefusedError")
        router = _router(pool, wait=5)
        waiting = asyncio.ensure_future(router.pick(Target(None, None), set()))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        pool.mark_ready(only)
        assert await asyncio.wait_for(waiting, 1) is only

    asyncio.run(scenario())


def test_after_the_bounded_wait_it_is_a_503_with_retry_after_and_the_reason() -> None:
    async def scenario() -> None:
        pool = _pool("http://10.0.0.1:8000")
        pool.mark_down(pool.endpoints[0], "ClientConnectorError: refused")
        with pytest.raises(NoEndpoint) as refusal:
            await _router(pool, wait=0.1).pick(Target("m", None), set())
        assert (refusal.value.status, refusal.value.retry_after) == (503, 4)
        assert "within 0.1s" in refusal.value.message and "refused" in refusal.value.message

    asyncio.run(scenario())


def test_a_replica_that_failed_this_request_is_skipped() -> None:
    async def scenario() -> None:
        pool = _pool("http://10.0.0.1:8000", "http://10.0.0.2:8000")
        a, b = pool.endpoints
        assert await _router(pool).pick(Target(None, None), {a}) is b

    asyncio.run(scenario())


def test_a_replica_dns_stops_listing_leaves_and_its_connections_close_after_its_last_request(
) -> None:
    async def scenario() -> None:
        pool = _pool("http://10.0.0.1:8000", "http://10.0.0.2:8000")
        a, b = pool.endpoints
        client = pool.acquire(a)  # a request in flight on a
        pool.sync_replicas("http://svc:8000", ["http://10.0.0.2:8000"])
        assert a.state == GONE and pool.candidates(None) == [b]
        assert not client.closed  # closing now would abort the request in flight
        pool.release(a, client)
        await asyncio.sleep(0)
        assert client.closed and pool.endpoints == [b]

    asyncio.run(scenario())


def test_a_replica_marked_down_gets_a_new_client_when_it_is_back() -> None:
    async def scenario() -> None:
        pool = _pool("http://10.0.0.1:8000")
        (only,) = pool.endpoints
        first = pool.acquire(only)
        pool.release(only, first)
        pool.mark_down(only, "reset")
        await asyncio.sleep(0)
        assert only.state == DOWN and first.closed
        pool.mark_ready(only)
        assert only.state == READY and pool.acquire(only) is not first

    asyncio.run(scenario())


def test_the_target_is_read_from_the_body_and_the_session_header() -> None:
    target = target_for(b'{"model": "tiny", "prompt": "hi"}', {"X-Session-ID": "abc"})
    assert target == Target("tiny", "session:abc")
    assert target_for(b"not json", {}) == Target(None, None)
    assert target_for(b'{"model": 3}', {}).model is None


def test_only_answers_that_say_the_engine_is_going_away_are_retried() -> None:
    assert is_retryable_answer(503, b"")
    assert is_retryable_answer(500, b'{"error": "cannot schedule new futures after shutdown"}')
    # vLLM 0.32's EngineDeadError answer: the engine died under the request
    assert is_retryable_answer(500, b'{"error":{"message":"EngineCore encountered an issue. See '
                                    b'stack trace (above) for the root cause.","type":'
                                    b'"InternalServerError","param":null,"code":500}}')
    assert not is_retryable_answer(500, b'{"error": "something else"}')
    assert not is_retryable_answer(400, b"")
