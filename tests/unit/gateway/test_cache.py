"""The cache key, the cacheability rule and the local LRU tier (no servers needed)."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from devloop.gateway.cache.key import CachePolicy, cache_key, is_cacheable, is_form_bound
from devloop.gateway.cache.lru import LRUCache
from devloop.gateway.cache.store import CacheConfig, ResponseCache

BASE = {"model": "tiny", "prompt": "hello", "temperature": 0, "max_tokens": 16}


def test_prompts_sharing_a_500_character_prefix_get_different_keys() -> None:
    prefix = "x" * 500
    first = cache_key("/v1/completions", {**BASE, "prompt": prefix + " first question"})
    second = cache_key("/v1/completions", {**BASE, "prompt": prefix + " second question"})
    assert first != second


def test_parameter_order_and_json_formatting_do_not_change_the_key() -> None:
    text = (
        '{"model": "tiny", "prompt": "hello", "temperature": 0, "max_tokens": 16, "stop": ["\\n"]}'
    )
    reordered = (
        '{"stop":["\\n"],"max_tokens":16,\n  "temperature":0.0,"prompt":"hello","model":"tiny"}'
    )
    assert cache_key("/v1/completions", json.loads(text)) == cache_key(
        "/v1/completions", json.loads(reordered)
    )


def test_every_sampling_parameter_is_part_of_the_key() -> None:
    key = cache_key("/v1/completions", BASE)
    for name, value in [
        ("top_p", 0.9),
        ("top_k", 5),
        ("stop", ["."]),
        ("seed", 1),
        ("n", 2),
        ("presence_penalty", 0.5),
        ("frequency_penalty", 0.5),
        ("logprobs", 2),
        ("response_format", {"type": "json_object"}),
        ("max_tokens", 17),
        ("model", "other"),
        ("temperature", 0.5),
        ("some_future_field", True),
    ]:
        assert cache_key("/v1/completions", {**BASE, name: value}) != key, name


def test_messages_tools_endpoint_and_authorization_are_part_of_the_key() -> None:
    chat = {"model": "tiny", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}
    key = cache_key("/v1/chat/completions", chat)
    assert (
        cache_key(
            "/v1/chat/completions",
            {
                **chat,
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                ],
            },
        )
        != key
    )
    assert (
        cache_key(
            "/v1/chat/completions",
            {**chat, "tools": [{"type": "function", "function": {"name": "f"}}]},
        )
        != key
    )
    assert cache_key("/v1/completions", chat) != key
    assert cache_key("/v1/chat/completions", chat, "Bearer a") != cache_key(
        "/v1/chat/completions", chat, "Bearer b"
    )


def test_a_boolean_is_not_confused_with_a_number() -> None:
    assert cache_key("/v1/completions", {**BASE, "logprobs": True}) != cache_key(
        "/v1/completions", {**BASE, "logprobs": 1}
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
requests_strategy = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


def _semantic(value):
    """What the key promises to distinguish: JSON values, with 1.0 == 1 but True != 1."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("number", int(value) if float(value).is_integer() else value)
    if isinstance(value, list):
        return ("list", tuple(_semantic(item) for item in value))
    return ("dict", frozenset((key, _semantic(item)) for key, item in value.items()))


def _answered(request: dict):
    """What the key promises to tell apart: the request but for how its answer is delivered
    (`stream`, `stream_options`), which matters only where the two forms differ."""
    content = {key: value for key, value in request.items()
               if key not in ("stream", "stream_options")}
    form = bool(request.get("stream")) if is_form_bound(request) else None
    return _semantic(content), form


@settings(max_examples=400, deadline=None)
@given(requests_strategy, requests_strategy)
def test_distinct_requests_never_share_a_key(first: dict, second: dict) -> None:
    if _answered(first) != _answered(second):
        assert cache_key("/v1/completions", first) != cache_key("/v1/completions", second)
    else:
        assert cache_key("/v1/completions", first) == cache_key("/v1/completions", second)


@settings(max_examples=200, deadline=None)
@given(requests_strategy)
def test_the_key_survives_a_json_round_trip_with_shuffled_keys(request: dict) -> None:
    shuffled = json.loads(json.dumps(dict(reversed(list(request.items()))), indent=3))
    assert cache_key("/v1/completions", shuffled) == cache_key("/v1/completions", request)


def test_only_reproducible_requests_are_cacheable_by_default() -> None:
    assert is_cacheable({"prompt": "p", "temperature": 0})
    assert is_cacheable({"prompt": "p", "temperature": 0.0})
    assert is_cacheable({"prompt": "p", "temperature": 0.8, "seed": 7})
    assert not is_cacheable({"prompt": "p"})  # the model's default temperature samples
    assert not is_cacheable({"prompt": "p", "temperature": 0.7})
    assert not is_cacheable({"prompt": "p", "temperature": 0.7, "seed": None})
    assert not is_cacheable({"prompt": "p", "temperature": False})
    assert is_cacheable({"prompt": "p", "temperature": 0, "stream": True})
    assert is_cacheable({"prompt": "p", "temperature": 0, "stream": True,
                         "stream_options": {"include_usage": True}})
    # running usage on every chunk is something a replay does not reproduce
    assert not is_cacheable({"prompt": "p", "temperature": 0, "stream": True,
                             "stream_options": {"continuous_usage_stats": True}})


def test_the_policy_setting_widens_or_disables_caching() -> None:
    assert is_cacheable({"prompt": "p", "temperature": 0.7}, CachePolicy.ALL)
    assert is_cacheable({"prompt": "p", "temperature": 0.7, "stream": True}, CachePolicy.ALL)
    assert not is_cacheable({"prompt": "p", "temperature": 0}, CachePolicy.NONE)


def test_lru_evicts_the_least_recently_used_not_the_oldest_inserted() -> None:
    lru = LRUCache(max_entries=3, max_bytes=1 << 20)
    for key in "abc":
        lru.set(key, key.encode())
    assert lru.get("a") == b"a"  # a is now the most recently used; b is the least
    lru.set("d", b"d")
    assert lru.keys() == ["c", "a", "d"]
    assert "b" not in lru
    assert lru.evictions == 1


def test_lru_keeps_total_bytes_within_its_bound() -> None:
    lru = LRUCache(max_entries=100, max_bytes=1000)
    for index in range(10):
        lru.set(f"k{index}", bytes(300))
        assert lru.bytes <= 1000
    assert lru.keys() == ["k7", "k8", "k9"]
    assert lru.bytes == 900


def test_lru_does_not_store_a_value_larger_than_its_byte_bound() -> None:
    lru = LRUCache(max_entries=10, max_bytes=100)
    lru.set("small", bytes(10))
    assert lru.set("huge", bytes(101)) is False
    assert lru.keys() == ["small"]


def test_lru_replacing_a_value_updates_its_size() -> None:
    lru = LRUCache(max_entries=10, max_bytes=100)
    lru.set("k", bytes(60))
    lru.set("k", bytes(10))
    assert lru.bytes == 10


def test_local_only_cache_counts_hits_and_misses() -> None:
    async def scenario() -> dict:
        cache = ResponseCache(CacheConfig(max_entries=2, max_bytes=1000))
        assert await cache.get("k") is None
        cache.set_in_background("k", b"v")
        assert await cache.get("k") == b"v"
        for key in ("x", "y"):
            cache.set_in_background(key, b"v")
        await cache.aclose()
        return cache.snapshot()

    stats = asyncio.run(scenario())
    assert (stats["requests"], stats["hits_local"], stats["misses"], stats["evictions"]) == (
        2,
        1,
        1,
        1,
    )
    assert stats["redis"] == "disabled"
