"""One engine replica as the gateway sees it, and the pool of all of them.

A replica is `unknown` until first probed (usable: the first request need not wait for a
probe), `ready` after a good /health, `down` after a failed probe or a refused connection (skipped
until a probe finds it back), and `gone` once its Service's DNS stops listing it. Its keep-alive
connections are closed when it turns down or gone, as soon as no request is using them, so no
request is ever sent on a connection to a pod that left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

UNKNOWN, READY, DOWN, GONE = "unknown", "ready", "down", "gone"
USABLE = frozenset({UNKNOWN, READY})


@dataclass(eq=False)
class Endpoint:
    """One replica: `upstream` is the configured URL it was found from (the metrics label, bounded
    by the configuration), `url` its own base URL (a pod IP behind a headless Service)."""

    upstream: str
    url: str
    state: str = UNKNOWN
    # The engine's /v1/models entries by id; None until learned (then it may serve anything).
    models: dict[str, dict[str, Any]] | None = None
    outstanding: int = 0  # requests sent and not yet finished
    served: int = 0  # requests ever sent: the tie-break that spreads an idle pool
    last_error: str | None = None
    models_learned_at: float = 0.0
    client: Any = None  # its aiohttp.ClientSession, made by the pool's factory on first use

    @property
    def usable(self) -> bool:
        return self.state in USABLE

    def serves(self, model: str | None) -> bool:
        return model is None or self.models is None or model in self.models

    def describe(self) -> dict[str, Any]:
        """The replica for /health."""
        state: dict[str, Any] = {"upstream": self.upstream, "url": self.url, "state": self.state,
                                 "outstanding": self.outstanding}
        if self.models is not None:
            state["models"] = sorted(self.models)
        if self.last_error and self.state != READY:
            state["error"] = self.last_error
        return state


class EndpointPool:
    """Every replica of every configured upstream. Lives in the gateway's event loop."""

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self.endpoints: list[Endpoint] = []
        self._client_factory = client_factory
        self._changed = asyncio.Event()
        self._users: dict[Any, int] = {}  # client -> requests using it now

    # -- what the router reads --------------------------------------------------------------

    def candidates(self, model: str | None) -> list[Endpoint]:
        """Usable replicas that serve `model` (or whose models are not known yet)."""
        return [e for e in self.endpoints if e.usable and e.serves(model)]

    def models(self) -> dict[str, dict[str, Any]]:
        """Every model any present replica lists, by id (the first listing of an id wins)."""
        merged: dict[str, dict[str, Any]] = {}
        for endpoint in self.endpoints:
            for model_id, entry in (endpoint.models or {}).items():
                merged.setdefault(model_id, entry)
        return merged

    def could_serve(self, model: str) -> bool:
        """False only when every replica's models are known and none lists `model`."""
        present = [e for e in self.endpoints if e.state != GONE]
        return any(e.models is None or model in e.models for e in present)

    async def wait_for_change(self, timeout: float) -> None:
        """Until a replica's state changes (or `timeout` seconds)."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    # -- what the health loop and the proxy report ------------------------------------------

    def mark_ready(self, endpoint: Endpoint) -> None:
        if endpoint.state != READY:
            endpoint.state = READY
            endpoint.last_error = None
            self._notify()

    def mark_down(self, endpoint: Endpoint, error: str) -> None:
        endpoint.last_error = error
        if endpoint.state in USABLE:
            endpoint.state = DOWN
            self.retire_connections(endpoint)
            self._notify()

    def learn_models(self, endpoint: Endpoint, models: dict[str, dict[str, Any]], now: float) -> None:
        changed = endpoint.models is None or set(models) != set(endpoint.models)
        endpoint.models, endpoint.models_learned_at = models, now
        if changed:
            self._notify()

    def sync_replicas(self, upstream: str, urls: list[str]) -> None:
        """The replicas DNS lists now for `upstream`: new ones join (unknown), missing ones leave."""
        known = {e.url: e for e in self.endpoints if e.upstream == upstream}
        for url in urls:
            if url not in known:
                self.endpoints.append(Endpoint(upstream, url))
                self._notify()
            elif known[url].state == GONE:
                known[url].state = UNKNOWN
                self._notify()
        for url, endpoint in known.items():
            if url not in urls and endpoint.state != GONE:
                endpoint.state = GONE
                self.retire_connections(endpoint)
                self._notify()
        self._forget_gone()

    def acquire(self, endpoint: Endpoint, counted: bool = True) -> Any:
        """The replica's HTTP client for one request (`counted`: in its outstanding count; a
        health probe is not). Give it back with `release`."""
        if endpoint.client is None:
            endpoint.client = self._client_factory()
        self._users[endpoint.client] = self._users.get(endpoint.client, 0) + 1
        if counted:
            endpoint.outstanding += 1
            endpoint.served += 1
        return endpoint.client

    def release(self, endpoint: Endpoint, client: Any, counted: bool = True) -> None:
        if counted:
            endpoint.outstanding -= 1
        self._users[client] -= 1
        if self._users[client] == 0:
            del self._users[client]
            if client is not endpoint.client:  # retired while this request used it
                self._close(client)
        self._forget_gone()

    def retire_connections(self, endpoint: Endpoint) -> None:
        """No request is sent on its pooled connections again: the next one gets a new client;
        the old one closes when its last request finishes (closing it now would abort them)."""
        old, endpoint.client = endpoint.client, None
        if old is not None and old not in self._users:
            self._close(old)

    async def aclose(self) -> None:
        clients = {e.client for e in self.endpoints if e.client is not None} | set(self._users)
        for client in clients:
            await client.close()
        self._users.clear()

    def _close(self, client: Any) -> None:
        asyncio.get_running_loop().create_task(client.close())

    def _forget_gone(self) -> None:
        """A gone replica with nothing in flight is forgotten (pod IPs are not reused soon)."""
        self.endpoints = [e for e in self.endpoints if not (e.state == GONE and e.outstanding == 0)]

    def _notify(self) -> None:
        # Wake every waiter, then arm a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()
