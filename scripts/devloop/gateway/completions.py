"""POST /v1/completions and /v1/chat/completions: answered from the cache when they can be.

A reproducible request (devloop.gateway.cache.key.is_cacheable), streamed or not, is looked up
in the local tier, then Redis (`X-Cache: HIT`, answered in the form it asks for whichever form
was stored: devloop.gateway.replay); on a miss it is forwarded, the engine's answer returned
unchanged (`X-Cache: MISS`) and, when it is a complete success, stored. Identical concurrent
non-streaming misses share one upstream call (single flight). The request's Cache-Control is
obeyed (devloop.gateway.cache.control: no-cache refreshes, no-store bypasses). Everything else
is forwarded untouched and says `X-Cache: BYPASS`, as does every error answer (never stored):
streams chunk by chunk, bodies that are not a JSON object as they are (the engine's validation
error is the right answer to them).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from devloop.gateway.cache.control import RequestCacheControl, parse_request_cache_control
from devloop.gateway.cache.key import cache_key, is_cacheable, wants_usage_chunk
from devloop.gateway.cache.record import StoredAnswer
from devloop.gateway.errors import error_response
from devloop.gateway.proxy import UpstreamAnswer, answer_response
from devloop.gateway.replay import hit_response, relay_and_record
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
    stream = body is not None and bool(body.get("stream"))
    control = parse_request_cache_control(
        request.headers.get("Cache-Control"), request.headers.get("Pragma")
    )
    key = None
    if body is not None and control.store and is_cacheable(body, state.config.cache_policy):
        key = _key(request.path, body, request.headers.get("Authorization", ""))
    if key is None or body is None:
        if stream:
            return await state.upstream.stream(request, raw, headers, "BYPASS")
        answer = await state.upstream.fetch("POST", state.upstream.url_for(request), raw, headers)
        return answer_response(answer, "BYPASS")

    include_usage = wants_usage_chunk(body)
    if control.lookup:
        entry = await state.cache.lookup(key, _usable_for(stream, include_usage, control))
        if entry is not None:
            return hit_response(request, entry, stream, include_usage)
    if stream:
        return await relay_and_record(state, request, raw, headers, key)
    if not control.lookup:
        # no-cache: a fresh answer of its own (not an identical call in flight), then stored.
        answer = await _fetch_and_store(state, key, request, raw, headers, coalesce=False)
        return await _miss_response(state, request, key, answer)
    task = state.inflight.get(key)
    leader = task is None
    if leader and (stored := state.cache.local.peek(key)) is not None:
        # An identical request finished while this one was looking in Redis.
        entry = _usable_for(False, False, control)(stored)
        if entry is not None:
            return hit_response(request, entry, False, False)
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
    if leader:
        return await _miss_response(state, request, key, answer)
    if _storable(answer) and (entry := StoredAnswer.from_json_answer(answer.body)):
        # A follower gets the leader's answer under its own id, as a hit would.
        return hit_response(request, entry, False, False, label="MISS")
    return answer_response(answer, "BYPASS")


def _usable_for(
    stream: bool, include_usage: bool, control: RequestCacheControl
) -> Callable[[bytes], StoredAnswer | None]:
    """A cache value as an entry that can answer this request, or None (a miss)."""

    def decode(value: bytes) -> StoredAnswer | None:
        entry = StoredAnswer.from_bytes(value)
        if entry is None or not entry.can_answer(stream, include_usage):
            return None
        if control.max_age_seconds is not None and entry.age_seconds() > control.max_age_seconds:
            return None
        return entry

    return decode


async def _miss_response(
    state: GatewayState, request: web.Request, key: str, answer: UpstreamAnswer
) -> web.StreamResponse:
    """The engine's answer, MISS when it was stored (BYPASS otherwise); sent first, and then
    written to Redis: the Redis round trip stays off the client's latency (the local tier was
    filled already, in _fetch_and_store)."""
    stored = None
    if _storable(answer):
        # The local tier has it, unless it is off (Redis only) or evicted it already.
        stored = state.cache.local.peek(key)
        if stored is None and (entry := StoredAnswer.from_json_answer(answer.body)):
            stored = entry.to_bytes()
    response = answer_response(answer, "MISS" if stored is not None else "BYPASS")
    if stored is not None:
        try:
            await response.prepare(request)
            await response.write_eof()
        finally:
            state.cache.set_shared_in_background(key, stored)
    return response


def _storable(answer: UpstreamAnswer) -> bool:
    """Only complete successes are cached: never an error, a timeout or a refusal."""
    return answer.status == 200 and answer.content_type.startswith("application/json")


async def _fetch_and_store(
    state: GatewayState, key: str, request: web.Request, raw: bytes, headers: Any,
    coalesce: bool = True,
) -> UpstreamAnswer:
    try:
        answer = await state.upstream.fetch("POST", state.upstream.url_for(request), raw, headers)
        if _storable(answer) and (entry := StoredAnswer.from_json_answer(answer.body)):
            # In the local tier before leaving the in-flight table, so no identical request
            # falls between the two and calls the engine again.
            state.cache.set_local(key, entry.to_bytes())
        return answer
    finally:
        if coalesce:
            state.inflight.pop(key, None)
