"""`devloop gateway`: its flags, and how it starts (one process, or a `--reload` supervisor)."""

from __future__ import annotations

import argparse

from devloop.common import logs
from devloop.gateway import sockets
from devloop.gateway.cache.key import CachePolicy
from devloop.gateway.config import config_from_args


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="run the caching OpenAI-compatible proxy in front of vLLM",
        description="Serve /v1/completions, /v1/chat/completions (streaming and not), /v1/models, "
        "/health, /ready and /metrics, answering reproducible requests from a local LRU and "
        "Redis; /cache/stats and /cache/flush on a separate admin port. Flags override the "
        "environment variables named in their help.",
    )
    add = parser.add_argument
    add("--upstream", "--upstream-url", dest="upstream_urls", action="append", metavar="URL",
        help="an engine (vLLM or llama-server), or a headless Service listing replicas; "
        "repeat for several: each request goes to one serving its `model` (UPSTREAM_URLS, "
        "comma- or space-separated, or UPSTREAM_URL; default http://localhost:8000)")
    add("--routing-policy", choices=["affinity", "least-outstanding", "round-robin"],
        help="how replicas of one model share requests: 'affinity' (least outstanding, but a "
        "session or conversation stays on its replica; default), 'least-outstanding', "
        "'round-robin' (ROUTING_POLICY)")
    add("--upstream-ready-wait-seconds", type=float, help="how long a request waits for a "
        "ready engine of its model before 503 (UPSTREAM_READY_WAIT_SECONDS; default 30)")
    add("--upstream-health-interval-seconds", type=float, help="seconds between probes of "
        "each engine's /health (UPSTREAM_HEALTH_INTERVAL_SECONDS; default 2)")
    add("--upstream-connect-timeout-seconds", type=float, help="longest wait to connect to an "
        "engine before trying another (UPSTREAM_CONNECT_TIMEOUT_SECONDS; default 5)")
    add("--redis-url", help="the shared cache tier; '' for local only "
        "(REDIS_URL; default redis://localhost:6379/0)")
    add("--host", help="address the API listens on (default 0.0.0.0)")
    add("--port", type=int, help="port the API listens on (GATEWAY_PORT; default 8080)")
    add("--admin-host", help="address of the admin endpoints /cache/*: keep it a loopback one "
        "(GATEWAY_ADMIN_HOST; default 127.0.0.1)")
    add("--admin-port", type=int, help="port of the admin endpoints, 0 for none "
        "(GATEWAY_ADMIN_PORT; default 8081)")
    add("--cache-ttl-seconds", type=int, help="lifetime in Redis (CACHE_TTL_SECONDS; default 3600)")
    add("--cache-max-entries", type=int,
        help="local tier entries, 0 disables it (CACHE_MAX_ENTRIES; default 1024)")
    add("--cache-max-bytes", type=int, help="local tier bytes (CACHE_MAX_BYTES; default 64 MiB)")
    add("--cache-policy", choices=[p.value for p in CachePolicy],
        help="which requests are cached: 'deterministic' (temperature 0 or a seed; default), "
        "'all' (sampled ones too, replayed), 'none' (CACHE_POLICY)")
    add("--max-body-bytes", type=int,
        help="larger request bodies get 413 (MAX_BODY_BYTES; default 4 MiB)")
    add("--upstream-timeout-seconds", type=float, help="longest wait for the engine's first "
        "byte, and then for each next one, before 504 (UPSTREAM_TIMEOUT_SECONDS; default 600)")
    add("--drain-seconds", type=float, help="after SIGTERM, seconds of not-ready but still "
        "serving, while Kubernetes removes the endpoint (GATEWAY_DRAIN_SECONDS; default 5)")
    add("--shutdown-timeout", dest="shutdown_timeout_seconds", type=float,
        help="then, seconds in-flight requests get to finish (GATEWAY_SHUTDOWN_TIMEOUT; "
        "default 30)")
    add("--reload", action="store_true", help="serve new code when the package's Python files "
        "change, without closing the port (the dev loop's live update)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Every setting is checked, and the sockets bound, before anything says it serves: a bad
    # value or a taken port is one line and exit code 2 (devloop.common.errors.UsageError).
    config = config_from_args(args)
    logs.configure_logging()
    inherited = sockets.inherited()
    if inherited is None and args.reload:
        from devloop.gateway.supervisor import supervise

        return supervise(list(args.argv), config)
    listeners = inherited or sockets.bind_all(
        config.host, config.port, config.admin_host, config.admin_port
    )
    from devloop.gateway.server import serve

    return serve(config, listeners)
