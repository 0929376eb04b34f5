"""The API port's own routes and the catch-all proxy.

GET /health is liveness: 200 for as long as the process runs (while the engines still load their
models, and while draining), with every engine replica's and Redis's state in the body. GET
/v1/models is the merge of every engine's list. GET /ready is
readiness: 200 while serving, 503 from SIGTERM on, so Kubernetes takes the pod out of its
Services before it stops. Any path without a route of its own (/tokenize, /version...) is
forwarded as is to an engine (the one serving the body's `model`, if it names one) and never
cached.
"""

from __future__ import annotations

import json
import os
import time

from aiohttp import web

from devloop import __version__
from devloop.gateway.errors import error_response
from devloop.gateway.proxy import answer_response
from devloop.gateway.state import STATE

# Paths counted under their own route label; everything else is "other" (bounded cardinality).
_NAMED_ROUTES = frozenset({"/v1/models", "/version"})


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    upstream = state.upstream.health()
    redis_state = await state.cache.ping_redis()
    body = {
        "status": "ok",
        "ready": not state.draining,
        "version": __version__,
        "pid": os.getpid(),
        "upstream": upstream,
        "redis": redis_state,
    }
    return web.Response(body=json.dumps(body).encode(), content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    if request.app[STATE].draining:
        return error_response(
            503,
            "the gateway is shutting down: it finishes the requests it has and takes no new "
            "ones once its endpoint is gone; retry on another replica",
            "service_unavailable",
        )
    return web.Response(body=b'{"status": "ready"}', content_type="application/json")


async def models(request: web.Request) -> web.Response:
    """Every engine's models in one OpenAI list (an id listed by two engines appears once)."""
    state = request.app[STATE]
    started = time.perf_counter()
    merged = state.upstream.pool.models()
    if not merged:
        await state.upstream.monitor.refresh()  # none known yet: ask the engines now
        merged = state.upstream.pool.models()
    if merged:
        response = web.Response(
            body=json.dumps({"object": "list", "data": list(merged.values())}).encode(),
            content_type="application/json", headers={"X-Cache": "BYPASS"},
        )
    else:
        answer = await state.upstream.fetch(  # no engine answers: its error, or the 503
            "GET", state.upstream.url_for(request), b"", state.upstream.forward_headers(request)
        )
        response = answer_response(answer, "BYPASS")
    state.metrics.observe("/v1/models", response.status, time.perf_counter() - started)
    return response


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[STATE].metrics.exposition(request.headers.get("Accept", ""))
    return web.Response(
        body=body, headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff"}
    )


async def admin_elsewhere(request: web.Request) -> web.Response:
    """/cache/* on the API port: not here, and not forwarded to the engine either."""
    return error_response(
        404,
        f"{request.path} is not served on the API port; the cache's admin endpoints listen on "
        "the gateway's admin port (GATEWAY_ADMIN_PORT, the pod's loopback): see "
        "`devloop cache --help`",
    )


async def passthrough(request: web.Request) -> web.Response:
    state = request.app[STATE]
    started = time.perf_counter()
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return error_response(
            413,
            f"request body is larger than the gateway's limit of "
            f"{state.config.max_body_bytes} bytes (MAX_BODY_BYTES)",
            "request_too_large",
        )
    answer = await state.upstream.fetch(
        request.method, state.upstream.url_for(request), raw,
        state.upstream.forward_headers(request),
    )
    response = answer_response(answer, "BYPASS")
    route = request.path if request.path in _NAMED_ROUTES else "other"
    state.metrics.observe(route, response.status, time.perf_counter() - started)
    return response
