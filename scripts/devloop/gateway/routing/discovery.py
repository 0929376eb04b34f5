"""Finding the replicas: the configured upstream list, a Service's pods from DNS, an engine's
models from its /v1/models.

Replicas behind a Kubernetes Service are found through a headless Service (`clusterIP: None`):
its DNS name resolves to the IP of every ready pod, and a pod leaves the answer as soon as it is
not ready or terminating (docs/routing.md says why this and not the EndpointSlice API). Every
name is resolved each refresh and each address is a replica of its own (a ClusterIP Service is one
address; a one-pod headless Service changes address when its pod is replaced, and the old pod's
connections retire with it); an IP literal is itself; an https:// upstream is never expanded (its
certificate names the host, not pod IPs).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any

# yarl is imported inside the functions: the gateway's settings (devloop.gateway.config, which
# `devloop --help` imports) use this module, and the CLI's start stays light.
_SEPARATORS = re.compile(r"[\s,]+")


def split_upstreams(raw: str) -> list[str]:
    """UPSTREAM_URLS as written in a ConfigMap: URLs separated by commas and/or whitespace."""
    return [item for item in _SEPARATORS.split(raw.strip()) if item]


def unique(urls: Iterable[str]) -> tuple[str, ...]:
    """The URLs without trailing slashes, each once, in their order."""
    return tuple(dict.fromkeys(url.rstrip("/") for url in urls))


def upstream_problem(url: str) -> str | None:
    """Why `url` cannot be an upstream, or None when it can."""
    from yarl import URL

    try:
        parsed = URL(url)
        ok = parsed.scheme in ("http", "https") and bool(parsed.host) and parsed.port is not None
    except (ValueError, TypeError):
        ok = False
    if not ok:
        return f"upstream URL {url!r} is not an http:// or https:// URL with a host"
    if parsed.path not in ("", "/") or parsed.query_string:
        return f"upstream URL {url!r} has a path or query; give the engine's base URL"
    return None


def needs_resolving(url: str) -> bool:
    """Whether `url` names a host that DNS may expand into several replicas."""
    from yarl import URL

    parsed = URL(url)
    if parsed.scheme != "http":
        return False
    try:
        ipaddress.ip_address(parsed.host or "")
    except ValueError:
        return True
    return False


def replica_urls(url: str, addresses: Iterable[str]) -> list[str]:
    """One base URL per resolved address (sorted, so the order is stable between refreshes);
    the URL itself when the name resolved to none."""
    unique_addresses = sorted(set(addresses), key=ipaddress.ip_address)
    if not unique_addresses:
        return [url]
    from yarl import URL

    parsed = URL(url)
    return [str(parsed.with_host(address)).rstrip("/") for address in unique_addresses]


async def resolve_replicas(url: str) -> list[str] | None:
    """The replicas `url` stands for now. IPv4 only: `localhost` resolving to 127.0.0.1 and ::1
    is one server, not two. None when DNS fails (keep what was known: a resolver hiccup must not
    empty the pool)."""
    from yarl import URL

    if not needs_resolving(url):
        return [url]
    parsed = URL(url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parsed.host, parsed.port, family=socket.AF_INET, type=socket.SOCK_STREAM
        )
    except OSError:
        return None
    return replica_urls(url, (info[4][0] for info in infos))


def models_from_listing(payload: Any) -> dict[str, dict[str, Any]]:
    """{id: entry} from an OpenAI /v1/models answer; ValueError when it is not one."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        # ValueError, as for a body that is not JSON: the caller's one "not a listing" case.
        raise ValueError("the /v1/models answer has no `data` list")  # noqa: TRY004
    models = {}
    for entry in data:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            models[entry["id"]] = entry
    return models
