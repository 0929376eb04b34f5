"""The admin port's routes, for `devloop cache stats|flush` (reached with `kubectl port-forward`:
the port listens on the pod's loopback only, so no Service, Ingress or other pod can get here)."""

from __future__ import annotations

import json

from aiohttp import web

from devloop.gateway.errors import error_response
from devloop.gateway.state import STATE


def _json(payload: object) -> web.Response:
    return web.Response(body=json.dumps(payload).encode(), content_type="application/json")


async def cache_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _json(
        {
            **state.cache.snapshot(),
            "inflight": len(state.inflight),
            "coalesced": state.metrics.total("devloop_gateway_coalesced_total"),
            "upstream_requests": state.metrics.total("devloop_gateway_upstream_requests_total"),
        }
    )


async def cache_flush(request: web.Request) -> web.Response:
    deleted = await request.app[STATE].cache.flush()
    return _json({"flushed": True, "redis_keys_deleted": deleted})


async def not_found(request: web.Request) -> web.Response:
    return error_response(
        404, f"no admin endpoint {request.method} {request.path}; there are GET /cache/stats, "
        "POST /cache/flush and GET /health"
    )
