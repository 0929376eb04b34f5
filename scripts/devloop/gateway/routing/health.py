"""The background refresh of the pool: every `interval` seconds, each upstream's DNS (replicas
joining and leaving), each replica's /health (ready or down), and its /v1/models when it just
came back, was never listed, or its listing is older than `models_max_age`."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from devloop.gateway.routing.discovery import models_from_listing, resolve_replicas
from devloop.gateway.routing.endpoints import GONE, READY, Endpoint, EndpointPool

log = logging.getLogger("devloop.gateway")
PROBE_TIMEOUT_SECONDS = 2.0


class HealthMonitor:
    def __init__(
        self,
        pool: EndpointPool,
        upstreams: tuple[str, ...],
        interval: float,
        models_max_age: float = 30.0,
    ) -> None:
        self.pool = pool
        self.upstreams = upstreams
        self.interval = interval
        self.models_max_age = models_max_age
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """The first round runs before the gateway serves: requests find the pool filled."""
        for upstream in self.upstreams:
            self.pool.sync_replicas(upstream, await resolve_replicas(upstream) or [upstream])
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                for upstream in self.upstreams:
                    urls = await resolve_replicas(upstream)
                    if urls is not None:
                        self.pool.sync_replicas(upstream, urls)
                await self.refresh()
            except Exception:  # the loop must outlive any surprise; the next round retries
                log.exception("refreshing the engine list failed")

    async def refresh(self) -> None:
        await asyncio.gather(*(self.probe(e) for e in self.pool.endpoints if e.state != GONE))

    async def probe(self, endpoint: Endpoint) -> None:
        """One replica's /health, then its models when they are due."""
        was_ready = endpoint.state == READY
        client = self.pool.acquire(endpoint, counted=False)
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_SECONDS)
        try:
            async with client.get(endpoint.url + "/health", timeout=timeout) as response:
                await response.read()
                healthy = response.status == 200
                error = f"/health answered {response.status}"
            now = time.monotonic()
            stale = now - endpoint.models_learned_at > self.models_max_age
            if healthy and (not was_ready or endpoint.models is None or stale):
                async with client.get(endpoint.url + "/v1/models", timeout=timeout) as response:
                    listing = models_from_listing(await response.json(content_type=None))
                self.pool.learn_models(endpoint, listing, now)
        except (TimeoutError, aiohttp.ClientError, ValueError) as problem:
            healthy, error = False, f"{type(problem).__name__}: {problem}"
        finally:
            self.pool.release(endpoint, client, counted=False)
        if healthy:
            if not was_ready:
                log.info("engine %s is ready (models %s)", endpoint.url,
                         ", ".join(sorted(endpoint.models or {})))
            self.pool.mark_ready(endpoint)
        else:
            if was_ready:
                log.warning("engine %s is down: %s", endpoint.url, error)
            self.pool.mark_down(endpoint, error)
