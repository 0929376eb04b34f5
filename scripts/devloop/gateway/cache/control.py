"""The request's `Cache-Control` (RFC 9111 section 5.2.1), as the gateway's cache obeys it.

    no-cache      look nothing up; ask the engine; store its answer (a forced refresh)
    no-store      look nothing up and store nothing (the answer is not kept anywhere)
    max-age=N     accept a stored answer at most N seconds old (max-age=0 is no-cache)

`Pragma: no-cache` counts as `Cache-Control: no-cache` when there is no Cache-Control header
(RFC 9111 section 5.4). Other directives (max-stale, min-fresh, only-if-cached...) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestCacheControl:
    lookup: bool = True  # may a stored answer be used
    store: bool = True  # may the engine's answer be stored
    max_age_seconds: float | None = None  # the oldest stored answer accepted; None: any


def parse_request_cache_control(
    cache_control: str | None, pragma: str | None = None
) -> RequestCacheControl:
    if cache_control is None:
        if pragma and "no-cache" in (part.strip().lower() for part in pragma.split(",")):
            return RequestCacheControl(lookup=False)
        return RequestCacheControl()
    lookup, store, max_age = True, True, None
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name == "no-store":
            lookup = store = False
        elif name == "no-cache":
            lookup = False
        elif name == "max-age":
            try:
                max_age = max(0, int(value.strip().strip('"')))
            except ValueError:
                continue  # a malformed max-age is ignored, as RFC 9111 4.2.1 asks of caches
            if max_age == 0:
                lookup = False
    return RequestCacheControl(lookup, store, max_age)
