"""The two-tier cache against a real redis-server: fill, TTL, and Redis failing under it."""

from __future__ import annotations

import asyncio
import time

import pytest

from devloop.gateway.cache.store import REDIS_KEY_PREFIX, CacheConfig, ResponseCache

pytestmark = pytest.mark.redis


def _cache(url: str, **overrides) -> ResponseCache:
    settings = {
        "redis_url": url,
        "max_entries": 100,
        "max_bytes": 1 << 20,
        "ttl_seconds": 60,
        "redis_timeout_seconds": 0.1,
        "redis_retry_seconds": 0.2,
        **overrides,
    }
    return ResponseCache(CacheConfig(**settings))


def test_a_redis_hit_fills_the_local_tier(redis_url: str) -> None:
    async def scenario() -> tuple[dict, dict]:
        writer = _cache(redis_url)
        await writer.set("k", b"answer")
        await writer.aclose()
        reader = _cache(redis_url)  # another replica: empty local tier, same Redis
        assert await reader.get("k") == b"answer"
        after_first = dict(reader.snapshot())
        assert await reader.get("k") == b"answer"
        await reader.aclose()
        return after_first, reader.snapshot()

    first, second = asyncio.run(scenario())
    assert (first["hits_redis"], first["hits_local"], first["local_entries"]) == (1, 0, 1)
    assert (second["hits_redis"], second["hits_local"]) == (1, 1)


def test_answers_are_stored_in_redis_with_the_ttl(redis_server, redis_url: str) -> None:
    async def scenario() -> None:
        cache = _cache(redis_url, ttl_seconds=123)
        cache.set_in_background("k", b"answer")
        await cache.aclose()  # waits for the background write

    asyncio.run(scenario())
    client = redis_server.client()
    assert client.get(REDIS_KEY_PREFIX + "k") == b"answer"
    assert 0 < client.ttl(REDIS_KEY_PREFIX + "k") <= 123


def test_flush_deletes_only_the_caches_own_keys(redis_server, redis_url: str) -> None:
    client = redis_server.client()
    client.set("someone-else", b"keep me")

    async def scenario() -> int:
        cache = _cache(redis_url)
        for index in range(5):
            await cache.set(f"k{index}", b"v")
        deleted = await cache.flush()
        assert await cache.get("k0") is None
        await cache.aclose()
        return deleted

    assert asyncio.run(scenario()) == 5
    assert client.get("someone-else") == b"keep me"


def test_redis_stopped_mid_run_every_call_still_succeeds_and_the_cache_recovers(own_redis) -> None:
    async def scenario() -> dict:
        cache = _cache(own_redis.url)
        await cache.set("before", b"1")
        own_redis.stop()
        # Down: sets and gets keep working from the local tier, none raises, none is slow.
        for index in range(50):
            started = time.perf_counter()
            await cache.set(f"down{index}", b"2")
            assert await cache.get(f"down{index}") == b"2"
            assert await cache.get(f"absent{index}") is None
            assert time.perf_counter() - started < 0.5
        assert cache.redis_state == "degraded"
        errors_while_down = cache.stats.redis_errors
        own_redis.start()  # same port, empty (no persistence)
        await asyncio.sleep(0.3)  # past the retry back-off
        await cache.set("after", b"3")
        assert cache.redis_state == "up"
        other = _cache(own_redis.url)  # proves the write reached the restarted Redis
        assert await other.get("after") == b"3"
        await other.aclose()
        await cache.aclose()
        return {"errors": errors_while_down, **cache.snapshot()}

    stats = asyncio.run(scenario())
    assert stats["errors"] >= 1
    assert stats["redis_reconnects"] == 1


def test_a_stuck_redis_adds_at_most_the_timeout_to_a_lookup(own_redis) -> None:
    async def scenario() -> list[float]:
        cache = _cache(own_redis.url, redis_timeout_seconds=0.05, redis_retry_seconds=0.5)
        await cache.set("k", b"v")
        cache.local.clear()
        own_redis.pause()
        try:
            durations = []
            for _ in range(20):
                started = time.perf_counter()
                assert await cache.get("k") is None  # Redis would have it, but cannot answer
                durations.append(time.perf_counter() - started)
            return durations
        finally:
            own_redis.resume()
            await cache.aclose()

    durations = asyncio.run(scenario())
    assert max(durations) < 0.25  # the first call pays the (doubled) timeout at most
    assert sorted(durations)[len(durations) // 2] < 0.01  # later calls skip Redis during back-off


def test_a_redis_that_never_existed_degrades_without_raising(tmp_path) -> None:
    async def scenario() -> str:
        cache = _cache("redis://127.0.0.1:1/0")
        await cache.set("k", b"v")
        assert await cache.get("k") == b"v"
        await cache.aclose()
        return cache.redis_state

    assert asyncio.run(scenario()) == "degraded"


def test_concurrent_redis_lookups_each_get_their_own_answer(redis_url: str) -> None:
    import random

    keys = [f"key{index}" for index in range(300)]

    async def scenario() -> tuple[list, list, dict]:
        # What is checked is which answer each lookup gets, not how fast: a generous timeout,
        # so a busy machine (two xdist workers, one starting gateways) cannot fail the test.
        writer = _cache(redis_url, redis_timeout_seconds=5.0)
        for key in keys[:200]:  # the last 100 are absent: misses mixed into the batches
            await writer.set(key, f"answer-of-{key}".encode())
        await writer.aclose()
        reader = _cache(redis_url, redis_timeout_seconds=5.0)
        asked = keys * 2
        random.Random(7).shuffle(asked)
        got = await asyncio.gather(*(reader.get(key) for key in asked))
        await reader.aclose()
        return asked, got, reader.snapshot()

    asked, got, stats = asyncio.run(scenario())
    for key, value in zip(asked, got, strict=True):
        expected = f"answer-of-{key}".encode() if int(key[3:]) < 200 else None
        assert value == expected, key
    assert stats["redis"] == "up"
