"""`devloop gateway`: a caching OpenAI-compatible reverse proxy in front of the vLLM engine.

    client -> gateway (local LRU, then Redis) -> vLLM

Where things are:

    command.py      the CLI: flags, and whether to run one worker or the --reload supervisor
    config.py       GatewayConfig: environment (gateway.env) + flags, validated up front
    sockets.py      binding the listening sockets (clear errors) and handing them to workers
    server.py       one worker: the apps on their sockets, SIGTERM drain, SIGUSR1 hand-over
    supervisor.py   --reload: keeps the sockets, forks a worker per code change
    app.py          the API and admin aiohttp apps: routes, request id, access log
    state.py        what the handlers share (cache, engine client, metrics, shutdown flags)
    completions.py  the cached endpoints: Cache-Control, lookup, single flight, store
    replay.py       hits in either form (fresh id), and streams recorded into the cache
    routes.py       /health, /ready, /metrics, the /cache/* refusal, the catch-all proxy
    admin.py        /cache/stats and /cache/flush, on the admin port only
    proxy.py        the engine's HTTP client: whole answers, relayed streams, failures
    errors.py       OpenAI-shaped error bodies for every error
    metrics.py      prometheus_client instruments and the cache's collector
    cache/          the response cache (key, LRU, Redis tier) and `devloop cache`

This package's __init__ stays light: `devloop --help` imports it; aiohttp and the rest are
imported only when the gateway runs.
"""

from devloop.gateway.command import add_subcommand
from devloop.gateway.config import GatewayConfig, config_from_args, config_from_env

__all__ = ["GatewayConfig", "add_subcommand", "config_from_args", "config_from_env"]
