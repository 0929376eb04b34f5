"""What every request handler of one gateway process shares: settings, cache, engine client,
metrics, the single-flight table and the shutdown flags. Built inside the running event loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from devloop.gateway.cache.store import ResponseCache
from devloop.gateway.config import GatewayConfig
from devloop.gateway.metrics import GatewayMetrics
from devloop.gateway.proxy import Upstream, UpstreamAnswer


@dataclass
class GatewayState:
    """What every handler shares. Built inside the running event loop (`open_state`)."""

    config: GatewayConfig
    cache: ResponseCache
    metrics: GatewayMetrics
    upstream: Upstream
    # Cache key -> the one engine call identical concurrent misses wait on (single flight).
    inflight: dict[str, asyncio.Task[UpstreamAnswer]] = field(default_factory=dict)
    # SIGTERM: /ready says 503 so the endpoint leaves the Service; requests are still served.
    draining: bool = False
    # Draining or replaced by a newer worker: each response closes its connection, so clients
    # with a keep-alive pool reconnect to whoever serves next instead of racing our close.
    closing_connections: bool = False


STATE = web.AppKey("state", GatewayState)


async def open_state(config: GatewayConfig) -> GatewayState:
    cache = ResponseCache(config.cache_config())
    metrics = GatewayMetrics(cache.snapshot)
    upstream = Upstream(config, metrics)
    await upstream.start()
    return GatewayState(config, cache, metrics, upstream)


async def close_state(state: GatewayState) -> None:
    await state.upstream.close()
    await state.cache.aclose()
