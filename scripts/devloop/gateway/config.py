"""The gateway's settings: one dataclass, read from the environment (the gateway.env ConfigMap),
with command-line flags on top, and checked before anything binds or claims to serve."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from devloop.common.errors import UsageError
from devloop.gateway.cache.key import CachePolicy
from devloop.gateway.cache.store import CacheConfig, check_redis_url
from devloop.gateway.routing.discovery import split_upstreams, unique, upstream_problem
from devloop.gateway.routing.policies import POLICIES


@dataclass
class GatewayConfig:
    """Everything `devloop gateway` can be told. Units are in the names."""

    # The engines: each URL an engine, or a Service whose DNS name lists its replicas (a headless
    # Service); which models each serves is learned from its /v1/models (docs/routing.md).
    upstream_urls: tuple[str, ...] = ("http://localhost:8000",)
    # affinity (least outstanding, but a session or conversation stays on its replica),
    # least-outstanding, or round-robin (the baseline)
    routing_policy: str = "affinity"
    # How long a request waits for a ready replica of its model before a 503 with Retry-After.
    upstream_ready_wait_seconds: float = 30.0
    # Seconds between the background probes of every replica's /health (and DNS).
    upstream_health_interval_seconds: float = 2.0
    redis_url: str | None = "redis://localhost:6379/0"  # "" or None: local tier only
    host: str = "0.0.0.0"
    port: int = 8080
    # /cache/stats and /cache/flush listen here only: the pod's loopback, which no Service,
    # Ingress or other pod reaches; an operator gets there with `kubectl port-forward`. 0: off.
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    cache_ttl_seconds: int = 3600
    cache_max_entries: int = 1024
    cache_max_bytes: int = 64 * 1024 * 1024
    cache_policy: CachePolicy = CachePolicy.DETERMINISTIC
    max_body_bytes: int = 4 * 1024 * 1024  # a long prompt is ~100 KB; larger bodies get 413
    upstream_timeout_seconds: float = 600.0  # longest wait for the engine's next byte
    upstream_connect_timeout_seconds: float = 5.0
    redis_timeout_seconds: float = 0.25
    redis_retry_seconds: float = 1.0
    # On SIGTERM: not ready at once, still accepting for drain_seconds (until the endpoint is
    # gone from every Service), then up to shutdown_timeout_seconds for in-flight requests.
    drain_seconds: float = 5.0
    shutdown_timeout_seconds: float = 30.0

    def cache_config(self) -> CacheConfig:
        return CacheConfig(
            max_entries=self.cache_max_entries,
            max_bytes=self.cache_max_bytes,
            redis_url=self.redis_url or None,
            ttl_seconds=self.cache_ttl_seconds,
            redis_timeout_seconds=self.redis_timeout_seconds,
            redis_retry_seconds=self.redis_retry_seconds,
        )


# Environment variable -> (field, parser). The gateway.env ConfigMap sets most of them.
ENV_FIELDS: dict[str, tuple[str, Any]] = {
    "UPSTREAM_URL": ("upstream_urls", lambda raw: (raw,)),  # the one-engine form, still read
    "UPSTREAM_URLS": ("upstream_urls", lambda raw: tuple(split_upstreams(raw))),  # wins if both
    "ROUTING_POLICY": ("routing_policy", str),
    "UPSTREAM_READY_WAIT_SECONDS": ("upstream_ready_wait_seconds", float),
    "UPSTREAM_HEALTH_INTERVAL_SECONDS": ("upstream_health_interval_seconds", float),
    "UPSTREAM_CONNECT_TIMEOUT_SECONDS": ("upstream_connect_timeout_seconds", float),
    "REDIS_URL": ("redis_url", str),
    "GATEWAY_PORT": ("port", int),
    "GATEWAY_ADMIN_HOST": ("admin_host", str),
    "GATEWAY_ADMIN_PORT": ("admin_port", int),
    "CACHE_TTL_SECONDS": ("cache_ttl_seconds", int),
    "CACHE_MAX_ENTRIES": ("cache_max_entries", int),
    "CACHE_MAX_BYTES": ("cache_max_bytes", int),
    "CACHE_POLICY": ("cache_policy", CachePolicy),
    "MAX_BODY_BYTES": ("max_body_bytes", int),
    "UPSTREAM_TIMEOUT_SECONDS": ("upstream_timeout_seconds", float),
    "REDIS_TIMEOUT_SECONDS": ("redis_timeout_seconds", float),
    "GATEWAY_DRAIN_SECONDS": ("drain_seconds", float),
    "GATEWAY_SHUTDOWN_TIMEOUT": ("shutdown_timeout_seconds", float),
}
# Flags whose value replaces a field of the same name (argparse dest == field name).
FLAG_FIELDS = (
    "routing_policy",
    "upstream_ready_wait_seconds",
    "upstream_health_interval_seconds",
    "upstream_connect_timeout_seconds",
    "redis_url",
    "host",
    "port",
    "admin_host",
    "admin_port",
    "cache_ttl_seconds",
    "cache_max_entries",
    "cache_max_bytes",
    "max_body_bytes",
    "upstream_timeout_seconds",
    "drain_seconds",
    "shutdown_timeout_seconds",
)


def config_from_env(environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """GatewayConfig from environment variables; a malformed value is a UsageError naming it."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, (attr, parse) in ENV_FIELDS.items():
        raw = environ.get(name)
        if raw is None:
            continue
        try:
            values[attr] = parse(raw.strip())
        except ValueError:
            raise UsageError(f"{name}={raw!r} is not a valid {attr.replace('_', ' ')}") from None
    return GatewayConfig(**values)


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """The environment's settings with every flag that was given applied on top, checked."""
    config = config_from_env(environ)
    overrides = {
        name: getattr(args, name) for name in FLAG_FIELDS if getattr(args, name, None) is not None
    }
    if getattr(args, "upstream_urls", None):  # --upstream and --upstream-url, each repeatable
        overrides["upstream_urls"] = tuple(args.upstream_urls)
    if getattr(args, "cache_policy", None):
        overrides["cache_policy"] = CachePolicy(args.cache_policy)
    config = replace(config, **overrides)
    config = replace(config, upstream_urls=unique(config.upstream_urls))
    validate(config)
    return config


