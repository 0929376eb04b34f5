"""The gateway's two aiohttp applications over one shared state.

- The API app (GATEWAY_PORT, what the Service and the Ingress expose): the OpenAI routes, cached
  or relayed; /health (liveness), /ready (readiness), /metrics; everything else proxied to the
  engine. /cache/* answers 404 here: emptying the shared cache is not for API clients.
- The admin app (GATEWAY_ADMIN_PORT, on the pod's loopback): /cache/stats and /cache/flush, for
  `devloop cache` through `kubectl port-forward`.

Both share the middlewares: a request id and one access-log line per request, and OpenAI-shaped
error bodies for whatever aiohttp or a handler raises.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from devloop.gateway import admin, completions, routes
from devloop.gateway.errors import openai_errors
from devloop.gateway.proxy import REQUEST_ID_HEADER
from devloop.gateway.state import STATE, GatewayState

log = logging.getLogger("devloop.gateway")
# One line per request: its own logger, so a deployment can silence it alone.
access_log = logging.getLogger("devloop.gateway.access")

# An incoming id is kept if it looks like an id (no spaces, quotes or control characters, which
# would let a client forge or break log lines); anything else gets a fresh one.
_MAX_REQUEST_ID = 128
# Probes and scrapes arrive every few seconds and say nothing: logged at debug level only.
_QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})


def request_id_from(header: str | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a new random one."""
    if header and len(header) <= _MAX_REQUEST_ID and all(
        33 <= ord(char) <= 126 and char not in '"\\' for char in header
    ):
        return header
    return uuid.uuid4().hex


@web.middleware
async def request_context(request: web.Request, handler: Any) -> web.StreamResponse:
    """A request id for every request. Answered requests are logged by AccessLogger, after the
    response went out; one whose client went away first is logged here, as 499."""
    request["request_id"] = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    started = time.perf_counter()
    try:
        return await handler(request)
    except (asyncio.CancelledError, ConnectionResetError):
        _log_access(request, 499, None, time.perf_counter() - started)  # nginx's code for it
        raise


class AccessLogger(AbstractAccessLogger):
    """One line per answered request, written after the response is sent (aiohttp calls it
    then), so formatting and writing the line is never part of a client's latency."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        _log_access(request, response.status, response.headers.get("X-Cache"), time)


def _log_access(request: web.BaseRequest, status: int, cache: str | None, seconds: float) -> None:
    level = logging.DEBUG if request.path in _QUIET_PATHS else logging.INFO
    if access_log.isEnabledFor(level):
        access_log.log(
            level,
            "request",
            extra={
                "request_id": request.get("request_id"),
                "method": request.method,
                "path": request.path,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "cache": cache,
            },
        )


async def _on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Runs just before a response's headers go out (streaming handlers prepare their response
    themselves, after which a middleware could no longer add a header)."""
    if "request_id" in request:
        response.headers[REQUEST_ID_HEADER] = request["request_id"]
    if request.app[STATE].closing_connections:
        response.force_close()  # the server closes the connection after this response
        response.headers["Connection"] = "close"  # and says so (headers are computed already)


def _application(state: GatewayState, client_max_size: int) -> web.Application:
    app = web.Application(
        client_max_size=client_max_size, middlewares=[request_context, openai_errors]
    )
    app[STATE] = state
    app.on_response_prepare.append(_on_response_prepare)
    return app


def build_api_app(state: GatewayState) -> web.Application:
    app = _application(state, state.config.max_body_bytes)
    app.router.add_get("/health", routes.health)
    app.router.add_get("/ready", routes.ready)
    app.router.add_get("/metrics", routes.metrics)
    app.router.add_get("/v1/models", routes.models)
    for path in completions.CACHED_ENDPOINTS:
        app.router.add_post(path, completions.completion)
    app.router.add_route("*", "/cache/{tail:.*}", routes.admin_elsewhere)
    app.router.add_route("*", "/{tail:.*}", routes.passthrough)
    return app


def build_admin_app(state: GatewayState) -> web.Application:
    app = _application(state, 1024 * 1024)
    app.router.add_get("/cache/stats", admin.cache_stats)
    app.router.add_post("/cache/flush", admin.cache_flush)
    app.router.add_get("/health", routes.health)
    app.router.add_route("*", "/{tail:.*}", admin.not_found)
    return app
