"""`devloop cache`: look into and empty the response cache.

    devloop cache stats [--redis-url URL] [--admin-url URL]     counters, sizes, Redis memory
    devloop cache flush [--redis-url URL] [--admin-url URL]     drop every cached answer
    devloop cache get --request FILE [--endpoint PATH]          the stored answer for a request
    devloop cache get --key HEX                                 ... or for a key
    devloop cache bench --upstream-url URL                      hit/miss latency and throughput

The local tier lives inside each gateway process, so it is reached through the gateway's admin
port (`--admin-url`, its /cache/stats and /cache/flush); the shared tier is read from Redis
directly. The admin port listens on the pod's loopback only (no Service or Ingress reaches it):

    kubectl -n vllm-dev port-forward deploy/llm-gateway 8081:8081
    devloop cache stats --admin-url http://localhost:8081
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from devloop.common.errors import DevloopError, UsageError
from devloop.gateway.cache.key import cache_key
from devloop.gateway.cache.store import (
    REDIS_KEY_PREFIX,
    check_redis_url,
    flush_redis,
    make_redis_client,
)


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="inspect, flush or benchmark the response cache",
        description="Inspect and flush the gateway's response cache (Redis tier directly, local "
        "tier through a running gateway), or benchmark it.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--redis-url",
            default=os.environ.get("REDIS_URL", "redis://localhost:6379/0"),
            help="the Redis tier (REDIS_URL; default redis://localhost:6379/0); '' to skip",
        )
        sub.add_argument(
            "--admin-url",
            default=os.environ.get("GATEWAY_ADMIN_URL"),
            help="a running gateway's admin port, for its local tier (GATEWAY_ADMIN_URL; e.g. "
            "http://localhost:8081 after `kubectl port-forward deploy/llm-gateway 8081:8081`)",
        )

    stats = actions.add_parser("stats", help="print counters and sizes as JSON")
    common(stats)
    stats.set_defaults(handler=run_stats)

    flush = actions.add_parser("flush", help="delete every cached answer (only this cache's keys)")
    common(flush)
    flush.set_defaults(handler=run_flush)

    get = actions.add_parser(
        "get", help="print the cached entry (the answer and the form it arrived in) for a "
        "request or key; exit 1 if none"
    )
    common(get)
    which = get.add_mutually_exclusive_group(required=True)
    which.add_argument("--key", help="a cache key (64 hex digits)")
    which.add_argument("--request", help="a JSON request body file ('-' for stdin)")
    get.add_argument(
        "--endpoint",
        default="/v1/completions",
        help="the path the request is sent to (default /v1/completions)",
    )
    get.add_argument(
        "--authorization",
        default="",
        help="the Authorization header the request is sent with, if any (it is part of the key)",
    )
    get.add_argument("--key-only", action="store_true", help="print the key and stop")
    get.set_defaults(handler=run_get)

    from devloop.gateway.cache import bench

    bench_parser = actions.add_parser(
        "bench",
        help="measure miss overhead and hit latency/throughput",
        description=bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(handler=bench.run)


def _redis_call(url: str, action: Any) -> Any:
    """Run `action(client)` against Redis; a connection failure is a DevloopError saying so."""
    import redis.exceptions

    check_redis_url(url, "--redis-url or REDIS_URL")

    async def go() -> Any:
        client = make_redis_client(url, timeout_seconds=2.0)
        try:
            return await action(client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(go())
    except redis.exceptions.RedisError as error:
        raise DevloopError(
            f"cannot use Redis at {url}: {error}; is it running? (--redis-url)"
        ) from None


def _gateway_call(url: str, method: str, path: str) -> Any:
    import requests

    try:
        response = requests.request(method, url.rstrip("/") + path, timeout=5)
    except requests.RequestException as error:
        raise DevloopError(
            f"cannot reach the gateway's admin port at {url}: {error}; is it running, and "
            "port-forwarded? (`kubectl port-forward deploy/llm-gateway 8081:8081`, --admin-url)"
        ) from None
    if response.status_code == 404:
        raise DevloopError(
            f"{url} has no {path}: is it the gateway's API port? The cache's admin endpoints "
            "are on its admin port (GATEWAY_ADMIN_PORT, default 8081; --admin-url)"
        )
    try:
        response.raise_for_status()
        return response.json()
    except (requests.RequestException, ValueError) as error:
        raise DevloopError(f"the gateway at {url} answered {path} badly: {error}") from None


def run_stats(args: argparse.Namespace) -> int:
    result: dict[str, Any] = {}
    if args.redis_url:

        async def redis_stats(client: Any) -> dict[str, Any]:
            keys = 0
            async for _ in client.scan_iter(match=REDIS_KEY_PREFIX + "*", count=1000):
                keys += 1
            memory = await client.info("memory")
            stats = await client.info("stats")
            return {
                "url": args.redis_url,
                "keys": keys,
                "used_memory_bytes": memory.get("used_memory"),
                "maxmemory_bytes": memory.get("maxmemory"),
                "maxmemory_policy": memory.get("maxmemory_policy"),
                "evicted_keys": stats.get("evicted_keys"),
                "expired_keys": stats.get("expired_keys"),
            }

        result["redis"] = _redis_call(args.redis_url, redis_stats)
    if args.admin_url:
        result["gateway"] = _gateway_call(args.admin_url, "GET", "/cache/stats")
    if not result:
        raise UsageError("nothing to ask: give --redis-url or --admin-url")
    print(json.dumps(result, indent=2))
    return 0


def run_flush(args: argparse.Namespace) -> int:
    result: dict[str, Any] = {}
    if args.admin_url:
        # The gateway flushes its local tier and, through its own client, Redis.
        result["gateway"] = _gateway_call(args.admin_url, "POST", "/cache/flush")
    if args.redis_url:
        result["redis_keys_deleted"] = _redis_call(args.redis_url, flush_redis)
    if not result:
        raise UsageError("nothing to flush: give --redis-url or --admin-url")
    print(json.dumps(result, indent=2))
    return 0


def run_get(args: argparse.Namespace) -> int:
    if args.key:
        key = args.key.strip().lower()
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise UsageError(f"--key {args.key!r} is not a cache key (64 hex digits)")
    else:
        try:
            text = (
                sys.stdin.read()
                if args.request == "-"
                else Path(args.request).read_text(encoding="utf-8")
            )
            body = json.loads(text)
        except (OSError, ValueError) as error:
            raise UsageError(f"cannot read a JSON request from {args.request}: {error}") from None
        if not isinstance(body, dict):
            raise UsageError("the request must be a JSON object (the body sent to the endpoint)")
        key = cache_key(args.endpoint, body, args.authorization)
    if args.key_only:
        print(key)
        return 0
    if not args.redis_url:
        raise UsageError("get reads the Redis tier: give --redis-url")
    value = _redis_call(args.redis_url, lambda client: client.get(REDIS_KEY_PREFIX + key))
    if value is None:
        print(f"no cached answer for key {key}", file=sys.stderr)
        return 1
    sys.stdout.write(value.decode("utf-8", "replace") + "\n")
    return 0
