"""How one replica is chosen among the ready replicas of a model: plain functions, each tested
alone (tests/unit/gateway/routing/).

- `least_outstanding`: the replica with the fewest requests in flight (ties: the one that served
  fewer, so an idle pool alternates). The default spread.
- `round_robin`: each in turn, whatever their load (the baseline the affinity is measured against).
- Affinity: a request that carries a session key, or continues a conversation the gateway has
  seen, goes where that session or conversation went before, as long as that replica is ready, so
  that vLLM's prefix cache holds its earlier turns. `affinity_key` says what the request's key is;
  `AffinityTable` remembers key -> replica URL, bounded, least recently used first out.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from devloop.gateway.routing.endpoints import Endpoint

SESSION_HEADER = "X-Session-ID"
# A completions prompt's affinity prefix: 64 characters, about 16 tokens, one vLLM KV block. A
# conversation sent as one growing prompt keeps its first turn's start; two prompts that share it
# share at least that block in the prefix cache.
PROMPT_PREFIX_CHARS = 64
POLICIES = ("affinity", "least-outstanding", "round-robin")


def least_outstanding(endpoints: Sequence[Endpoint]) -> Endpoint:
    return min(endpoints, key=lambda e: (e.outstanding, e.served))


def round_robin(endpoints: Sequence[Endpoint], turn: int) -> Endpoint:
    return endpoints[turn % len(endpoints)]


def affinity_key(body: Mapping[str, Any] | None, headers: Mapping[str, str]) -> str | None:
    """What keeps a request with others: the session header, else the body's `user`, else the
    conversation's start (chat: every message up to and including the first user message, the
    same in each later turn; completions: the prompt's first PROMPT_PREFIX_CHARS characters).
    None when the request has none of them (it is spread by load alone)."""
    session = headers.get(SESSION_HEADER)
    if session:
        return "session:" + session
    if not isinstance(body, Mapping):
        return None
    model = body.get("model")
    user = body.get("user")
    if isinstance(user, str) and user:
        return _digest("user", model, user)
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        opening = []
        for message in messages:
            opening.append(message)
            if isinstance(message, Mapping) and message.get("role") == "user":
                break
        return _digest("chat", model, opening)
    prompt = body.get("prompt")
    if isinstance(prompt, str) and prompt:
        return _digest("prompt", model, prompt[:PROMPT_PREFIX_CHARS])
    return None


def _digest(kind: str, model: Any, value: Any) -> str | None:
    try:
        text = json.dumps([model, value], sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None  # not JSON-able as given: the engine rejects it anyway
    return kind + ":" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class AffinityTable:
    """key -> the URL of the replica its requests went to; at most `capacity` keys."""

    def __init__(self, capacity: int = 65536) -> None:
        self.capacity = capacity
        self._urls: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._urls)

    def lookup(self, key: str, endpoints: Sequence[Endpoint]) -> Endpoint | None:
        """The replica `key` went to, when it is among `endpoints` (ready, serving the model)."""
        url = self._urls.get(key)
        if url is None:
            return None
        self._urls.move_to_end(key)
        return next((e for e in endpoints if e.url == url), None)

    def remember(self, key: str, endpoint: Endpoint) -> None:
        self._urls[key] = endpoint.url
        self._urls.move_to_end(key)
        while len(self._urls) > self.capacity:
            self._urls.popitem(last=False)


def choose(
    policy: str,
    endpoints: Sequence[Endpoint],
    key: str | None,
    table: AffinityTable,
    turn: int,
) -> Endpoint:
    """The replica for one request among `endpoints` (non-empty: ready, serving its model)."""
    if policy == "round-robin":
        return round_robin(endpoints, turn)
    if policy == "affinity" and key is not None:
        endpoint = table.lookup(key, endpoints)
        if endpoint is None:
            endpoint = least_outstanding(endpoints)
            table.remember(key, endpoint)
        return endpoint
    return least_outstanding(endpoints)
