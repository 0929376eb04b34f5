"""The cache key: what makes two requests the same request, and which requests may be cached.

A cache must never hand one request another's answer: the key is the SHA-256 of the whole
canonical request (every body field, the endpoint and the Authorization header), never a prefix
or a chosen subset of fields. Only reproducible answers are cached by default.

The one exception is how the answer is delivered: `stream` and `stream_options` are left out,
so a streamed and a whole answer to the same request share one entry, and either form is
answered from it (devloop.gateway.cache.record). Requests whose two forms carry information
that cannot be converted exactly (logprobs, echo, token ids) keep one entry per form.
"""

from __future__ import annotations

import enum
import hashlib
import json
from typing import Any

# Bump when the key's canonical form or the stored value's format changes: old entries then
# simply stop matching instead of being misread.
# v2: `stream`/`stream_options` left out of the key; the value is a record (record.py).
KEY_VERSION = "v2"
# Delivery, not content: left out of the key.
_DELIVERY_FIELDS = frozenset({"stream", "stream_options"})
# stream_options a replay reproduces; any other (continuous_usage_stats puts running usage on
# every chunk) makes the request uncacheable.
_REPLAYABLE_STREAM_OPTIONS = frozenset({"include_usage"})
# Fields whose streamed and whole answers differ in more than framing (per-token logprobs and
# their offsets, the echoed prompt, token ids placed per chunk): answered only in the form stored.
_FORM_BOUND_FIELDS = ("logprobs", "top_logprobs", "prompt_logprobs", "echo", "return_token_ids",
                      "return_prompt_text")


class CachePolicy(str, enum.Enum):
    """Which requests are cached. DETERMINISTIC is the default and the only one that is never
    observably different from calling the engine."""

    DETERMINISTIC = "deterministic"  # temperature 0 or an explicit seed
    ALL = "all"  # every non-streaming request, sampled ones included
    NONE = "none"  # caching off; the gateway is a plain proxy


def _canonical(value: Any) -> Any:
    """JSON values in a form where equal requests are equal: floats with an integral value become
    ints (a client sending `0` and one sending `0.0` ask for the same thing; vLLM's validation
    treats them alike), everything else is kept exactly. Key order is handled by sort_keys."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def cache_key(endpoint: str, request: dict[str, Any], authorization: str = "") -> str:
    """The hex SHA-256 of the canonical whole request.

    Every field of the body is part of the key (model, prompt or messages, every sampling
    parameter, tools, response_format, and anything a future vLLM adds): leaving a field out is how
    two different requests end up sharing an answer. The endpoint is part of it (a completion and
    a chat completion are different answers), and so is the Authorization header, so that a cached
    answer is never handed to a caller the engine would have refused. Only `stream` and
    `stream_options` are left out (see the module docstring), unless `is_form_bound`.
    """
    content = {name: value for name, value in request.items() if name not in _DELIVERY_FIELDS}
    identity: dict[str, Any] = {
        "endpoint": endpoint, "authorization": authorization, "request": _canonical(content)
    }
    if is_form_bound(request):
        identity["form"] = "stream" if request.get("stream") else "json"
    canonical = json.dumps(
        identity,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=True,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def is_cacheable(request: dict[str, Any], policy: CachePolicy = CachePolicy.DETERMINISTIC) -> bool:
    """Whether the answer to this request may be stored and replayed under `policy`.

    Streams are cached like whole answers, unless their stream_options ask for something a
    replay cannot reproduce. Under DETERMINISTIC a request is cached when its temperature is
    explicitly 0 or it carries an integer seed; a missing temperature means the model's default
    (often 0.6-1.0), so it is sampled and not cached.
    """
    if policy is CachePolicy.NONE or not _replayable_stream_options(request):
        return False
    if policy is CachePolicy.ALL:
        return True
    temperature = request.get("temperature")
    seed = request.get("seed")
    greedy = (
        isinstance(temperature, (int, float))
        and not isinstance(temperature, bool)
        and temperature == 0
    )
    seeded = isinstance(seed, int) and not isinstance(seed, bool)
    return greedy or seeded


def is_form_bound(request: dict[str, Any]) -> bool:
    """Whether this request's stream and whole answer cannot be made from each other exactly."""
    return any(request.get(name) not in (None, False) for name in _FORM_BOUND_FIELDS)


def wants_usage_chunk(request: dict[str, Any]) -> bool:
    """Whether a stream of this request ends with vLLM's usage chunk (choices [], usage set)."""
    options = request.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _replayable_stream_options(request: dict[str, Any]) -> bool:
    options = request.get("stream_options")
    if options is None:
        return True
    if not isinstance(options, dict):
        return False  # the engine rejects it; nothing to cache
    return all(
        name in _REPLAYABLE_STREAM_OPTIONS or value in (None, False)
        for name, value in options.items()
    )