def validate(config: GatewayConfig) -> None:
    """Raise a UsageError that names the setting and says what to give, for any value the
    gateway would only fail on later (at bind, at the first request, in a Redis call)."""
    _check_upstreams(config.upstream_urls)
    if config.routing_policy not in POLICIES:
        raise UsageError(
            f"--routing-policy (ROUTING_POLICY) is {config.routing_policy!r}; give one of "
            + ", ".join(POLICIES)
        )
    if config.redis_url:
        check_redis_url(config.redis_url, "--redis-url or REDIS_URL")
    _check_port("--port (GATEWAY_PORT)", config.port, allow_zero=False)
    _check_port("--admin-port (GATEWAY_ADMIN_PORT)", config.admin_port, allow_zero=True)
    for flag, value, minimum in (
        ("--cache-ttl-seconds (CACHE_TTL_SECONDS)", config.cache_ttl_seconds, 0),
        ("--cache-max-entries (CACHE_MAX_ENTRIES)", config.cache_max_entries, 0),
        ("--cache-max-bytes (CACHE_MAX_BYTES)", config.cache_max_bytes, 0),
        ("--max-body-bytes (MAX_BODY_BYTES)", config.max_body_bytes, 1),
        ("--drain-seconds (GATEWAY_DRAIN_SECONDS)", config.drain_seconds, 0),
        ("--shutdown-timeout (GATEWAY_SHUTDOWN_TIMEOUT)", config.shutdown_timeout_seconds, 0),
        ("--upstream-ready-wait-seconds (UPSTREAM_READY_WAIT_SECONDS)",
         config.upstream_ready_wait_seconds, 0),
    ):
        if value < minimum:
            raise UsageError(f"{flag} is {value}; it must be at least {minimum}")
    for flag, value in (
        ("--upstream-timeout-seconds (UPSTREAM_TIMEOUT_SECONDS)", config.upstream_timeout_seconds),
        ("REDIS_TIMEOUT_SECONDS", config.redis_timeout_seconds),
        ("--upstream-connect-timeout-seconds (UPSTREAM_CONNECT_TIMEOUT_SECONDS)",
         config.upstream_connect_timeout_seconds),
        ("--upstream-health-interval-seconds (UPSTREAM_HEALTH_INTERVAL_SECONDS)",
         config.upstream_health_interval_seconds),
    ):
        if not value > 0:
            raise UsageError(f"{flag} is {value}; give a number of seconds above 0")


def _check_upstreams(urls: tuple[str, ...]) -> None:
    if not urls:
        raise UsageError("no engine given: --upstream URL (or UPSTREAM_URLS), e.g. "
                         "http://localhost:8000")
    for url in urls:
        problem = upstream_problem(url)
        if problem:
            raise UsageError(
                f"{problem} (--upstream or UPSTREAM_URLS, e.g. http://localhost:8000)"
            )


def _check_port(flag: str, port: int, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        off = " (0 turns it off)" if allow_zero else ""
        raise UsageError(f"{flag} is {port}; give a port from {low} to 65535{off}")
