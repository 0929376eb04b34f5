"""The response cache: a two-tier store for answers, keyed by devloop.gateway.cache.key.

Tier 1 is an in-process least-recently-used map bounded by entries and bytes. Tier 2 is Redis,
shared by every gateway replica, with a TTL. A Redis hit fills tier 1.

Redis is an accelerator, never a dependency: when it is down, slow or restarting, every Redis call
is bounded by a timeout, the failure is logged once and counted, the cache answers from tier 1
alone for a back-off period, and then tries Redis again by itself. Nothing here raises into the
request path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from devloop.gateway.cache.key import KEY_VERSION
from devloop.gateway.cache.lru import LRUCache

log = logging.getLogger("devloop.cache")

REDIS_KEY_PREFIX = f"devloop:cache:{KEY_VERSION}:"
T = TypeVar("T")


@dataclass
class CacheConfig:
    """Bounds and Redis settings of a ResponseCache."""

    max_entries: int = 1024  # entries in the local tier; 0 disables it
    max_bytes: int = 64 * 1024 * 1024  # bytes of answers in the local tier
    redis_url: str | None = None  # None or "" disables the Redis tier
    ttl_seconds: int = 3600  # lifetime of an answer in Redis; 0 means no expiry
    # Socket timeout of a Redis call (a call is bounded by twice this). A GET takes well under 1 ms;
    # the margin is for a laptop whose CPUs vLLM saturates, where Redis can stall for a scheduling
    # slice, and giving up early turns a hit into an engine call that costs far more.
    redis_timeout_seconds: float = 0.25
    # After a Redis failure, skip Redis for this long before trying again (no added latency meanwhile).
    redis_retry_seconds: float = 1.0


@dataclass
class CacheStats:
    """Counters since start. `requests` counts lookups; hits + misses == requests."""

    requests: int = 0
    hits_local: int = 0
    hits_redis: int = 0
    misses: int = 0
    stores: int = 0
    evictions: int = 0
    redis_errors: int = 0
    redis_reconnects: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def check_redis_url(url: str, flag: str) -> None:
    """Raise a UsageError naming `flag` when `url` is not one redis-py can use (it is parsed
    exactly as the client will parse it; nothing is connected)."""
    from redis.asyncio import ConnectionPool

    from devloop.common.errors import UsageError

    try:
        ConnectionPool.from_url(url)
    except (ValueError, TypeError) as error:
        raise UsageError(
            f"Redis URL {url!r} is not usable: {error} ({flag}, e.g. redis://localhost:6379/0; "
            "'' for none)"
        ) from None


def make_redis_client(url: str, timeout_seconds: float) -> Any:
    """A redis.asyncio client whose every call fails within `timeout_seconds` and never retries:
    redis-py's default of three retries would triple the time a dead Redis adds to a request."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )


@dataclass
class ResponseCache:
    """The two-tier cache. Create it inside a running event loop (or call `aclose` from one)."""

    config: CacheConfig = field(default_factory=CacheConfig)

    def __post_init__(self) -> None:
        self.stats = CacheStats()
        self.local = LRUCache(self.config.max_entries, self.config.max_bytes)
        self._redis: Any = None
        if self.config.redis_url:
            self._redis = make_redis_client(
                self.config.redis_url, self.config.redis_timeout_seconds
            )
        self._degraded_until = 0.0  # monotonic time before which Redis is skipped
        self._degraded = False
        self._degraded_at = 0.0  # monotonic time of the last failure that degraded the tier
        self._recovered_at = 0.0  # ... and of the last recovery
        self._background: set[asyncio.Task[None]] = set()
        self._pending_gets: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._batching = False

    # -- state -------------------------------------------------------------------------------

    @property
    def redis_enabled(self) -> bool:
        return self._redis is not None

    @property
    def redis_state(self) -> str:
        """ "disabled", "up", or "degraded" (the last call failed; serving from the local tier)."""
        if self._redis is None:
            return "disabled"
        return "degraded" if self._degraded else "up"

    def snapshot(self) -> dict[str, Any]:
        """Stats plus the tiers' sizes, for /cache/stats and `devloop cache stats`."""
        self.stats.evictions = self.local.evictions
        return {
            **self.stats.as_dict(),
            "local_entries": len(self.local),
            "local_bytes": self.local.bytes,
            "local_max_entries": self.local.max_entries,
            "local_max_bytes": self.local.max_bytes,
            "redis": self.redis_state,
            "ttl_seconds": self.config.ttl_seconds,
        }

    # -- Redis calls, bounded and never raising ----------------------------------------------

    def _redis_available(self) -> bool:
        return self._redis is not None and time.monotonic() >= self._degraded_until

    async def _redis_failed(self, error: BaseException, started: float) -> None:
        self.stats.redis_errors += 1
        self._degraded_until = time.monotonic() + self.config.redis_retry_seconds
        if self._degraded or started < self._recovered_at:
            # Already degraded, or a call that began before the last recovery failing late
            # (on a connection of the old server): not news.
            return
        self._degraded = True
        self._degraded_at = time.monotonic()
        log.warning(
            "redis at %s failed (%s: %s); serving from the local tier and retrying every %.1fs",
            self.config.redis_url,
            type(error).__name__,
            error,
            self.config.redis_retry_seconds,
        )
        # Every pooled connection belongs to the server that just failed: drop them all now, or
        # the first calls after a restart pick them up, fail ("Connection closed by server")
        # and the log flaps (back, failed, back) on one recovery.
        try:
            await self._redis.connection_pool.disconnect()
        except Exception as close_error:  # noqa: BLE001 - closing dead sockets may fail too
            log.debug("dropping redis connections: %s", close_error)

    def _redis_ok(self, started: float) -> None:
        # Only a call that began after the failure proves recovery: one that was already under
        # way (a slow reply from before a freeze) says nothing about the server now.
        if self._degraded and started >= self._degraded_at:
            self._degraded = False
            self._recovered_at = time.monotonic()
            self.stats.redis_reconnects += 1
            log.warning(
                "redis at %s is back; the shared tier is in use again", self.config.redis_url
            )

    async def _redis_call(self, coro_factory: Any) -> tuple[bool, Any]:
        """Run one Redis command with the hard timeout. (ok, result); ok is False on any failure."""
        if not self._redis_available():
            return False, None
        started = time.monotonic()
        try:
            # The socket timeouts bound each read; this also bounds a connect that hangs in DNS.
            # (asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps the call in a task,
            # one more turn of the event loop on every lookup.)
            async with asyncio.timeout(self.config.redis_timeout_seconds * 2):
                result = await coro_factory()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - any failure of the optional tier degrades
            await self._redis_failed(error, started)
            return False, None
        self._redis_ok(started)
        return True, result

    # -- the cache API -----------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        """The stored answer for `key`, local tier first, then Redis (which refills local)."""
        return await self.lookup(key, lambda value: value)

    async def lookup(self, key: str, decode: Callable[[bytes], T | None]) -> T | None:
        """`decode(value)` of the stored answer for `key`, local tier first, then Redis (which
        refills local). A value that `decode` turns into None (damaged, or unable to answer
        this request) counts as a miss and leaves the local tier as it was."""
        self.stats.requests += 1
        value = self.local.get(key)
        if value is not None and (decoded := decode(value)) is not None:
            self.stats.hits_local += 1
            return decoded
        if value is None:
            value = await self._redis_get(key)
            if value is not None and (decoded := decode(value)) is not None:
                self.stats.hits_redis += 1
                self.local.set(key, value)
                return decoded
        self.stats.misses += 1
        return None

    async def _redis_get(self, key: str) -> bytes | None:
        """GET through a batcher: lookups that arrive while a Redis round trip is in flight are
        sent together as one MGET when it returns. A lookup that finds no round trip in flight
        makes its own GET right here (no task, no extra turn of the event loop: this is every
        miss's added latency); under load, many requests share one MGET, which is where the
        Redis tier's throughput comes from (redis-py's per-command cost dominates a loopback
        GET). A lookup waits at most for the round trip in flight plus its own, each bounded by
        the Redis timeout."""
        if not self._redis_available():
            return None
        if self._batching:
            future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
            self._pending_gets.setdefault(key, []).append(future)
            return await future
        self._batching = True
        try:
            ok, value = await self._redis_call(lambda: self._redis.get(REDIS_KEY_PREFIX + key))
        finally:
            self._batching = False
            if self._pending_gets:  # lookups that queued behind this one: one MGET for all
                self._batching = True
                task = asyncio.get_running_loop().create_task(self._run_get_batches())
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return value if ok else None

    async def _run_get_batches(self) -> None:
        try:
            while self._pending_gets:
                batch, self._pending_gets = self._pending_gets, {}
                keys = list(batch)
                names = [REDIS_KEY_PREFIX + key for key in keys]
                ok, values = await self._redis_call(lambda names=names: self._redis.mget(names))
                if not ok:
                    values = [None] * len(keys)
                for key, value in zip(keys, values, strict=True):
                    for waiter in batch[key]:
                        if not waiter.done():
                            waiter.set_result(value)
        finally:
            self._batching = False
            # Only on cancellation (shutdown) can waiters be left: they get a miss, not a hang.
            for waiters in self._pending_gets.values():
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
            self._pending_gets = {}

    async def peek(self, key: str) -> tuple[str, bytes] | None:
        """Like get, without counting or refilling: ("local"|"redis", value) or None."""
        value = self.local.peek(key)
        if value is not None:
            return "local", value
        ok, value = await self._redis_call(lambda: self._redis.get(REDIS_KEY_PREFIX + key))
        if ok and value is not None:
            return "redis", value
        return None

    async def set(self, key: str, value: bytes) -> None:
        """Store in the local tier now and in Redis (awaited: callers that must not wait use
        `set_in_background`)."""
        self.stats.stores += 1
        self.local.set(key, value)
        self.stats.evictions = self.local.evictions
        await self._redis_set(key, value)

    def set_in_background(self, key: str, value: bytes) -> None:
        """Store without making the caller wait for Redis: the local tier is filled at once (so
        the next identical request hits), the Redis write runs as a task."""
        self.set_local(key, value)
        self.set_shared_in_background(key, value)

    def set_local(self, key: str, value: bytes) -> None:
        """The first half of set_in_background: count the store and fill the local tier."""
        self.stats.stores += 1
        self.local.set(key, value)
        self.stats.evictions = self.local.evictions

    def set_shared_in_background(self, key: str, value: bytes) -> None:
        """The second half: write to Redis in a task. The gateway calls it after the answer is on
        its way to the client, so the write is not on the request's critical path."""
        if self._redis_available():
            task = asyncio.get_running_loop().create_task(self._redis_set(key, value))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _redis_set(self, key: str, value: bytes) -> None:
        ttl = self.config.ttl_seconds if self.config.ttl_seconds > 0 else None
        await self._redis_call(lambda: self._redis.set(REDIS_KEY_PREFIX + key, value, ex=ttl))

    async def drain(self) -> None:
        """Wait for background Redis writes (tests and shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def flush(self) -> int:
        """Empty the local tier and delete this cache's keys from Redis (other keys in the same
        database are left alone). Returns the number of Redis keys deleted."""
        self.local.clear()
        if self._redis is None:
            return 0
        return await flush_redis(self._redis)

    async def ping_redis(self) -> str:
        """Try Redis now (ignoring the back-off) and return the resulting state."""
        if self._redis is None:
            return "disabled"
        self._degraded_until = 0.0
        await self._redis_call(lambda: self._redis.ping())
        return self.redis_state

    async def aclose(self) -> None:
        await self.drain()
        if self._redis is not None:
            try:
                await self._redis.aclose()
            except Exception as error:  # noqa: BLE001 - closing a dead connection may fail
                log.debug("closing the redis client: %s", error)


async def flush_redis(client: Any) -> int:
    """Delete every key under REDIS_KEY_PREFIX, in batches (SCAN, never KEYS or FLUSHDB)."""
    deleted = 0
    batch: list[bytes] = []
    async for name in client.scan_iter(match=REDIS_KEY_PREFIX + "*", count=1000):
        batch.append(name)
        if len(batch) >= 1000:
            deleted += await client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += await client.unlink(*batch)
    return deleted
