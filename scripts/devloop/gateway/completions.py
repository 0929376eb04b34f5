"""POST /v1/completions and /v1/chat/completions: answered from the cache when they can be.

A reproducible non-streaming request (devloop.gateway.cache.key.is_cacheable) is looked up in the
local tier, then Redis (`X-Cache: HIT`); on a miss it is forwarded, vLLM's answer returned
unchanged (`X-Cache: MISS`) and, when it is a success, stored. Identical concurrent misses share
one upstream call (single flight). Everything else is forwarded untouched (`X-Cache: BYPASS`):
streams chunk by chunk, bodies that are not a JSON object as they are (the engine's validation
error is the right answer to them).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from devloop.gateway.cache.key import cache_key, is_cacheable
from devloop.gateway.errors import error_response
from devloop.gateway.proxy import UpstreamAnswer, answer_response
from devloop.gateway.state import STATE, GatewayState

CACHED_ENDPOINTS = ("/v1/completions", "/v1/chat/completions")


async def completion(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    started = time.perf_counter()
    try:
        response = await _completion(request, state)
    except web.HTTPRequestEntityTooLarge:
        response = error_response(
            413,
            f"request body is larger than the gateway's limit of "
            f"{state.config.max_body_bytes} bytes (MAX_BODY_BYTES)",
            "request_too_large",
        )
    state.metrics.observe(request.path, response.status, time.perf_counter() - started)
    return response


def _parse(raw: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None for anything else (invalid JSON or UTF-8, another
    JSON type, or nesting deeper than Python's recursion limit: the engine answers those)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def _key(path: str, body: dict[str, Any], authorization: str) -> str | None:
    try:
        return cache_key(path, body, authorization)
    except (RecursionError, ValueError):
        return None  # too deeply nested to canonicalise: never cached, the engine decides


async def _completion(request: web.Request, state: GatewayState) -> web.StreamResponse:
    max_body = state.config.max_body_bytes
    if request.content_length is not None and request.content_length > max_body:
        raise web.HTTPRequestEntityTooLarge(
            max_size=max_body, actual_size=request.content_length
        )
    raw = await request.read()
    headers = state.upstream.forward_headers(request)
    body = _parse(raw)
    if body is not None and body.get("stream"):
        return await state.upstream.stream(request, raw, headers, "BYPASS")
    key = None
    if body is not None and is_cacheable(body, state.config.cache_policy):
        key = _key(request.path, body, request.headers.get("Authorization", ""))
    if key is None:
        answer = await state.upstream.fetch("POST", state.upstream.url_for(request), raw, headers)
        return answer_response(answer, "BYPASS")

    cached = await state.cache.get(key)
    if cached is not None:
        return answer_response(UpstreamAnswer(200, cached), "HIT")
    task = state.inflight.get(key)
    leader = task is None
    if leader and (stored := state.cache.local.peek(key)) is not None:
        # An identical request finished while this one was looking in Redis.
        return answer_response(UpstreamAnswer(200, stored), "HIT")
    if leader:
        # The fetch runs as its own task: a leader whose client hangs up does not cancel the
        # call the followers are waiting on.
        task = asyncio.get_running_loop().create_task(
            _fetch_and_store(state, key, request, raw, headers)
        )
        state.inflight[key] = task
    else:
        state.metrics.coalesced.inc()
    answer = await asyncio.shield(task)
    response = answer_response(answer, "MISS")
    if leader and _storable(answer):
        # Send the answer first, then write it to Redis: the Redis round trip stays off the
        # client's latency (the local tier was filled already, in _fetch_and_store).
        try:
            await response.prepare(request)
            await response.write_eof()
        finally:
            state.cache.set_shared_in_background(key, answer.body)
    return response


def _storable(answer: UpstreamAnswer) -> bool:
    """Only complete successes are cached: never an error, a timeout or a refusal."""
    return answer.status == 200 and answer.content_type.startswith("application/json")


async def _fetch_and_store(
    state: GatewayState, key: str, request: web.Request, raw: bytes, headers: Any
) -> UpstreamAnswer:
    try:
        answer = await state.upstream.fetch("POST", state.upstream.url_for(request), raw, headers)
        if _storable(answer):
            # In the local tier before leaving the in-flight table, so no identical request
            # falls between the two and calls the engine again.
            state.cache.set_local(key, answer.body)
        return answer
    finally:
        state.inflight.pop(key, None)
