"""The pool and a policy behind one `pick()`: which replica serves a request, waiting a bounded
time when none of its model is ready, and which failures may be retried on another replica.

A failure is retried only when the engine cannot have started on the request and nothing reached
the client: the connection was refused, reset or timed out while connecting, the engine said 503,
vLLM's 500 from an engine that is shutting down ("cannot schedule new futures after shutdown"),
or vLLM's 500 from an engine that died under the request (EngineDeadError: its answer can never
come, and a completion has no side effect to repeat).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from devloop.gateway.routing import policies
from devloop.gateway.routing.endpoints import Endpoint, EndpointPool

# What vLLM's API server answers (500) for a request that reaches it after its engine began to
# shut down (the thread pool behind it refuses new work), and for one its engine died under
# (EngineDeadError's message; seen on SIGTERM when a worker exits before the engine core).
SHUTTING_DOWN_MARKERS = (
    b"cannot schedule new futures after shutdown",
    b"EngineCore encountered an issue",
)
RETRYABLE_STATUSES = frozenset({503})


@dataclass(frozen=True)
class Target:
    """What routing needs from a request: its model (None: any) and its affinity key."""

    model: str | None
    key: str | None


class NoEndpoint(Exception):
    """No replica can take the request: `status` 404 (no engine lists the model) or 503 (none of
    them is ready within the wait); `retry_after` seconds for a 503."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def target_for(body: bytes, headers: Mapping[str, str]) -> Target:
    """The model and affinity key of a request body (JSON object or not)."""
    parsed: Any = None
    if body[:1] == b"{":
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            parsed = None
    if not isinstance(parsed, dict):
        return Target(None, policies.affinity_key(None, headers))
    model = parsed.get("model")
    return Target(model if isinstance(model, str) else None, policies.affinity_key(parsed, headers))


def is_retryable_answer(status: int, body: bytes) -> bool:
    """An engine answer that means "not me, not now": safe to send the request elsewhere."""
    if status in RETRYABLE_STATUSES:
        return True
    return status == 500 and any(marker in body for marker in SHUTTING_DOWN_MARKERS)


class Router:
    def __init__(
        self, pool: EndpointPool, policy: str, ready_wait_seconds: float, retry_after_seconds: int
    ) -> None:
        self.pool = pool
        self.policy = policy
        self.ready_wait_seconds = ready_wait_seconds
        self.retry_after_seconds = retry_after_seconds
        self.table = policies.AffinityTable()
        self._turn = 0

    def check_model(self, model: str | None) -> None:
        """NoEndpoint(404) listing the models when no engine lists `model`."""
        if model is None or self.pool.could_serve(model):
            return
        names = ", ".join(sorted(self.pool.models())) or "none"
        raise NoEndpoint(
            404,
            f"The model `{model}` does not exist. The models served here are: {names} "
            "(GET /v1/models lists them).",
        )

    async def pick(self, target: Target, tried: set[Endpoint]) -> Endpoint:
        """A ready replica for `target` not in `tried` (the ones that failed this request),
        waiting up to ready_wait_seconds for one; NoEndpoint when none comes."""
        self.check_model(target.model)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_wait_seconds
        while True:
            candidates = [e for e in self.pool.candidates(target.model) if e not in tried]
            if candidates:
                self._turn += 1
                endpoint = policies.choose(
                    self.policy, candidates, target.key, self.table, self._turn
                )
                return endpoint
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise self._unavailable(target.model)
            await self.pool.wait_for_change(remaining)
            self.check_model(target.model)
            # A replica that failed this request and is ready again may be tried again.
            tried -= {e for e in tried if e.state == "ready"}

    def _unavailable(self, model: str | None) -> NoEndpoint:
        replicas = [e for e in self.pool.endpoints if e.serves(model)]
        why = "; ".join(f"{e.url}: {e.state}" + (f" ({e.last_error})" if e.last_error else "")
                        for e in replicas) or "no replica is known"
        what = f"model `{model}`" if model else "any model"
        return NoEndpoint(
            503,
            f"no engine for {what} became ready within {self.ready_wait_seconds:g}s "
            f"(UPSTREAM_READY_WAIT_SECONDS): {why}",
            self.retry_after_seconds,
        )
