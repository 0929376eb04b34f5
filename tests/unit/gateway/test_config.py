"""The gateway's settings: the environment (the gateway.env ConfigMap), with flags on top."""

from __future__ import annotations

from pathlib import Path

import pytest

from devloop.cli import build_parser
from devloop.common.errors import UsageError
from devloop.gateway import config_from_args, config_from_env
from devloop.gateway.cache.key import CachePolicy
from devloop.gateway.config import ENV_FIELDS
from devloop.manifests.kustomize import project_root

GATEWAY_ENV = project_root(Path(__file__).parent) / "kustomize" / "components" / "cache" / "gateway.env"


def _env_file() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in GATEWAY_ENV.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {key: value for key, value in pairs}


def test_every_setting_in_the_cache_components_configmap_is_understood() -> None:
    env = _env_file()
    config = config_from_env(env)
    assert config.upstream_urls == tuple(env["UPSTREAM_URLS"].split())
    assert config.routing_policy == env["ROUTING_POLICY"]
    assert config.upstream_ready_wait_seconds == float(env["UPSTREAM_READY_WAIT_SECONDS"])
    assert config.redis_url == env["REDIS_URL"]
    assert config.port == int(env["GATEWAY_PORT"])
    assert config.cache_ttl_seconds == int(env["CACHE_TTL_SECONDS"])
    assert config.cache_max_entries == int(env["CACHE_MAX_ENTRIES"])
    assert config.cache_max_bytes == int(env["CACHE_MAX_BYTES"])
    assert config.admin_host == env["GATEWAY_ADMIN_HOST"]
    assert config.admin_port == int(env["GATEWAY_ADMIN_PORT"])
    assert config.drain_seconds == float(env["GATEWAY_DRAIN_SECONDS"])
    assert config.shutdown_timeout_seconds == float(env["GATEWAY_SHUTDOWN_TIMEOUT"])
    assert set(env) <= set(ENV_FIELDS), f"settings the gateway ignores: {set(env) - set(ENV_FIELDS)}"


def test_flags_override_the_environment() -> None:
    args = build_parser().parse_args(
        ["gateway", "--port", "9999", "--cache-policy", "all", "--redis-url", ""]
    )
    config = config_from_args(
        args, {"GATEWAY_PORT": "8080", "REDIS_URL": "redis://x:6379/0", "CACHE_MAX_ENTRIES": "7"}
    )
    assert (config.port, config.cache_policy, config.redis_url, config.cache_max_entries) == (
        9999,
        CachePolicy.ALL,
        "",
        7,
    )


def test_a_malformed_setting_is_named_in_the_error() -> None:
    with pytest.raises(UsageError, match="CACHE_MAX_BYTES"):
        config_from_env({"CACHE_MAX_BYTES": "64MiB"})
    with pytest.raises(UsageError, match="CACHE_POLICY"):
        config_from_env({"CACHE_POLICY": "sometimes"})
